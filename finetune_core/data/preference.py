"""Preference data: chosen/rejected pairs and thumbs up/down, read into one row shape.

Every preference format becomes one of two row kinds (what DPO/ORPO and KTO read,
in TRL's conversational form)::

    paired:   {"prompt": [system?, ..., user], "chosen": [assistant], "rejected": [assistant]}
    unpaired: {"prompt": [system?, ..., user], "completion": [assistant], "desirable": bool}

Formats (auto-detected from the columns, or chosen by name):

* ``preference``: TRL explicit ``prompt``/``chosen``/``rejected``, each text or a
  message list (a text prompt is a user turn, a text answer an assistant turn);
* ``preference_implicit``: TRL implicit ``chosen``/``rejected`` whole conversations;
  the messages they share are the prompt, the final assistant turns the answers;
* ``sharegpt_preference``: LLaMA-Factory's ``conversations`` (from/value turns, with
  optional ``system``/``tools``) and ``chosen``/``rejected`` message objects;
* ``unpaired_preference``: ``messages`` (or ``prompt``/``completion``) and a true/false
  ``label`` (or ``kto_tag``) saying whether the answer is desirable;
* ``votes``: a run's votes.jsonl (finetune_core/inference/votes.py): the winning
  pane's answer is chosen, the other rejected, after the winning side's history.

Rows left out on purpose raise ``LeftOut`` and are counted in the data report's
``dropped``: tie and "both bad" votes, and pairs whose two answers are the same.

    >>> pair = {"prompt": [{"role": "user", "content": "2+2?"}],
    ...         "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}
    >>> rows_kind([pair]), rows_kind(unpair([pair]))
    ('pairs', 'unpaired')
    >>> [(r["completion"][0]["content"], r["desirable"]) for r in unpair([pair])]
    [('4', True), ('5', False)]
"""
from __future__ import annotations

from finetune_core.data.checks import LeftOut, RowProblem, check_conversation, require_text
from finetune_core.data.formats import (
    CONVERSATION_COLUMNS, PREFERENCE_FORMATS, SHAREGPT_ROLES, FormatSpec, as_messages, normalize_messages,
    normalize_prompt_completion, normalize_sharegpt, sharegpt_messages, with_system,
)

THUMBS_COLUMNS = ("label", "kto_tag")  # LLaMA-Factory names KTO's desirable flag kto_tag; TRL names it label
THUMBS_TEXT = {"true": True, "false": False}
VOTE_PANES = {"left": "A", "right": "B"}  # as finetune_core/inference/votes.py labels the blind panes
DROP_REASONS = {  # what each format may leave out on purpose; the report counts each, zeros included
    "preference": ("identical",), "preference_implicit": ("identical",), "sharegpt_preference": ("identical",),
    "votes": ("ties", "both_bad", "identical"),
}
DROP_WORDS = {  # (one, several)
    "ties": ("tie vote", "tie votes"), "both_bad": ("'both bad' vote", "'both bad' votes"),
    "identical": ("pair whose chosen equals rejected", "pairs whose chosen equals rejected"),
}
DETECT_ROWS = 200  # rows looked at to decide whether a label column holds true/false
PROMPT_NAMES = ("question", "instruction", "query", "input")  # a pair file's prompt column under another name


# -- detection ---------------------------------------------------------------

def detect_preference(columns: list[str], records: list[dict]) -> tuple[FormatSpec | None, str]:
    """The preference format the columns say, with a sentence why; (None, "") for anything else.

    Thumbs need a ``label``/``kto_tag`` column of true/false values beside a chat or
    prompt/completion: a label of words (a classification file, or a chat file
    with a category) is not a thumbs file.
    """
    cols = set(columns)
    conversation = next((c for c in CONVERSATION_COLUMNS if c in cols), "")
    if {"answers", "winner"} <= cols:
        return FormatSpec("votes"), "a run's votes: answers A/B and the winner of each"
    if {"chosen", "rejected"} <= cols:
        if "prompt" in cols:
            return FormatSpec("preference", prompt_column="prompt"), "columns prompt, chosen and rejected"
        if conversation:
            return (FormatSpec("sharegpt_preference", prompt_column=conversation),
                    f"conversation {conversation!r} with chosen and rejected answers")
        named = next((c for c in PROMPT_NAMES if c in cols), "")
        if named and not any(isinstance(r.get("chosen"), list) for r in records[:DETECT_ROWS]):
            return (FormatSpec("preference", prompt_column=named),
                    f"column {named!r} as the prompt of the chosen and rejected answers")
        return (FormatSpec("preference_implicit"),
                "chosen and rejected conversations without a prompt column (their shared start is the prompt)")
    label = thumbs_column(columns, records)
    if label and conversation:
        return (FormatSpec("unpaired_preference", prompt_column=conversation, label_column=label),
                f"conversation {conversation!r} with a true/false {label!r} (thumbs up/down)")
    if label and {"prompt", "completion"} <= cols:
        return (FormatSpec("unpaired_preference", "prompt", "completion", label_column=label),
                f"prompt and completion with a true/false {label!r} (thumbs up/down)")
    return None, ""


