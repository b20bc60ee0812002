"""Side-by-side chat with two models (base and tuned, or any two sides), blind A/B voting and DPO export.

A `ChatSession` is one browser session's (or one script's) conversation: a
history per pane (base and tuned each continue their own conversation), the
system prompt, the blind-mode flag, which side the tuned model sits on for
each turn, the turn awaiting a vote and the votes cast. Nothing here is
shared between sessions; the model itself is shared read-only
(`InferenceModel`, see generation.py).

    from finetune_core.inference.chat import ChatSession, stream_chat, panes
    session = ChatSession(system_prompt="Be brief.")
    for left, right in stream_chat(model, session, "Hello!", GenSettings()):
        print(left, "|", right)

A run trained on a prompt template (run_prompts.RunTemplate) only knows its
prompts in that wrapping: with `base_template` / `tuned_template` set, each
side's user turn is wrapped in its template as training wrapped the same
text, and `single_turn` answers each message without the earlier turns.

"base" and "tuned" here are the session's side A (left pane) and side B (right
pane): the base model and a run, or any two sides of a comparison
(finetune_core.inference.sides); `side_labels` names them and `models` gives
their model ids for the votes.

Blind mode puts the tuned answer on a random side each turn (the session's own
seeded RNG). A vote ("left", "right", "tie", "both_bad") is mapped back to a
winner ("tuned", "base", "tie", "both_bad"). Given the run, a vote is also
appended to the run's votes.jsonl as it is cast (see votes.py), which the
Chat tab's tally, the report and the export read back. `export_preferences`
writes the decided votes as TRL DPO pairs in conversational form:

    {"prompt": [...messages up to the user turn...],
     "chosen": [{"role": "assistant", "content": ...}],
     "rejected": [{"role": "assistant", "content": ...}]}
"""
from __future__ import annotations

import json
import random
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from finetune_core.errors import InputError
from finetune_core.inference.chat_limits import TokenCounter, check_chat_request
from finetune_core.inference.generation import GenSettings, InferenceModel
from finetune_core.inference.run_prompts import RunTemplate, example_prompts
from finetune_core.inference.votes import append_vote, load_votes, pair_votes
from finetune_core.limits import LimitError, limits
from finetune_core.runs.store import Run

__all__ = ["ChatSession", "stream_chat", "panes", "record_vote", "tally", "export_preferences",
           "example_prompts"]  # example_prompts lives in run_prompts; callers import it from here too
SIDES = ("left", "right")
VOTE_CHOICES = ("left", "right", "tie", "both_bad")
WINNERS = ("tuned", "base", "tie", "both_bad")


@dataclass
class ChatSession:
    """One conversation with both models. Histories hold user/assistant turns only;
    the system prompt is prepended when a prompt is rendered, so editing it
    applies from the next turn."""

    system_prompt: str = ""
    blind: bool = False
    single_turn: bool = False  # each message answered alone: earlier turns are not sent
    base_template: RunTemplate | None = None  # wraps base's user turns (the tuned run's template: a fair test)
    tuned_template: RunTemplate | None = None  # wraps tuned's user turns as its training prompts were
    seed: int | None = None  # None: a fresh random seed, so sessions do not share side patterns
    base_history: list[dict] = field(default_factory=list)
    tuned_history: list[dict] = field(default_factory=list)
    tuned_sides: list[str] = field(default_factory=list)  # per turn: the pane tuned was shown in
    pending: dict | None = None  # the last blind turn, until it is voted on
    votes: list[dict] = field(default_factory=list)
    run: Run | None = field(default=None, compare=False)  # the (newer) run answering: its votes.jsonl gets the votes
    models: dict | None = None  # {"base": side A's model id, "tuned": side B's} (votes.model_ids; None: the run's)
    side_labels: tuple[str, str] = ("Base", "Tuned")  # what the panes call side A and side B
    epoch: int = 0  # bumped by clear(); a stream from an older epoch stops writing
    first_turn: int = 0  # turns before this one no longer fit the context limit and are not sent
    tickets: list = field(default_factory=list, repr=False, compare=False)  # admitted turns not yet started
    cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.rng = random.Random(secrets.randbits(64) if self.seed is None else self.seed)

    @property
    def turns(self) -> int:
        """Turns in the current conversation (since the last clear), including those no longer sent."""
        return len(self.tuned_sides)


