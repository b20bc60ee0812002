"""A chat template read as plain turns, and written in Ollama's Go-template syntax.

    parts = chat_parts(tokenizer)       # None when the template cannot be read this way
    parts.render(messages)              # the prompt text, as apply_chat_template(..., add_generation_prompt=True)
    go_template(parts)                  # the same, as an Ollama TEMPLATE over .Messages

`chat_parts` renders probe conversations with marker strings through the tokenizer's
Jinja chat template and reads the text around each role: what comes before the first
message (a BOS, a default system block), each role's prefix and suffix, the generation
prompt, and the end-of-turn special tokens in the assistant's suffix. ChatML, Llama 3
headers, Gemma turns, Phi-3 tags, Mistral [INST] all come out of the same reading. The
parts are kept only when they re-render other probe conversations (with and without a
system turn, one and two exchanges) exactly as the template does; a template that
rewrites content or inserts moving text (dates) gives None.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

MARKS = {"system": "QXSYSTEMQX", "user1": "QXUSERONEQX", "assistant1": "QXASSISTANTONEQX", "user2": "QXUSERTWOQX"}
CHECKS = (  # conversations the derived parts must re-render exactly as the Jinja template does
    [("user", "Hello there")],
    [("user", "Hi!"), ("assistant", "Hello. How can I help?"), ("user", "Name a colour.")],
    [("system", "Be brief."), ("user", "Hi!")],
    [("system", "Answer in French."), ("user", "Hi!"), ("assistant", "Bonjour."), ("user", "Thanks")],
)


@dataclass
class ChatParts:
    """A chat template as plain text pieces: what comes before the first message (`lead`, or
    `lead_sys` when that message is a system one), each role's (prefix, suffix) around its content,
    the generation prompt, and the end-of-turn strings generation should stop at."""

    lead: str
    lead_sys: str
    roles: dict[str, tuple[str, str]]
    generation: str
    stops: list[str] = field(default_factory=list)

    def render(self, messages: list[dict]) -> str:
        """The prompt these parts give `messages` (a role they do not know is left out), generation prompt last.

        >>> ChatParts("", "", {"user": ("<u>", "</u>")}, "<a>").render([{"role": "user", "content": "hi"}])
        '<u>hi</u><a>'
        """
        first_system = bool(messages) and messages[0]["role"] == "system"
        text = self.lead_sys if first_system else self.lead
        for m in messages:
            if m["role"] in self.roles:
                prefix, suffix = self.roles[m["role"]]
                text += prefix + m["content"] + suffix
        return text + self.generation


# -- reading a chat template -------------------------------------------------------------------------
def _render(tokenizer, messages: list[dict], generation: bool) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    except Exception:  # noqa: BLE001 - a template may refuse a role or an order: that probe tells nothing
        return None


def _pieces(text: str | None, marks: list[str]) -> list[str] | None:
    """`text` cut at each mark (each present exactly once, in order): the len(marks) + 1 pieces around them."""
    if text is None or any(text.count(m) != 1 for m in marks):
        return None
    pieces, rest = [], text
    for mark in marks:
        before, rest = rest.split(mark)
        pieces.append(before)
    return pieces + [rest]


def _special_tokens(tokenizer) -> list[str]:
    tokens = list(getattr(tokenizer, "all_special_tokens", []) or [])
    tokens += list((tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}) or {})
    return [t for t in dict.fromkeys(tokens) if t]


def _token_starts(text: str, specials: list[str]) -> list[int]:
    """0 and every position in `text` where a special token begins (where a chat turn can be cut)."""
    return sorted({0} | {m.start() for t in specials for m in re.finditer(re.escape(t), text)})


def _lead(head: str, between: str, specials: list[str]) -> str | None:
    """What comes before the first user turn (a BOS, a default system block): the shortest start of
    `head` whose rest (the user prefix) also ends `between` (assistant suffix + user prefix),
    cut where a special token begins, and leaving the assistant suffix non-empty."""
    for k in _token_starts(head, specials):
        rest = head[k:]
        if between.endswith(rest) and len(rest) < len(between):
            return head[:k]
    return None


def _lead_sys(lead: str, head: str, specials: list[str]) -> str:
    """What comes before a first system turn: `lead` when `head` starts with it, else the part they share
    up to the last special token that begins within it (a default system block the system turn replaces)."""
    if head.startswith(lead):
        return lead
    shared = len(os.path.commonprefix([lead, head]))
    return head[:max(k for k in _token_starts(head, specials) if k <= shared)]


def _with_system(tokenizer, parts: ChatParts, specials: list[str]) -> ChatParts:
    """`parts` plus the system role, when the template renders a system turn before the user's."""
    order = ["system", "user1", "assistant1", "user2"]
    probe = [{"role": r.rstrip("12"), "content": MARKS[r]} for r in order]
    pieces = _pieces(_render(tokenizer, probe, False), [MARKS[r] for r in order])
    user_prefix = parts.roles["user"][0]
    if pieces is None or not pieces[1].endswith(user_prefix):
        return parts
    lead_sys = _lead_sys(parts.lead, pieces[0], specials)
    system = (pieces[0][len(lead_sys):], pieces[1][:len(pieces[1]) - len(user_prefix)])
    return ChatParts(parts.lead, lead_sys, {"system": system, **parts.roles}, parts.generation, parts.stops)


