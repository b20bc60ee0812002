"""What a run's prompts look like: its held-out examples, and the template its training prompts were made with.

A run trained on a ``{column}`` template (a classification run, or a column
mapping with a prompt template such as ``Summarize this dialogue:\\n{dialogue}``)
only ever saw its prompts in that wrapping. `run_template` rebuilds that
template from the run (run.yaml, data/report.json) and checks it against a
prompt the run really trained or was evaluated on, so a chat message can be
wrapped exactly as training wrapped the same field value:

    template = run_template(run)            # None for a plain chat run
    template.wrap("Where is my parcel?")    # what training would have sent for that text
    template.field_of(prompt)               # the text a full prompt was made from

`chip_texts` shortens held-out prompts to the part that differs, for buttons.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from finetune_core.data.formats import default_classification_template
from finetune_core.data.templates import render_template, template_fields
from finetune_core.runs.store import Run

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
EXTRAS = ("labels",)  # placeholders a format fills itself (classification: the label set)


@dataclass
class RunTemplate:
    """A run's prompt template with one ``{column}`` a typed message fills (``column``); the
    format's own placeholders (``{labels}``) are filled from ``extras``."""

    template: str
    column: str
    extras: dict[str, str] = field(default_factory=dict)
    system_prompt: str = ""

    def field_of(self, prompt: str) -> str | None:
        """The field's text in a prompt this template made; None when it was not made with it.

        >>> t = RunTemplate("Summarize:\\n{dialogue}\\nSummary: ", "dialogue")
        >>> t.field_of("Summarize:\\nA: hi\\nSummary: "), t.field_of("Summarize:\\nA: hi\\nSummary:"), t.field_of("hi")
        ('A: hi', 'A: hi', None)
        """
        prompt = prompt or ""
        # Chat strips what is typed and examples are shown stripped: a template's own leading or
        # trailing whitespace must not make its prompts unrecognisable (and wrapped twice).
        for template, text in ((self.template, prompt), (self.template.strip(), prompt.strip())):
            source, groups = template_regex(template, self.extras)
            match = re.fullmatch(source, text, re.DOTALL)
            if match:
                return match.group(groups[self.column])
        return None

    def wrap(self, message: str) -> str:
        """The prompt training would have made from `message` as the field's value (a message
        already in the template's form is kept as it is, so it is never wrapped twice).

        >>> t = RunTemplate("Classify into {labels}.\\nText: {text}", "text", {"labels": "a, b"})
        >>> t.wrap("hi")
        'Classify into a, b.\\nText: hi'
        >>> t.wrap(t.wrap("hi")) == t.wrap("hi")
        True
        """
        if self.field_of(message) is not None:
            return message
        return render_template(self.template, {self.column: message}, self.extras)

    def messages(self, message: str, system: str = "") -> list[dict]:
        """The messages a training row made from `message` started with: the run's system
        prompt (unless `system` replaces it), then the wrapped user turn."""
        system = (system or self.system_prompt or "").strip()
        head = [{"role": "system", "content": system}] if system else []
        return head + [{"role": "user", "content": self.wrap(message)}]


