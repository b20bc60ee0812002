"""Data formats: detect which one a file is in, and normalise each row to TRL's
conversational prompt/completion form.

Normalised rows::

    {"prompt": [{"role": "system", ...}?, {"role": "user", ...}, ...],
     "completion": [{"role": "assistant", "content": ...}]}      # + "label" for classification
    {"text": "..."}                                               # language modelling

Formats (one normaliser each): prompt_completion, messages, sharegpt, alpaca,
text, columns (user mapping + ``{column}`` templates), classification. The
preference formats (chosen/rejected pairs, thumbs up/down, a run's votes) are
detected and normalised in ``finetune_core.data.preference``; ``detect_format``
and ``normalize_row`` hand them over, so callers see one list of formats.

ShareGPT tool-calling roles are mapped, not rejected: ``function_call`` becomes
an assistant turn (the JSON call is what the model learns to write),
``observation``/``tool`` becomes a user turn starting "Tool result:", and a
row's ``tools`` list is described in the system message so the model sees which
functions exist. Multi-turn chats train the last assistant turn; everything
before it is the prompt (masked).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from finetune_core.data.checks import RowProblem, check_conversation, require_text
from finetune_core.data.templates import render_template, template_fields

SFT_FORMATS = ("prompt_completion", "messages", "sharegpt", "alpaca", "text", "columns", "classification")
PREFERENCE_FORMATS = ("preference", "preference_implicit", "sharegpt_preference", "unpaired_preference", "votes")
FORMATS = SFT_FORMATS + PREFERENCE_FORMATS
CONVERSATION_COLUMNS = ("messages", "conversations", "conversation", "chat")
ID_COLUMNS = {"id", "idx", "index", "uuid", "guid", "fname", "key", "source", "split"}
LABEL_NAMES = {"label", "labels", "category", "class", "intent", "sentiment", "emotion", "target", "rating", "stars"}
TEXT_NAMES = {"text", "sentence", "review", "content", "comment", "message", "utterance", "document", "query"}
# Pairs seen in public datasets: auto-detection proposes them as a column mapping.
KNOWN_PAIRS = (
    ("dialogue", "summary"), ("document", "summary"), ("article", "highlights"), ("article", "summary"),
    ("question", "answer"), ("query", "response"), ("input", "output"), ("source", "target"),
    ("context", "response"), ("note", "summary"), ("ticket", "reply"), ("instruction", "response"),
)
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "system": "system",
    "function_call": "assistant", "observation": "tool", "tool": "tool", "function": "tool",
}
TOOL_RESULT_PREFIX = "Tool result:\n"
CLASSIFICATION_TEMPLATE = "Classify the text into one of: {labels}.\n\nText: {%s}\nAnswer with the label only."


@dataclass
class FormatSpec:
    """A resolved format plus the columns and templates it reads."""

    format: str
    prompt_column: str = ""  # also: the conversation column, the text column, the classified text
    completion_column: str = ""  # also: the label column
    prompt_template: str = ""
    completion_template: str = ""
    system_prompt: str = ""
    labels: list[str] = field(default_factory=list)
    label_column: str = ""  # thumbs up/down (unpaired_preference): the boolean column



# -- detection ---------------------------------------------------------------

def detect_format(columns: list[str], records: list[dict]) -> tuple[FormatSpec | None, str]:
    """Guess the format from column names and a look at the values.

    Returns the spec (None when nothing fits) and a sentence saying why.
    Preference layouts are tried first: their columns are specific enough not to
    claim an SFT file, and an SFT guess would read a pair file wrongly.
    """
    from finetune_core.data.preference import detect_preference  # it builds on this module's helpers

    found = detect_preference(columns, records)
    if found[0] is not None:
        return found
    cols = set(columns)
    for name in CONVERSATION_COLUMNS:
        if name in cols:
            first = _first_message(records, name)
            if first is not None and "role" in first:
                return FormatSpec("messages", prompt_column=name), f"column {name!r} holds role/content messages"
            if first is not None and "from" in first:
                return FormatSpec("sharegpt", prompt_column=name), f"column {name!r} holds ShareGPT from/value turns"
    if {"prompt", "completion"} <= cols:
        return FormatSpec("prompt_completion", "prompt", "completion"), "columns prompt and completion"
    if {"instruction", "output"} <= cols:
        return FormatSpec("alpaca"), "Alpaca columns instruction/input/output"
    pair = classification_columns(columns, records)
    if pair:
        return FormatSpec("classification", *pair), f"text column {pair[0]!r} with a small label set in {pair[1]!r}"
    content = [c for c in columns if c.lower() not in ID_COLUMNS]
    if content == ["text"]:
        return FormatSpec("text", "text"), "a single text column (language modelling)"
    for prompt, completion in KNOWN_PAIRS:
        if prompt in cols and completion in cols:
            return (FormatSpec("columns", prompt, completion),
                    f"mapped {prompt!r} to the prompt and {completion!r} to the completion (guessed; override the mapping)")
    return None, ""


def _first_message(records: list[dict], column: str) -> dict | None:
    for record in records[:50]:
        value = record.get(column)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return value[0]
    return None


def classification_columns(columns: list[str], records: list[dict]) -> tuple[str, str] | None:
    """(text column, label column) when the file is two content columns, one of
    them a small set of short labels."""
    content = [c for c in columns if c.lower() not in ID_COLUMNS]
    if len(content) != 2:
        return None
    for text_col, label_col in (content, content[::-1]):
        named = label_col.lower() in LABEL_NAMES
        if not (named or text_col.lower() in TEXT_NAMES):
            continue
        if _label_like([r.get(label_col) for r in records], strict=not named) and _mostly_text(records, text_col):
            return text_col, label_col
    return None


def _label_like(values: list, strict: bool) -> bool:
    values = [v for v in values if v is not None]
    if not values or not all(isinstance(v, (str, int, bool)) for v in values):
        return False
    distinct = {str(v).strip() for v in values}
    n = len(values)
    if strict:  # the column is not named like a label: ask for short, few, repeated values
        short = sum(len(v) for v in distinct) / len(distinct) <= 30
        return short and len(distinct) <= 20 and len(distinct) <= n / 3
    return len(distinct) <= 50 and (n < 10 or len(distinct) <= n / 2)


def _mostly_text(records: list[dict], column: str) -> bool:
    values = [r.get(column) for r in records if r.get(column) is not None]
    return bool(values) and sum(isinstance(v, str) for v in values) >= 0.9 * len(values)


def collect_labels(records: list[dict], column: str) -> list[str]:
    """Distinct cleaned labels, numerically sorted when they are all numbers."""
    labels = {clean_label(r.get(column)) for r in records}
    labels.discard("")
    if labels and all(re.fullmatch(r"-?\d+", x) for x in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def clean_label(value) -> str:
    """A label cell as stripped text; "" for null, booleans, floats and other non-label values."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ""
    return str(value).strip()