# -- turns ----------------------------------------------------------------------
def _with_system(session: ChatSession, history: list[dict], template: RunTemplate | None = None) -> list[dict]:
    """The messages sent for `history` (a whole pane's, ending with a user turn): the system prompt
    (else the template's run's), then the turns from `first_turn`, or the last alone in single-turn mode."""
    system = (session.system_prompt or "").strip() or (template.system_prompt.strip() if template else "")
    head = [{"role": "system", "content": system}] if system else []
    turns = history[2 * session.first_turn:]
    if session.single_turn:
        turns = turns[-1:]  # earlier turns must not leak into this answer
    return head + [dict(m) for m in turns]


def user_turns(session: ChatSession, message: str) -> tuple[dict, dict]:
    """(base, tuned) user turns for `message`: each wrapped in its side's run template when it has one."""
    def turn(template: RunTemplate | None) -> dict:
        return {"role": "user", "content": template.wrap(message) if template else message}

    return turn(session.base_template), turn(session.tuned_template)


def start_turn(session: ChatSession, message: str, tuned: bool = True
               ) -> tuple[list[dict], list[dict] | None]:
    """Open a turn: add the user message (and an empty answer to fill while
    streaming) to each pane. Returns the prompts to send to base and tuned;
    the tuned prompt is None when `tuned` is False (no adapter loaded)."""
    message = (message or "").strip()
    if not message:
        raise InputError("Type a message first.")
    if session.blind and not tuned:
        raise InputError("Blind A/B needs a tuned model: pick a run with an adapter.")
    side = session.rng.choice(SIDES) if session.blind else "right"
    base_user, tuned_user = user_turns(session, message)
    base_messages = _with_system(session, session.base_history + [base_user], session.base_template)
    tuned_messages = (_with_system(session, session.tuned_history + [tuned_user], session.tuned_template)
                      if tuned else None)
    session.pending = None  # a new turn replaces an unvoted one
    session.tuned_sides.append(side)
    session.base_history += [base_user, {"role": "assistant", "content": ""}]
    if tuned:
        session.tuned_history += [tuned_user, {"role": "assistant", "content": ""}]
    else:
        # Keep the panes aligned turn by turn; the note is never sent to a model
        # because a tuned prompt is only built when a tuned model is loaded.
        session.tuned_history += [tuned_user, {"role": "assistant", "content": "(no tuned model selected)"}]
    return base_messages, tuned_messages


def fit_context(session: ChatSession, message: str, counter: TokenCounter) -> int:
    """Leave the oldest turns out of the prompts until this turn's prompt fits
    `chat_context_tokens`; returns how many turns were left out now.

    Trimmed rather than refused: chatting on is what a user of a long conversation
    expects (chat apps forget the oldest turns), while a refusal would force a Clear
    that loses the recent context too. The panes still show every turn, and the
    Chat tab says which turns the models no longer see.
    """
    lim = limits()
    sides = list(zip((session.base_history, session.tuned_history), user_turns(session, message),
                     (session.base_template, session.tuned_template)))
    before = session.first_turn
    while True:
        tokens = max(counter.count_messages(_with_system(session, history + [user], template))
                     for history, user, template in sides)
        if tokens <= lim.chat_context_tokens:
            return session.first_turn - before
        if session.first_turn >= session.turns:  # nothing left to drop: the turn alone is too long
            session.first_turn = before
            raise LimitError(f"Your message with the system prompt is {tokens:,} tokens; this server allows "
                             f"{lim.chat_context_tokens:,} per turn (setting {lim.setting('chat_context_tokens')}).")
        session.first_turn += 1


def update_turn(session: ChatSession, base_text: str | None, tuned_text: str | None) -> None:
    """Show partial answers of the open turn (None leaves that side as it is)."""
    if base_text is not None and session.base_history:
        session.base_history[-1]["content"] = base_text
    if tuned_text is not None and session.tuned_history:
        session.tuned_history[-1]["content"] = tuned_text


