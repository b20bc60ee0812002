"""Format detection and one normaliser per format, on small in-repo fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

from finetune_core.data.checks import RowProblem
from finetune_core.data.formats import (
    FormatSpec, detect_format, normalize_alpaca, normalize_classification, normalize_columns,
    normalize_messages, normalize_prompt_completion, normalize_sharegpt, normalize_text,
)
from finetune_core.data.load import load_records
from finetune_core.data.templates import render_template, template_fields

FIX = Path(__file__).parent / "fixtures" / "data"


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def S(text):
    return {"role": "system", "content": text}


def detected(name: str) -> tuple[str, str, str]:
    res = load_records(FIX / name)
    spec, _why = detect_format(res.columns, res.records)
    return spec.format, spec.prompt_column, spec.completion_column


@pytest.mark.parametrize("name, expected", [
    ("prompt_completion.jsonl", ("prompt_completion", "prompt", "completion")),
    ("prompt_completion_chat.jsonl", ("prompt_completion", "prompt", "completion")),
    ("messages.jsonl", ("messages", "messages", "")),
    ("sharegpt_tools.json", ("sharegpt", "conversations", "")),
    ("alpaca.json", ("alpaca", "", "")),
    ("text.jsonl", ("text", "text", "")),
    ("classification.csv", ("classification", "text", "label")),
    ("reviews.tsv", ("classification", "review", "stars")),
    ("columns_object.json", ("columns", "question", "answer")),
])
def test_detection(name, expected):
    assert detected(name) == expected


def test_nothing_detected_for_unknown_columns():
    assert detect_format(["foo", "bar", "baz"], [{"foo": "a", "bar": "b", "baz": "c"}]) == (None, "")


def test_free_text_pair_is_not_classification():
    records = [{"text": f"sentence {i}", "comment": f"remark {i}"} for i in range(30)]
    spec, _ = detect_format(["text", "comment"], records)
    assert spec is None


def test_prompt_completion_strings_with_system_prompt():
    row = normalize_prompt_completion({"prompt": "2+2?", "completion": "4"}, FormatSpec("prompt_completion", system_prompt="Be exact."))
    assert row == {"prompt": [S("Be exact."), U("2+2?")], "completion": [A("4")]}


def test_prompt_completion_messages_keep_own_system():
    record = {"prompt": [S("Be brief."), U("Capital of Peru?")], "completion": [A("Lima.")]}
    row = normalize_prompt_completion(record, FormatSpec("prompt_completion", system_prompt="ignored"))
    assert row == {"prompt": [S("Be brief."), U("Capital of Peru?")], "completion": [A("Lima.")]}


def test_prompt_completion_problems():
    spec = FormatSpec("prompt_completion")
    with pytest.raises(RowProblem, match=r"the completion \('completion'\) is empty") as exc:
        normalize_prompt_completion({"prompt": "q", "completion": "  "}, spec)
    assert exc.value.column == "completion"
    with pytest.raises(RowProblem, match=r"should be text, got number"):
        normalize_prompt_completion({"prompt": 5, "completion": "x"}, spec)
    with pytest.raises(RowProblem, match="must start and end with an assistant message"):
        normalize_prompt_completion({"prompt": "q", "completion": [U("x")]}, spec)


def test_messages_multi_turn_last_assistant_is_completion():
    rows = load_records(FIX / "messages.jsonl").records
    row = normalize_messages(rows[0], FormatSpec("messages", "messages"))
    assert row == {"prompt": [S("You are terse."), U("Weather?"), A("Sunny."), U("Tomorrow?")], "completion": [A("Rain.")]}
    row = normalize_messages(rows[1], FormatSpec("messages", "messages", system_prompt="Sys"))
    assert row == {"prompt": [S("Sys"), U("Ping")], "completion": [A("Pong")]}


@pytest.mark.parametrize("messages, message", [
    ([U("a"), {"role": "bot", "content": "b"}], "message 2: unknown role 'bot' (expected one of system, user, assistant)"),
    ([U("a"), U("b"), A("c")], "roles not alternating: message 2 is 'user', expected 'assistant'"),
    ([A("a"), U("b"), A("c")], "roles not alternating: message 1 is 'assistant', expected 'user'"),
    ([U("a"), A("b"), U("c")], "the conversation must end with an assistant turn (it is what the model learns)"),
    ([U("a"), A("")], "message 2 (assistant) content is empty"),
    ([U("a"), S("late"), A("b")], "message 2: a system message is only allowed first"),
])
def test_messages_problems(messages, message):
    with pytest.raises(RowProblem) as exc:
        normalize_messages({"messages": messages}, FormatSpec("messages", "messages"))
    assert exc.value.message == message and exc.value.column == "messages"


def test_sharegpt_tool_roles_are_mapped():
    records = load_records(FIX / "sharegpt_tools.json").records
    row = normalize_sharegpt(records[0], FormatSpec("sharegpt", "conversations"))
    call = '{"name": "power", "arguments": {"base": 3, "exp": 2}}'
    assert row["prompt"][1:] == [U("What is 3 squared?"), A(call), U('Tool result:\n{"result": 9}')]
    assert row["completion"] == [A("3 squared is 9.")]
    system = row["prompt"][0]
    assert system["role"] == "system" and system["content"].startswith("You can call these functions.")
    assert system["content"].endswith('[{"name": "power", "description": "Raise a number to a power"}]')


def test_sharegpt_own_system_turn_and_empty_tools():
    records = load_records(FIX / "sharegpt_tools.json").records
    row = normalize_sharegpt(records[1], FormatSpec("sharegpt", "conversations", system_prompt="not used"))
    assert row == {"prompt": [S("You are a pirate."), U("Hello")], "completion": [A("Ahoy!")]}


def test_sharegpt_unknown_role():
    record = {"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}
    with pytest.raises(RowProblem) as exc:
        normalize_sharegpt(record, FormatSpec("sharegpt", "conversations"))
    assert exc.value.message == "turn 2: unknown role 'robot' (expected one of human, gpt, system, function_call, observation)"


def test_alpaca_with_and_without_input():
    records = load_records(FIX / "alpaca.json").records
    spec = FormatSpec("alpaca")
    assert normalize_alpaca(records[0], spec) == {"prompt": [U("Translate to German.\n\nGood night")], "completion": [A("Gute Nacht")]}
    assert normalize_alpaca(records[1], spec) == {"prompt": [U("Give a synonym for happy.")], "completion": [A("Joyful")]}
    with pytest.raises(RowProblem, match="column 'output' is empty"):
        normalize_alpaca({"instruction": "x", "input": "", "output": ""}, spec)


def test_alpaca_history_becomes_earlier_turns():
    record = {"instruction": "And 3+3?", "output": "6", "history": [["2+2?", "4"]], "system": "Maths."}
    assert normalize_alpaca(record, FormatSpec("alpaca")) == {
        "prompt": [S("Maths."), U("2+2?"), A("4"), U("And 3+3?")], "completion": [A("6")]}


def test_text_rows():
    assert normalize_text({"text": "hello"}, FormatSpec("text", "text")) == {"text": "hello"}
    with pytest.raises(RowProblem, match="column 'text' is missing or null"):
        normalize_text({}, FormatSpec("text", "text"))


def test_columns_with_templates_and_plain_mapping():
    record = {"ticket": "Printer broken.\r\nPlease help.", "reply": "On it."}
    spec = FormatSpec("columns", prompt_template="Ticket:\n{ticket}", completion_template="{reply}")
    assert normalize_columns(record, spec) == {"prompt": [U("Ticket:\nPrinter broken.\r\nPlease help.")], "completion": [A("On it.")]}
    plain = FormatSpec("columns", "ticket", "reply", system_prompt="Support bot.")
    assert normalize_columns(record, plain) == {"prompt": [S("Support bot."), U("Printer broken.\r\nPlease help.")], "completion": [A("On it.")]}
    with pytest.raises(RowProblem) as exc:
        normalize_columns({"ticket": "x", "reply": ""}, plain)
    assert (exc.value.column, exc.value.message) == ("reply", "the completion ('reply') is empty")


def test_template_placeholders_and_escapes():
    assert template_fields("Summarise {dialogue} in {{JSON}} for {who}") == ["dialogue", "who"]
    assert render_template("{a} {{b}} {c d}", {"a": 1, "c d": "x"}) == "1 {b} x"
    with pytest.raises(RowProblem, match="column 'a' is missing or null"):
        render_template("{a}", {"a": None})


def test_classification_default_template_lists_labels():
    spec = FormatSpec("classification", "text", "label", labels=["anger", "fear", "joy"])
    row = normalize_classification({"text": "I won!", "label": "joy"}, spec)
    assert row == {
        "prompt": [U("Classify the text into one of: anger, fear, joy.\n\nText: I won!\nAnswer with the label only.")],
        "completion": [A("joy")],
        "label": "joy",
    }
    numeric = normalize_classification({"text": "ok", "label": 3}, FormatSpec("classification", "text", "label", labels=["1", "3"]))
    assert numeric["label"] == "3" and numeric["completion"] == [A("3")]
    with pytest.raises(RowProblem, match="label column 'label' is empty"):
        normalize_classification({"text": "x", "label": " "}, spec)


def test_classification_custom_template_may_use_labels():
    spec = FormatSpec("classification", "sentence", "label", prompt_template="{sentence}\nOptions: {labels}", labels=["a", "b"])
    row = normalize_classification({"sentence": "hm", "label": "b"}, spec)
    assert row["prompt"] == [U("hm\nOptions: a, b")]


def test_template_with_only_empty_values_is_an_empty_prompt():
    spec = FormatSpec("columns", prompt_template="Summarize:\n{dialogue}", completion_template="{summary}")
    with pytest.raises(RowProblem) as exc:
        normalize_columns({"dialogue": " ", "summary": "s"}, spec)
    assert (exc.value.column, exc.value.message) == ("dialogue", "the prompt is empty: the template's columns ('dialogue') are empty")
    optional = FormatSpec("columns", prompt_template="{q}\n{context}", completion_template="{a}")
    assert normalize_columns({"q": "Why?", "context": "", "a": "Because."}, optional)["prompt"] == [U("Why?\n")]