def thumbs_column(columns: list[str], records: list[dict]) -> str:
    """The ``label``/``kto_tag`` column whose values (in the first rows) are true/false, else "".
    Nine in ten is enough: a typo must become a named bad row, not turn the file into SFT data
    that would teach the thumbs-down answers too."""
    for name in THUMBS_COLUMNS:
        if name not in columns:
            continue
        values = [r.get(name) for r in records[:DETECT_ROWS] if r.get(name) is not None]
        if values and sum(_thumb(v) is not None for v in values) >= 0.9 * len(values):
            return name
    return ""


def _thumb(value, numbers: bool = False) -> bool | None:
    """True/False from a boolean or "true"/"false" text; 1/0 only with ``numbers``: detection does not
    take a 0/1 column for thumbs (it is as likely a class id), a row of a file chosen as thumbs does."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return THUMBS_TEXT.get(value.strip().lower())
    if numbers and isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


def fill_spec(spec: FormatSpec, columns: list[str]) -> list[str]:
    """Fill the columns a hand-chosen preference format reads (where detection did not) and
    return the columns it needs."""
    cols = set(columns)
    if spec.format == "votes":
        return ["answers", "winner"]
    if spec.format == "preference":
        spec.prompt_column = spec.prompt_column or "prompt"
        return [spec.prompt_column, "chosen", "rejected"]
    if spec.format == "preference_implicit":
        return ["chosen", "rejected"]
    conversation = next((c for c in CONVERSATION_COLUMNS if c in cols), "")
    if spec.format == "sharegpt_preference":
        spec.prompt_column = spec.prompt_column or conversation or "conversations"
        return [spec.prompt_column, "chosen", "rejected"]
    spec.label_column = spec.label_column or next((c for c in THUMBS_COLUMNS if c in cols), "label")
    if not spec.prompt_column and not conversation and {"prompt", "completion"} <= cols:
        spec.prompt_column, spec.completion_column = "prompt", "completion"
    spec.prompt_column = spec.prompt_column or conversation or "messages"
    return [spec.prompt_column, spec.completion_column, spec.label_column]


# -- the parts of a row ------------------------------------------------------

def prompt_messages(value, column: str) -> list[dict]:
    """A prompt as messages (text is one user turn); it must end with the user turn the answers reply to."""
    if isinstance(value, list):
        if not value:
            raise RowProblem(column, "the prompt is an empty list")
        return check_prompt(_messages(value, column), column)
    return [{"role": "user", "content": require_text(value, column, f"the prompt ({column!r})")}]


def check_prompt(messages: list[dict], column: str) -> list[dict]:
    """Alternating turns ending with a user turn (system first if any); returns the messages."""
    check_conversation(messages, column)
    if not messages or messages[-1]["role"] != "user":
        raise RowProblem(column, "the prompt must end with a user turn (the answers reply to it)")
    return messages


def answer_message(value, column: str, prompt: list[dict] = ()) -> dict:
    """One answer as an assistant message: text, a message object, or a one-message list (a list that
    repeats the prompt before the answer is accepted too)."""
    what = f"the {column} answer"
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return {"role": "assistant", "content": require_text(value, column, what)}
    messages = _messages(value, column)
    if len(messages) > len(prompt) and prompt and messages[: len(prompt)] == list(prompt):
        messages = messages[len(prompt):]
    if len(messages) != 1:
        raise RowProblem(column, f"{what} should be one assistant message, got {len(messages)} messages")
    if messages[0]["role"] != "assistant":
        raise RowProblem(column, f"{what} should be an assistant message, got role {messages[0]['role']!r}")
    return {"role": "assistant", "content": require_text(messages[0]["content"], column, what)}


def _messages(value: list, column: str) -> list[dict]:
    """Role/content messages from role/content or ShareGPT from/value objects."""
    turned = []
    for item in value:
        if isinstance(item, dict) and "role" not in item and "from" in item:
            role = SHAREGPT_ROLES.get(str(item.get("from")).lower(), item.get("from"))
            item = {"role": role, "content": item.get("value")}
        turned.append(item)
    return as_messages(turned, column)


def make_pair(prompt: list[dict], chosen: dict, rejected: dict, spec: FormatSpec) -> dict:
    """The paired row; two equal answers teach nothing, so such a pair is left out (counted)."""
    if chosen["content"].strip() == rejected["content"].strip():
        raise LeftOut("identical")
    return {"prompt": with_system(prompt, spec.system_prompt), "chosen": [chosen], "rejected": [rejected]}


# -- one normaliser per format -----------------------------------------------

def normalize_pair(record: dict, spec: FormatSpec) -> dict:
    """TRL explicit: prompt, chosen and rejected, each text or messages (a ``system`` text column, as in
    some public pair files, becomes the system message)."""
    column = spec.prompt_column or "prompt"
    prompt = prompt_messages(record.get(column), column)
    system = record.get("system")
    if isinstance(system, str) and system.strip() and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system}, *prompt]
    chosen = answer_message(record.get("chosen"), "chosen", prompt)
    rejected = answer_message(record.get("rejected"), "rejected", prompt)
    return make_pair(prompt, chosen, rejected, spec)


def normalize_implicit(record: dict, spec: FormatSpec) -> dict:
    """TRL implicit: two whole conversations; the shared leading messages are the prompt and the
    single assistant turn after them on each side is the answer."""
    sides = {}
    for column in ("chosen", "rejected"):
        value = record.get(column)
        if isinstance(value, str):
            raise RowProblem(column, f"column {column!r} is text: without a prompt column, chosen and rejected "
                                     "must be whole conversations (message lists); or add a prompt column")
        if value is None:
            raise RowProblem(column, f"column {column!r} is missing or null")
        sides[column] = _messages(value, column)
        check_conversation(sides[column], column)
    chosen, rejected = sides["chosen"], sides["rejected"]
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) == len(rejected):
        raise LeftOut("identical")
    for column, messages in sides.items():
        rest = messages[shared:]
        if len(rest) != 1 or rest[0]["role"] != "assistant":
            raise RowProblem(column, f"chosen and rejected part at message {shared + 1}: an implicit-prompt pair "
                                     "must share every message up to one final assistant answer")
    if not shared:
        raise RowProblem("chosen", "chosen and rejected share no prompt: they should start with the same user turn")
    prompt = check_prompt(chosen[:shared], "chosen")
    return make_pair(prompt, chosen[-1], rejected[-1], spec)


def normalize_sharegpt_pair(record: dict, spec: FormatSpec) -> dict:
    """LLaMA-Factory: a ShareGPT conversation (its system and tools included) ending with a user turn,
    and chosen/rejected answer objects."""
    column = spec.prompt_column or "conversations"
    turns = record.get(column)
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
        messages = sharegpt_messages(record, column)
    elif turns is None:
        raise RowProblem(column, f"column {column!r} is missing or null")
    else:
        messages = prompt_messages(turns, column)
    prompt = check_prompt(messages, column)
    return make_pair(prompt, answer_message(record.get("chosen"), "chosen", prompt),
                     answer_message(record.get("rejected"), "rejected", prompt), spec)


def normalize_unpaired(record: dict, spec: FormatSpec) -> dict:
    """Thumbs up/down: a chat (or prompt/completion) whose last answer is desirable or not."""
    column = spec.label_column or "label"
    raw = record.get(column)
    desirable = _thumb(raw, numbers=True)
    if desirable is None:
        shown = "missing or null" if raw is None else f"{raw!r}"[:40]
        raise RowProblem(column, f"column {column!r} should be true or false (is the answer desirable?), "
                                 f"got {shown}")
    if spec.completion_column:
        row = normalize_prompt_completion(record, spec)
    else:
        turns = record.get(spec.prompt_column)
        sharegpt = isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]
        row = (normalize_sharegpt if sharegpt else normalize_messages)(record, spec)
    return {**row, "desirable": desirable}


def normalize_vote(record: dict, spec: FormatSpec) -> dict:
    """One line of a run's votes.jsonl: ties and "both bad" are left out; otherwise the winning pane's
    answer is chosen, the other pane's rejected, after the history the winning side saw."""
    winner = record.get("winner")
    if winner in ("tie", "both_bad"):
        raise LeftOut("ties" if winner == "tie" else "both_bad")
    answers = record.get("answers")
    if not isinstance(answers, dict):
        raise RowProblem("answers", "this vote has no answers A and B (a vote saved before answers were kept), "
                                    "so it cannot become a pair")
    if winner not in ("A", "B"):
        raise RowProblem("winner", f"winner should be A, B, tie or both_bad, got {str(winner)[:40]!r}")
    loser = "B" if winner == "A" else "A"
    # an empty answer is kept: a model that said nothing lost (or won) a real vote, and through the chat
    # template it is still the end-of-turn token the model should (not) have produced
    chosen, rejected = (_vote_answer(answers.get(pane), pane) for pane in (winner, loser))
    return make_pair(_vote_prompt(record, winner), {"role": "assistant", "content": chosen},
                     {"role": "assistant", "content": rejected}, spec)