def finish_turn(session: ChatSession, base_text: str, tuned_text: str | None) -> None:
    """Close the open turn with the final answers; in blind mode it awaits a vote."""
    base_text = (base_text or "").strip()
    tuned_text = None if tuned_text is None else tuned_text.strip()
    update_turn(session, base_text, tuned_text)
    if session.blind and tuned_text is not None:
        session.pending = {
            "prompt_base": _with_system(session, session.base_history[:-1], session.base_template),
            "prompt_tuned": _with_system(session, session.tuned_history[:-1], session.tuned_template),
            "base": base_text, "tuned": tuned_text, "tuned_side": session.tuned_sides[-1],
        }


def abort_turn(session: ChatSession) -> None:
    """Remove the open turn (after a failed generation) so the histories stay valid."""
    if session.tuned_sides:
        session.tuned_sides.pop()
        del session.base_history[-2:]
        del session.tuned_history[-2:]
    session.pending = None


def panes(session: ChatSession) -> tuple[list[dict], list[dict]]:
    """(left, right) histories to display. Base is left and tuned right, except
    in blind mode where each turn follows that turn's random assignment."""
    left: list[dict] = []
    right: list[dict] = []
    for turn, side in enumerate(session.tuned_sides):
        base = [dict(m) for m in session.base_history[2 * turn:2 * turn + 2]]
        tuned = [dict(m) for m in session.tuned_history[2 * turn:2 * turn + 2]]
        tuned_left = session.blind and side == "left"
        left += tuned if tuned_left else base
        right += base if tuned_left else tuned
    return left, right


def to_sides(session: ChatSession, base_text: str, tuned_text: str) -> tuple[str, str]:
    """Map (base, tuned) texts of the current turn to (left, right)."""
    tuned_left = session.blind and bool(session.tuned_sides) and session.tuned_sides[-1] == "left"
    return (tuned_text, base_text) if tuned_left else (base_text, tuned_text)


def set_blind(session: ChatSession, blind: bool) -> None:
    """Switch blind mode. Leaving it reveals the sides, so an unvoted turn can no longer be voted."""
    session.blind = bool(blind)
    if not session.blind:
        session.pending = None


def arm_cancel(session: ChatSession) -> threading.Event:
    """The cancel event for the next turn: a fresh one when a Stop was pressed earlier (it
    must not cancel this turn), else the current one, which the session's running or
    queued turns share: replacing it would leave Stop unable to reach them."""
    if session.cancel.is_set():
        session.cancel = threading.Event()
    return session.cancel


def stop(session: ChatSession) -> None:
    """Ask the turn in progress (or queued) to stop; what has streamed so far is kept.
    Turns admitted but not started give their visitor's slot back at once."""
    session.cancel.set()
    for ticket in session.tickets:
        if not ticket.claimed:
            ticket.release()
    session.tickets = [t for t in session.tickets if not t.released]


def clear(session: ChatSession) -> None:
    """Forget the conversation (votes are kept: they are the session's result)."""
    session.cancel.set()  # a stream still running for the old conversation stops...
    arm_cancel(session)  # ...and the next turn starts with a clean event
    session.epoch += 1
    session.first_turn = 0
    session.base_history.clear()
    session.tuned_history.clear()
    session.tuned_sides.clear()
    session.pending = None


