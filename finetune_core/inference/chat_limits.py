"""What one chat turn may ask of a shared server, checked before any work starts.

A public deployment shares one model and one generation lane between all its
visitors: a 1 MB prompt once held that lane for minutes and grew the process
to 15 GB. So before a turn is queued:

* `clean_text` makes text encodable (a lone surrogate such as "\\ud800" from
  an API client cannot be written as UTF-8 and used to drop the connection);
* `check_chat_request` checks the message and the system prompt in tokens
  (a character count first: a 1 MB string is refused without tokenizing it)
  and the answer length, against `limits()`;
* `GenerationSlots` counts the generations each visitor has queued or running
  (`chats_per_user`); one object per app, held by the app's context.

    from finetune_core.inference.chat_limits import check_chat_request
    message, system = check_chat_request("Hello!", "", 128)  # raises LimitError when over
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

from finetune_core.errors import InputError
from finetune_core.limits import LimitError, limits

# No tokenizer we ship averages more than a few characters per token; 8 leaves
# room for long words and runs of spaces, so the character pre-check only
# refuses text whose token count is certainly over the limit.
CHARS_PER_TOKEN = 8
# A ticket whose turn never started (the page closed between the send and the
# stream, or an API client never asked for the stream) stops counting after
# this long, so a lost turn cannot lock its visitor out for good.
UNCLAIMED_TTL_S = 600.0


# -- text -----------------------------------------------------------------------------
def clean_text(text) -> str:
    """`text` as a str that encodes as UTF-8: lone surrogates become U+FFFD.

    >>> clean_text("a\\ud800b")
    'a\\ufffdb'
    >>> clean_text("\\ud83d\\ude00") == "\\U0001F600"  # a split pair is joined again
    True
    """
    text = "" if text is None else str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # UTF-16 with surrogatepass re-pairs split surrogate pairs; only lone ones are replaced.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class TokenCounter:
    """Counts tokens with its own copy of a tokenizer. A fast tokenizer shared with a
    generation thread fails ("Already borrowed") when the two use different padding
    at the same moment, so counting never touches the generating copy."""

    def __init__(self, tokenizer):
        from finetune_core.data.stats import ensure_chat_template

        self.tokenizer = copy.deepcopy(tokenizer)
        ensure_chat_template(self.tokenizer)
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        """Tokens of `text` alone (no special tokens, no chat template); safe to call from several threads."""
        with self._lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_messages(self, messages: list[dict]) -> int:
        """Tokens of the prompt these messages render to (chat template included)."""
        with self._lock:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def check_text(text, name: str, what: str, counter: TokenCounter | None = None) -> str:
    """`text` cleaned, after checking it against the token limit `name` ("Your message").
    Characters are checked first; tokens only when a counter is given."""
    lim = limits()
    text = clean_text(text)
    cap = getattr(lim, name)
    if len(text) > cap * CHARS_PER_TOKEN:
        raise LimitError(f"{what} is {len(text):,} characters; this server allows {cap * CHARS_PER_TOKEN:,} "
                         f"({cap:,} tokens; setting {lim.setting(name)}).")
    if counter is not None:
        tokens = counter.count(text)
        if tokens > cap:
            raise LimitError(f"{what} is {tokens:,} tokens; this server allows {cap:,} "
                             f"(setting {lim.setting(name)}).")
    return text


def check_new_tokens(max_new_tokens) -> int:
    """The answer length asked for, as an int within 1..limits().max_new_tokens."""
    try:
        value = int(max_new_tokens)
    except (TypeError, ValueError, OverflowError):
        raise InputError("Max new tokens must be a whole number.") from None
    if value < 1:
        raise InputError(f"Max new tokens must be at least 1 (got {value}).")
    limits().check("max_new_tokens", value, "Max new tokens")
    return value


def check_chat_request(message, system, max_new_tokens, counter: TokenCounter | None = None
                       ) -> tuple[str, str]:
    """(message, system prompt) cleaned, after checking both and the answer length.
    Raises LimitError (a ValueError) naming the field, its size and the limit."""
    message = check_text(message, "chat_message_tokens", "Your message", counter)
    system = check_text(system, "system_prompt_tokens", "The system prompt", counter)
    if max_new_tokens is not None:  # None: the caller checks the answer length later
        check_new_tokens(max_new_tokens)
    return message, system


# -- generations per visitor ------------------------------------------------------------
@dataclass(eq=False)
class Ticket:
    """One admitted turn: issued when the turn is sent, claimed when it starts
    generating, released when it ends (or is stopped before it starts). It counts
    against each of its keys (e.g. the visitor and the page session)."""

    keys: tuple[str, ...]
    slots: "GenerationSlots" = field(repr=False)
    model: str = ""  # the model the turn was admitted for: the streaming step may use no other
    issued: float = field(default_factory=time.monotonic)
    claimed: bool = False
    released: bool = False

    def claim(self) -> bool:
        """Mark the turn as started; False when it was released (stopped) meanwhile."""
        return self.slots._claim(self)

    def release(self) -> None:
        """Stop counting this turn (idempotent: finally blocks, Stop and page close may all call it)."""
        self.slots._release(self)


class GenerationSlots:
    """The generations each visitor has queued or running, at most `chats_per_user` per key.
    Keyed by who asks (a user name, an anonymous browser key, a page session), so other
    visitors are never affected by one visitor's turns."""

    def __init__(self, unclaimed_ttl: float = UNCLAIMED_TTL_S):
        self.unclaimed_ttl = unclaimed_ttl
        self._lock = threading.Lock()
        self._held: dict[str, list[Ticket]] = {}

    def acquire(self, *keys: str) -> Ticket:
        """A ticket for one more turn, counted against every key; LimitError when any
        key already has its share."""
        lim = limits()
        keys = tuple(dict.fromkeys(k for k in keys if k))
        with self._lock:
            for key in keys:
                held = self._live(key)
                if len(held) >= lim.chats_per_user:
                    raise LimitError(f"You already have {len(held)} chat answer(s) running or waiting; this server "
                                     f"allows {lim.chats_per_user:,} at a time "
                                     f"(setting {lim.setting('chats_per_user')}). Wait for it to finish or press Stop.")
            ticket = Ticket(keys, self)
            for key in keys:
                self._held[key] = self._live(key) + [ticket]
            return ticket

    def held(self, key: str) -> int:
        """How many turns `key` has queued or running now (unclaimed tickets past the TTL no longer count)."""
        with self._lock:
            return len(self._live(key))

    def _live(self, key: str) -> list[Ticket]:
        """The tickets of `key` that still count (caller holds the lock)."""
        now = time.monotonic()
        live = [t for t in self._held.get(key, []) if t.claimed or now - t.issued < self.unclaimed_ttl]
        if live:
            self._held[key] = live
        else:
            self._held.pop(key, None)  # no empty lists left behind by visitors who came once
        return live

    def _claim(self, ticket: Ticket) -> bool:
        with self._lock:
            if ticket.released:
                return False
            ticket.claimed = True
            # A turn that waited past the TTL was admitted all the same: it counts again while it runs.
            for key in ticket.keys:
                held = self._held.setdefault(key, [])
                if ticket not in held:
                    held.append(ticket)
            return True

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            ticket.released = True
            for key in ticket.keys:
                held = [t for t in self._held.get(key, []) if t is not ticket]
                if held:
                    self._held[key] = held
                else:
                    self._held.pop(key, None)


__all__ = ["CHARS_PER_TOKEN", "GenerationSlots", "Ticket", "TokenCounter", "check_chat_request",
           "check_new_tokens", "check_text", "clean_text"]