def chat_parts(tokenizer) -> ChatParts | None:
    """The tokenizer's chat template read as `ChatParts`, or None when it has none or cannot be read
    that way (the parts must re-render every `CHECKS` conversation exactly as the template does)."""
    order = ["user1", "assistant1", "user2"]
    probe = [{"role": r.rstrip("12"), "content": MARKS[r]} for r in order]
    plain, prompted = _render(tokenizer, probe, False), _render(tokenizer, probe, True)
    pieces = _pieces(plain, [MARKS[r] for r in order])
    if pieces is None or prompted is None or not prompted.startswith(plain):
        return None
    head, user_then_assistant, assistant_then_user, user_suffix = pieces
    specials = _special_tokens(tokenizer)
    lead = _lead(head, assistant_then_user, specials)
    if lead is None or not user_then_assistant.startswith(user_suffix):
        return None
    user_prefix = head[len(lead):]
    assistant = (user_then_assistant[len(user_suffix):], assistant_then_user[:-len(user_prefix) or None])
    parts = ChatParts(lead, lead, {"user": (user_prefix, user_suffix), "assistant": assistant},
                      prompted[len(plain):])
    parts = _with_system(tokenizer, parts, specials)
    parts.stops = [t for t in specials if t in assistant[1]]
    if tokenizer.eos_token and tokenizer.eos_token not in parts.stops:
        parts.stops.append(tokenizer.eos_token)
    return parts if _renders_alike(tokenizer, parts) else None


def _renders_alike(tokenizer, parts: ChatParts) -> bool:
    for turns in CHECKS:
        if turns[0][0] == "system" and "system" not in parts.roles:
            continue
        messages = [{"role": role, "content": text} for role, text in turns]
        if _render(tokenizer, messages, True) != parts.render(messages):
            return False
    return True


def _go(text: str) -> str:
    """`text` as a Go template action printing it: a JSON string is a valid Go string literal."""
    return "{{- " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def go_template(parts: ChatParts, drop_bos: str = "") -> str:
    """The parts as an Ollama TEMPLATE (Go text/template over .Messages). Every literal is a quoted string
    inside an action and every action trims the layout newline before it, so the template's own line
    breaks never reach the prompt. `drop_bos`: a BOS text the runtime adds itself, removed from the lead."""
    lead, lead_sys = (s.removeprefix(drop_bos) if drop_bos else s for s in (parts.lead, parts.lead_sys))
    lines = []
    if lead_sys != lead:
        lines.append('{{- if and .Messages (eq (index .Messages 0).Role "system") }}'
                     f"{_go(lead_sys)}{{{{- else }}}}{_go(lead)}{{{{- end }}}}")
    elif lead:
        lines.append(_go(lead))
    lines.append("{{- range .Messages }}")
    for i, (role, (prefix, suffix)) in enumerate(parts.roles.items()):
        keyword = "if" if i == 0 else "else if"
        lines.append(f'{{{{- {keyword} eq .Role "{role}" }}}}{_go(prefix)}{{{{- .Content }}}}{_go(suffix)}')
    lines += ["{{- end }}", "{{- end }}"]
    if parts.generation:
        lines.append(_go(parts.generation))
    return "\n".join(lines)