# -- streaming glue ---------------------------------------------------------------
def stream_chat(model: InferenceModel, session: ChatSession, message: str,
                settings: GenSettings | None = None, cancel: threading.Event | None = None
                ) -> Iterator[tuple[str, str]]:
    """Send `message` to both sides and yield (left_text, right_text) as tokens
    arrive; the session's histories are updated as it goes and the turn is
    closed at the end (also when stopped). Without an adapter only base answers.

    The message, the system prompt and the answer length are checked against
    `limits()` first (LimitError), so every caller (the Chat tab, the CLI,
    scripts) gets the same limits; the oldest turns are left out of the prompt
    when the conversation outgrows `chat_context_tokens` (see fit_context)."""
    cancel = session.cancel if cancel is None else cancel
    settings = settings or GenSettings()
    counter = getattr(model, "counter", None)  # test doubles have none: characters are still checked
    message, session.system_prompt = check_chat_request(message, session.system_prompt,
                                                        settings.max_new_tokens, counter)
    if counter is not None:
        fit_context(session, message.strip(), counter)
    tuned = model.has_tuned
    base_messages, tuned_messages = start_turn(session, message, tuned=tuned)
    epoch = session.epoch
    base_text, tuned_text = "", ("" if tuned else None)
    try:
        for base_text, tuned_text in model.stream_pair(base_messages, tuned_messages, settings, cancel):
            tuned_text = tuned_text if tuned else None
            if session.epoch != epoch:  # cleared meanwhile: stop writing into the new conversation
                cancel.set()
                return
            update_turn(session, base_text.lstrip(), None if tuned_text is None else tuned_text.lstrip())
            yield to_sides(session, base_text.lstrip(), (tuned_text or "").lstrip())
    except GeneratorExit:  # the consumer went away (e.g. the page closed): stop the worker, keep what came
        cancel.set()
        if session.epoch == epoch:
            finish_turn(session, base_text, tuned_text)
        raise
    except BaseException:
        if session.epoch == epoch:
            abort_turn(session)
        raise
    if session.epoch == epoch:
        finish_turn(session, base_text, tuned_text)
        yield to_sides(session, base_text.strip(), (tuned_text or "").strip())


# -- votes ------------------------------------------------------------------------
def record_vote(session: ChatSession, choice: str, run: Run | None = None) -> dict:
    """Vote on the pending blind turn: "left", "right", "tie" or "both_bad".
    Returns the stored vote, whose "winner" is "tuned", "base", "tie" or "both_bad".
    The vote is also appended to the votes.jsonl of `run` (default: the session's
    run, the one whose adapter answered) before it counts, so a vote shown is a
    vote saved; without a run it stays in the session only."""
    if choice not in VOTE_CHOICES:
        raise InputError(f"Unknown vote {choice!r}: expected one of {', '.join(VOTE_CHOICES)}.")
    turn = session.pending
    if turn is None:
        raise InputError("There is no blind answer to vote on: send a message in blind mode first.")
    if choice in SIDES:
        winner = "tuned" if choice == turn["tuned_side"] else "base"
    else:
        winner = choice
    vote = {**turn, "choice": choice, "winner": winner}
    run = run if run is not None else session.run
    if run is not None:
        append_vote(run, vote, session.models)
    session.votes.append(vote)
    session.pending = None
    return vote


def saved_votes(session: ChatSession) -> list[dict]:
    """The votes to count and export: the session's run's votes.jsonl (every session's
    votes on that run, across reloads; with `models`, only those between this pair, seen from
    its sides), or the session's own votes when it has no run."""
    if session.run is None:
        return list(session.votes)
    votes = load_votes(session.run)[0]
    return pair_votes(votes, session.run, session.models) if session.models else votes


def tally(votes: list[dict]) -> dict:
    """Counts per winner and the tuned win rate over decided votes (None before any).

    >>> tally([{"winner": "tuned"}, {"winner": "tuned"}, {"winner": "base"}, {"winner": "tie"}])["tuned_win_rate"]
    0.6666666666666666
    """
    counts = {w: 0 for w in WINNERS}
    for vote in votes:
        counts[vote["winner"]] += 1
    decided = counts["tuned"] + counts["base"]
    return {"votes": len(votes), **counts,
            "tuned_win_rate": counts["tuned"] / decided if decided else None}


def preference_pair(vote: dict) -> dict | None:
    """One vote as a TRL DPO conversational pair; None for ties and both-bad.
    Each side continues its own history, so the prompt is the winner's context:
    the chosen answer was generated from exactly that prompt."""
    if vote["winner"] not in ("tuned", "base"):
        return None
    loser = "base" if vote["winner"] == "tuned" else "tuned"
    return {
        "prompt": vote[f"prompt_{vote['winner']}"],
        "chosen": [{"role": "assistant", "content": vote[vote["winner"]]}],
        "rejected": [{"role": "assistant", "content": vote[loser]}],
    }


def export_preferences(votes: list[dict], path: str | Path) -> int:
    """Write decided votes as JSONL preference pairs; returns how many were written."""
    pairs = [p for p in (preference_pair(v) for v in votes) if p is not None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    return len(pairs)