def _vote_answer(value, pane: str) -> str:
    """One pane's answer in a vote: text, possibly empty (RowProblem naming the pane otherwise)."""
    if not isinstance(value, str):
        raise RowProblem("answers", f"answer {pane} should be text, got {type(value).__name__}")
    return value


def _vote_prompt(record: dict, winner: str) -> list[dict]:
    """The winning side's message history when the vote kept it, else the prompt text as a user turn."""
    tuned_pane = VOTE_PANES.get(str(record.get("tuned_side")))
    if tuned_pane:
        side = "prompt_tuned" if winner == tuned_pane else "prompt_base"
    else:  # no pane record: the model ids say which history is whose
        model = str((record.get("models") or {}).get(winner, "")) if isinstance(record.get("models"), dict) else ""
        side = "prompt_tuned" if model.startswith("tuned:") else "prompt_base" if model.startswith("base:") else ""
    history = record.get(side) if side else None
    if history and isinstance(history, list):
        # an earlier answer the model left empty is still what it saw: checked as a turn, kept as it was
        said = [{**m, "content": m.get("content") or "(no answer)"} if isinstance(m, dict) and
                m.get("role") == "assistant" and m.get("content") == "" else m for m in history]
        prompt_messages(said, side)
        return [{"role": m["role"], "content": m["content"]} for m in history]
    return prompt_messages(record.get("prompt"), "prompt")