def template_regex(template: str, fixed: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Regex source for the texts `template` renders: `fixed` placeholders as their literal
    values, every other placeholder a named group (a repeated one must repeat the same text);
    returns the source and each placeholder's group name.

    >>> source, groups = template_regex("Q: {q} ({labels}) {{x}}", {"labels": "a, b"})
    >>> groups, re.fullmatch(source, "Q: why (a, b) {x}").group("g0")
    ({'q': 'g0'}, 'why')
    """
    groups: dict[str, str] = {}
    parts, pos = [], 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[pos:match.start()]))
        name = match.group(1)
        if name is None:  # "{{" or "}}": a literal brace
            parts.append(re.escape(match.group(0)[0]))
        elif name in fixed:
            parts.append(re.escape(fixed[name]))
        elif name in groups:
            parts.append(f"(?P={groups[name]})")
        else:
            groups[name] = f"g{len(groups)}"
            parts.append(f"(?P<{groups[name]}>.*?)")
        pos = match.end()
    parts.append(re.escape(template[pos:]))
    return "".join(parts), groups


# -- building one from a run -------------------------------------------------------------
def _report(run: Run) -> dict:
    try:
        return json.loads((run.data_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _template_text(cfg: dict, fmt: str) -> str:
    """The run's prompt template as written (classification falls back to the default one)."""
    template = str(cfg.get("prompt_template") or "")
    if fmt == "classification" and not template:
        # the column's name never shows in the rendered default template: any name renders the same
        return default_classification_template(str(cfg.get("prompt_column") or "text"))
    return template if fmt == "columns" else ""


def _user_text(prompt) -> str:
    """The last user message of a conversational prompt, or a plain-text prompt, as it was saved."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            return users[-1]
    return ""


def _first_prompts(run: Run, n: int, *files: str, strip: bool = True) -> list[str]:
    """Up to `n` distinct user prompts from the run's saved split files, in file order
    (stripped, as a person would type them, unless `strip` is False)."""
    found: list[str] = []
    for name in files:
        path = run.data_dir / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            prompt = row.get("prompt") if "prompt" in row else row.get("messages")
            if isinstance(prompt, list) and "prompt" not in row:
                prompt = prompt[:-1] if prompt and prompt[-1].get("role") == "assistant" else prompt
            text = _user_text(prompt).strip() if strip else _user_text(prompt)
            if text.strip() and text not in found:
                found.append(text)
            if len(found) >= n:
                return found
    return found


def example_prompts(run: Run, n: int = 5) -> list[str]:
    """Up to `n` distinct user prompts from the run's held-out split (file order)."""
    return _first_prompts(run, n, "heldout.jsonl")


def _extras_from(template: str, names: list[str], prompt: str, fallback: dict[str, str]) -> dict[str, str] | None:
    """The extras' values as a prompt the run trained on shows them (the label set exactly as
    training listed it), or `fallback` when no such prompt is at hand; None when it does not fit."""
    if not prompt:
        return fallback
    source, groups = template_regex(template, {})
    match = re.fullmatch(source, prompt, re.DOTALL)
    if match is None:
        return None
    return {name: match.group(groups[name]) for name in names if name in groups}


def run_template(run: Run) -> RunTemplate | None:
    """The template the run's training prompts were made with, when a typed message can fill it:
    exactly one ``{column}`` besides the format's own placeholders. None for a plain chat run, a
    template of several columns, or when the run's saved prompts were not made with it."""
    try:
        cfg = run.run_yaml()
    except (OSError, ValueError):
        return None
    report = _report(run)
    fmt = str(report.get("format") or cfg.get("data_format") or "")
    template = _template_text(cfg, fmt)
    names = list(dict.fromkeys(template_fields(template)))
    columns = [n for n in names if n not in EXTRAS or fmt != "classification"]
    if len(columns) != 1:
        return None
    extra_names = [n for n in names if n not in columns]
    labels = ", ".join(str(k) for k in (report.get("labels") or {}))
    seen = _first_prompts(run, 1, "train.jsonl", "heldout.jsonl", strip=False)  # exactly as trained
    extras = _extras_from(template, extra_names, seen[0] if seen else "", {n: labels for n in extra_names})
    if extras is None:
        return None
    found = RunTemplate(template, columns[0], extras, str(cfg.get("system_prompt") or ""))
    if seen and found.field_of(seen[0]) is None:
        return None
    return found


# -- short texts for example buttons ---------------------------------------------------------
def distinct_parts(texts: list[str], keep: int = 3) -> list[str]:
    """Each text without the prefix and suffix all of them share (cut at a word boundary,
    marked with "…"), so texts that differ only in the middle no longer look the same.

    >>> distinct_parts(["Say: hello there. End", "Say: good bye. End"])
    ['…hello there.…', '…good bye.…']
    >>> distinct_parts(["only one"])
    ['only one']
    """
    if len(texts) < 2:
        return list(texts)
    lead = len(_common_prefix(texts))
    tail = len(_common_prefix([t[lead:][::-1] for t in texts]))
    lead, tail = _word_start(texts[0], lead), _word_start(texts[0][::-1], tail)
    out = []
    for text in texts:
        middle = text[lead:len(text) - tail].strip()
        if len(middle) < keep:
            return list(texts)
        out.append(("…" if lead else "") + middle + ("…" if tail else ""))
    return out


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _word_start(text: str, n: int) -> int:
    """`n` moved back to just after the last space before it (0 when there is none)."""
    cut = text.rfind(" ", 0, n + 1)
    return 0 if cut < 0 else cut + 1


def chip_texts(prompts: list[str], template: RunTemplate | None) -> list[str]:
    """What an example button shows for each prompt: the field's text when the run has a
    template (the part a person would type), else the part where the prompts differ."""
    fields = [template.field_of(p) if template else None for p in prompts]
    if prompts and all(f and f.strip() for f in fields):
        return [f.strip() for f in fields]
    return distinct_parts(prompts)
