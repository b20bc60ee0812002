"""The prompts a judge compares base and tuned on: the run's held-out rows, or a prompt file.

* ``"heldout"`` — the run's own held-out split (the rows it did not train on):
  the prompt is the row's message list as training saw it, the question shown
  to the judge its last user message, the reference its completion; one
  category, "held-out".
* a ``.jsonl`` file in the MT-Bench / Vicuna layout, one object a line::

      {"question_id": 81, "category": "writing", "turns": ["first user turn", "second ..."],
       "reference": ["a reference answer for turn 1", "..."]}     # reference optional

  Only the FIRST user turn is asked (both models answer one message; a second
  turn would need each side's own first answer, and the judge compares single
  answers). ``category`` defaults to "general", ``question_id`` to the line number.

A bad line is refused with its line number and field. With a limit, prompts are
taken in turn from each category (file order within a category), so 20 prompts
of MT-Bench cover its 8 categories instead of the first two.

    >>> items = parse_prompt_lines(['{"question_id": 1, "category": "math", "turns": ["2+2?"], "reference": ["4"]}'])
    >>> items[0].question, items[0].category, items[0].reference, items[0].messages
    ('2+2?', 'math', '4', [{'role': 'user', 'content': '2+2?'}])
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from finetune_core.errors import InputError

HELDOUT = "heldout"
HELDOUT_LABEL = "held-out rows"
HELDOUT_CATEGORY = "held-out"
DEFAULT_CATEGORY = "general"
ISSUES_SHOWN = 5  # bad lines named in one message


@dataclass(frozen=True)
class PromptItem:
    """One prompt to judge: `messages` are what both models answer, `question` what the judge reads,
    `reference` an answer to compare with (or None)."""

    id: str
    category: str
    messages: list
    question: str
    reference: str | None = None


def load_prompt_set(run, prompt_set: str = HELDOUT, limit: int | None = None) -> tuple[list[PromptItem], str]:
    """(prompts, label for judge.json) for "heldout" or a prompt file path, at most `limit` of them."""
    if (prompt_set or HELDOUT) == HELDOUT:
        items, label = heldout_items(run), HELDOUT_LABEL
    else:
        path = Path(prompt_set)
        items, label = read_prompt_file(path), path.name
    if not items:
        raise InputError(f"The prompt set {label} has no prompts to judge.")
    return spread(items, limit), label


def heldout_items(run) -> list[PromptItem]:
    """The run's held-out rows as prompts (refused for plain-text rows: there is nothing to answer)."""
    from evaluation.run_eval import input_text, load_eval_rows, reference_text
    from finetune_core.data.dataset import is_text_rows

    rows, _labels, _source = load_eval_rows(run)
    if is_text_rows(rows):
        raise InputError(f"Run {run.id}'s held-out rows are plain text (language modelling): there is no "
                         "prompt to answer. Judge a prompt file instead (MT-Bench / Vicuna layout).")
    items = []
    for i, row in enumerate(rows):
        reference = reference_text(row, classification=False).strip()
        items.append(PromptItem(str(i), HELDOUT_CATEGORY, row["prompt"], input_text(row), reference or None))
    return items


def read_prompt_file(path: Path) -> list[PromptItem]:
    """Prompts from a JSON Lines file in the MT-Bench / Vicuna layout; InputError naming the file,
    and each bad line with its field."""
    from finetune_core.limits import limits

    if not path.is_file():
        raise InputError(f"Prompt file {path.name} not found (expected a .jsonl file, MT-Bench / Vicuna layout).")
    limits().check("data_bytes", path.stat().st_size, f"Prompt file {path.name}'s size in bytes")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"Prompt file {path.name} is not UTF-8 text.") from None
    try:
        return parse_prompt_lines(lines)
    except InputError as exc:
        raise InputError(f"Prompt file {path.name}: {exc}") from None


def parse_prompt_lines(lines: list[str]) -> list[PromptItem]:
    """PromptItems from JSON Lines text (blank lines skipped); InputError listing bad lines (1-based)."""
    from finetune_core.limits import limits

    items, issues = [], []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            items.append(_parse_line(number, text))
        except InputError as exc:
            issues.append(str(exc))
    if issues:
        more = f" (and {len(issues) - ISSUES_SHOWN} more)" if len(issues) > ISSUES_SHOWN else ""
        raise InputError("; ".join(issues[:ISSUES_SHOWN]) + more)
    limits().check("data_rows", len(items), "Prompts in the file")
    return items


def _parse_line(number: int, text: str) -> PromptItem:
    try:
        row = json.loads(text)
    except ValueError as exc:
        raise InputError(f"line {number} is not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise InputError(f"line {number} is not a JSON object")
    turns = row.get("turns")
    if not isinstance(turns, list) or not turns:
        raise InputError(f"line {number}, field 'turns': expected a non-empty list of user turns")
    if not isinstance(turns[0], str) or not turns[0].strip():
        raise InputError(f"line {number}, field 'turns': the first turn must be non-empty text")
    category = row.get("category", DEFAULT_CATEGORY)
    if not isinstance(category, str) or not category.strip():
        raise InputError(f"line {number}, field 'category': expected text")
    qid = row.get("question_id", number)
    if not isinstance(qid, (int, str)) or isinstance(qid, bool):
        raise InputError(f"line {number}, field 'question_id': expected a number or text")
    return PromptItem(str(qid), category.strip(), [{"role": "user", "content": turns[0]}], turns[0],
                      _reference(number, row.get("reference")))


def _reference(number: int, value) -> str | None:
    """The first turn's reference answer: a list (one per turn, as MT-Bench has it) or one text."""
    if value is None:
        return None
    first = value[0] if isinstance(value, list) and value else value
    if not isinstance(first, str):
        raise InputError(f"line {number}, field 'reference': expected text or a list of texts")
    return first.strip() or None


def spread(items: list[PromptItem], limit: int | None) -> list[PromptItem]:
    """At most `limit` items taken in turn from each category, back in their original order.

    >>> cats = [PromptItem(str(i), c, [], "q") for i, c in enumerate("aaabbc")]
    >>> [(p.id, p.category) for p in spread(cats, 4)]
    [('0', 'a'), ('1', 'a'), ('3', 'b'), ('5', 'c')]
    """
    if limit is None or limit >= len(items):
        return list(items)
    queues: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        queues.setdefault(item.category, []).append(i)
    chosen: list[int] = []
    while len(chosen) < limit:
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return [items[i] for i in sorted(chosen)]