NORMALISERS = {
    "preference": normalize_pair,
    "preference_implicit": normalize_implicit,
    "sharegpt_preference": normalize_sharegpt_pair,
    "unpaired_preference": normalize_unpaired,
    "votes": normalize_vote,
}


def normalize_preference(record: dict, spec: FormatSpec) -> dict:
    """Normalise one record of a preference format (RowProblem for a bad row, LeftOut for one left out)."""
    return NORMALISERS[spec.format](record, spec)


# -- the rows, once read -----------------------------------------------------

def rows_kind(rows: list[dict]) -> str:
    """"pairs", "unpaired", "text" (language modelling) or "sft" (prompt/completion; also for no rows)."""
    first = rows[0] if rows else {}
    if "chosen" in first:
        return "pairs"
    if "desirable" in first:
        return "unpaired"
    if "text" in first and "prompt" not in first:
        return "text"
    return "sft"


def unpair(pair_rows: list[dict]) -> list[dict]:
    """Each pair as two thumbs rows: chosen desirable, rejected not (unpaired rows pass through)."""
    out = []
    for row in pair_rows:
        if "desirable" in row:
            out.append(row)
            continue
        out.append({"prompt": list(row["prompt"]), "completion": list(row["chosen"]), "desirable": True})
        out.append({"prompt": list(row["prompt"]), "completion": list(row["rejected"]), "desirable": False})
    return out


def chosen_as_sft(pair_rows: list[dict]) -> list[dict]:
    """Prompt/completion rows from the chosen answers (the desirable ones, for thumbs rows)."""
    out = []
    for row in pair_rows:
        if "chosen" in row:
            out.append({"prompt": list(row["prompt"]), "completion": list(row["chosen"])})
        elif row.get("desirable"):
            out.append({"prompt": list(row["prompt"]), "completion": list(row["completion"])})
    return out


def answer_rows(row: dict) -> list[tuple[str, dict]]:
    """The row as prompt/completion rows, named: ("chosen", ...) and ("rejected", ...) for a pair,
    ("desirable"/"undesirable", ...) for thumbs, ("", row) for anything else; each renders like SFT."""
    if "chosen" in row:
        return [(side, {"prompt": row["prompt"], "completion": row[side]}) for side in ("chosen", "rejected")]
    if "desirable" in row:
        return [("desirable" if row["desirable"] else "undesirable",
                 {"prompt": row["prompt"], "completion": row["completion"]})]
    return [("", row)]


def drop_reasons(data_format: str) -> tuple[str, ...]:
    """What a format may leave out on purpose (the keys of the report's ``dropped``)."""
    return DROP_REASONS.get(data_format, ())


def dropped_text(dropped: dict[str, int]) -> str:
    """What was left out, in words ("" for nothing).

    >>> dropped_text({"ties": 3, "both_bad": 0, "identical": 1})
    '3 tie votes, 1 pair whose chosen equals rejected'
    """
    return ", ".join(f"{n} {DROP_WORDS.get(k, (k, k))[n != 1]}" for k, n in dropped.items() if n)


def thumbs_counts(rows: list[dict]) -> tuple[int, int]:
    """(desirable, undesirable) among thumbs rows."""
    good = sum(1 for r in rows if r.get("desirable") is True)
    return good, sum(1 for r in rows if r.get("desirable") is False)


__all__ = ["PREFERENCE_FORMATS", "detect_preference", "normalize_preference", "rows_kind", "unpair", "chosen_as_sft",
           "answer_rows", "drop_reasons", "dropped_text", "fill_spec", "thumbs_counts", "thumbs_column"]