# -- shared helpers ----------------------------------------------------------

def with_system(prompt: list[dict], system: str) -> list[dict]:
    """Prepend the run's system prompt unless the row brings its own."""
    if system and not (prompt and prompt[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *prompt]
    return prompt


def as_messages(value, column: str) -> list[dict]:
    """A list of {role, content} dicts; content given as text parts is joined."""
    if not isinstance(value, list):
        raise RowProblem(column, f"column {column!r} should be a list of messages, got {type(value).__name__}")
    out = []
    for i, msg in enumerate(value, start=1):
        if not isinstance(msg, dict):
            raise RowProblem(column, f"message {i} should be an object with role and content")
        content = msg.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise RowProblem(column, f"message {i} has non-text content parts (only text is supported)")
            content = "".join(str(p.get("text", "")) for p in content)
        out.append({"role": msg.get("role"), "content": content})
    return out


def split_last_turn(messages: list[dict], column: str) -> tuple[list[dict], list[dict]]:
    """Everything before the last assistant turn is the prompt; that turn is the completion."""
    check_conversation(messages, column)
    if not messages or messages[-1]["role"] != "assistant":
        raise RowProblem(column, "the conversation must end with an assistant turn (it is what the model learns)")
    prompt = messages[:-1]
    if not any(m["role"] == "user" for m in prompt):
        raise RowProblem(column, "the conversation has no user turn before the last assistant turn")
    return prompt, messages[-1:]


# -- one normaliser per format -----------------------------------------------

def normalize_prompt_completion(record: dict, spec: FormatSpec) -> dict:
    """A prompt/completion row: each side text or a message list; the completion must be assistant turns."""
    pcol, ccol = spec.prompt_column or "prompt", spec.completion_column or "completion"
    prompt = _side(record.get(pcol), pcol, "user", "prompt")
    completion = _side(record.get(ccol), ccol, "assistant", "completion")
    if completion[0]["role"] != "assistant" or completion[-1]["role"] != "assistant":
        raise RowProblem(ccol, "the completion must start and end with an assistant message")
    check_conversation(prompt + completion, pcol)
    return {"prompt": with_system(prompt, spec.system_prompt), "completion": completion}


def _side(value, column: str, role: str, what: str) -> list[dict]:
    if isinstance(value, list):
        if not value:
            raise RowProblem(column, f"the {what} is an empty list")
        return as_messages(value, column)
    return [{"role": role, "content": require_text(value, column, f"the {what} ({column!r})")}]


def normalize_messages(record: dict, spec: FormatSpec) -> dict:
    """A row with one message list (default column "messages"): its last assistant turn is the completion."""
    column = spec.prompt_column or "messages"
    if record.get(column) is None:
        raise RowProblem(column, f"column {column!r} is missing or null")
    prompt, completion = split_last_turn(as_messages(record[column], column), column)
    return {"prompt": with_system(prompt, spec.system_prompt), "completion": completion}


def normalize_sharegpt(record: dict, spec: FormatSpec) -> dict:
    """A ShareGPT row (from/value turns): roles mapped (tool results become user turns), the row's system
    text and tools put in the system message, and the last assistant turn made the completion."""
    column = spec.prompt_column or "conversations"
    prompt, completion = split_last_turn(sharegpt_messages(record, column), column)
    return {"prompt": with_system(prompt, spec.system_prompt), "completion": completion}


def sharegpt_messages(record: dict, column: str) -> list[dict]:
    """The row's ShareGPT turns as role/content messages, its system text and tools first."""
    turns = record.get(column)
    if not isinstance(turns, list) or not turns:
        raise RowProblem(column, f"column {column!r} should be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise RowProblem(column, f"turn {i} should be an object with 'from' and 'value'")
        source = turn.get("from")
        role = SHAREGPT_ROLES.get(str(source).lower()) if source is not None else None
        if role is None:
            known = "human, gpt, system, function_call, observation"
            raise RowProblem(column, f"turn {i}: unknown role {source!r} (expected one of {known})")
        value = require_text(turn.get("value"), column, f"turn {i} ({source}) value")
        if role == "tool":  # a tool's answer is input to the model, like a user turn
            role, value = "user", TOOL_RESULT_PREFIX + value
        messages.append({"role": role, "content": value})
    system = _sharegpt_system(record, messages)
    if system:
        rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
        messages = [{"role": "system", "content": system}, *rest]
    return messages


def _sharegpt_system(record: dict, messages: list[dict]) -> str:
    """The row's own system text (field or first turn) plus a description of its tools."""
    parts = []
    own = record.get("system") if isinstance(record.get("system"), str) else ""
    if own.strip():
        parts.append(own.strip())
    elif messages and messages[0]["role"] == "system":
        parts.append(messages[0]["content"])
    tools = record.get("tools")
    if isinstance(tools, str) and tools.strip():
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise RowProblem("tools", f"column 'tools' is not valid JSON: {exc.msg}") from exc
    if tools:
        parts.append(
            "You can call these functions. To call one, reply with only a JSON object "
            '{"name": ..., "arguments": {...}}.\n' + json.dumps(tools, ensure_ascii=False)
        )
    return "\n\n".join(parts)


def normalize_alpaca(record: dict, spec: FormatSpec) -> dict:
    """An Alpaca row: instruction (+ input) is the user turn, output the completion; an optional system
    field and [question, answer] history pairs come before it in the prompt."""
    instruction = require_text(record.get("instruction"), "instruction")
    extra = record.get("input")
    if extra is not None and not isinstance(extra, str):
        raise RowProblem("input", f"column 'input' should be text, got {type(extra).__name__}")
    output = require_text(record.get("output"), "output")
    user = instruction + ("\n\n" + extra if extra and extra.strip() else "")
    prompt = []
    if isinstance(record.get("system"), str) and record["system"].strip():
        prompt.append({"role": "system", "content": record["system"]})
    for i, pair in enumerate(record.get("history") or [], start=1):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise RowProblem("history", f"history item {i} should be a [question, answer] pair")
        prompt += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt.append({"role": "user", "content": user})
    completion = [{"role": "assistant", "content": output}]
    check_conversation(prompt + completion, "history")
    return {"prompt": with_system(prompt, spec.system_prompt), "completion": completion}


def normalize_text(record: dict, spec: FormatSpec) -> dict:
    """A language-modelling row: {"text": ...} from the text column (default "text"), every token trained."""
    column = spec.prompt_column or "text"
    return {"text": require_text(record.get(column), column)}


def normalize_columns(record: dict, spec: FormatSpec) -> dict:
    """A row mapped by the user: prompt and completion each from a column or a ``{column}`` template."""
    prompt = _from_mapping(record, spec.prompt_template, spec.prompt_column, "prompt")
    completion = _from_mapping(record, spec.completion_template, spec.completion_column, "completion")
    return {
        "prompt": with_system([{"role": "user", "content": prompt}], spec.system_prompt),
        "completion": [{"role": "assistant", "content": completion}],
    }


def _from_mapping(record: dict, template: str, column: str, what: str) -> str:
    if template:
        text = render_template(template, record)
        names = template_fields(template)
        # A template's fixed words are not content: all placeholders empty means an empty row.
        if not text.strip() or (names and all(not str(record.get(n)).strip() for n in names)):
            listed = ", ".join(repr(n) for n in names)
            raise RowProblem(names[0] if names else None, f"the {what} is empty: the template's columns ({listed}) are empty")
        return text
    value = record.get(column)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # numbers in a mapped column are fine as text
    return require_text(value, column, f"the {what} ({column!r})")


def normalize_classification(record: dict, spec: FormatSpec) -> dict:
    """A classification row: the text rendered into the prompt template (with the label set), the
    cleaned label as the completion, and the label also kept under "label" for evaluation."""
    text_col, label_col = spec.prompt_column, spec.completion_column
    require_text(record.get(text_col), text_col)
    raw = record.get(label_col)
    label = clean_label(raw)
    if not label:
        kind = "missing or null" if raw is None else ("empty" if isinstance(raw, str) else f"a {type(raw).__name__}")
        raise RowProblem(label_col, f"label column {label_col!r} is {kind}")
    template = spec.prompt_template or default_classification_template(text_col)
    prompt = render_template(template, record, {"labels": ", ".join(spec.labels)})
    return {
        "prompt": with_system([{"role": "user", "content": prompt}], spec.system_prompt),
        "completion": [{"role": "assistant", "content": label}],
        "label": label,
    }


def default_classification_template(text_column: str) -> str:
    """Lists the label set so the base model knows the allowed answers."""
    return CLASSIFICATION_TEMPLATE % text_column


NORMALISERS = {
    "prompt_completion": normalize_prompt_completion,
    "messages": normalize_messages,
    "sharegpt": normalize_sharegpt,
    "alpaca": normalize_alpaca,
    "text": normalize_text,
    "columns": normalize_columns,
    "classification": normalize_classification,
}


def normalize_row(record: dict, spec: FormatSpec) -> dict:
    """Normalise one raw record; raises RowProblem when the row cannot be used (and, for preference
    formats, LeftOut when it is left out on purpose: a tie vote, chosen equal to rejected)."""
    if spec.format in PREFERENCE_FORMATS:
        from finetune_core.data.preference import normalize_preference

        return normalize_preference(record, spec)
    return NORMALISERS[spec.format](record, spec)
