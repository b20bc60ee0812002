"""Real files nobody here wrote (../shared/datasets): each loads with the right
format or mapping and validates usable. Skips visibly where the folder is absent."""
from __future__ import annotations

import pytest

from finetune_core.data.dataset import DataMapping, inspect_file, prepare_data

EMOTION = {"anger", "fear", "joy", "love", "sadness", "surprise"}


@pytest.mark.parametrize("name, fmt, rows, total", [
    ("samsum_train.json", "columns", 14731, 14732),  # one row has an empty dialogue
    ("samsum_val.json", "columns", 818, 818),
    ("dialogsum_dev.jsonl", "columns", 500, 500),
    ("emotion_train.jsonl", "classification", 16000, 16000),
    ("emotion_validation.jsonl", "classification", 2000, 2000),
    ("yelp5_train.json", "classification", 4000, 4000),
    ("lf_alpaca_en_demo.json", "alpaca", 999, 999),
    ("lf_identity.json", "alpaca", 91, 91),
    ("lf_glaive_toolcall_en_demo.json", "sharegpt", 300, 300),
    ("fastchat_dummy_conversation.json", "sharegpt", 500, 500),
])
def test_detected_and_usable(shared_datasets, name, fmt, rows, total):
    report = prepare_data(DataMapping(str(shared_datasets / name)))
    assert (report.format, len(report.rows), report.total_rows, report.usable) == (fmt, rows, total, True)


def test_samsum_explicit_mapping_keeps_crlf(shared_datasets):
    opts = DataMapping(str(shared_datasets / "samsum_train.json"), prompt_template="Summarize this dialog:\n{dialogue}",
                       completion_template="{summary}")
    report = prepare_data(opts)
    assert report.format == "columns" and report.usable and len(report.rows) == 14731
    assert report.rows[0]["prompt"][0]["content"] == (
        "Summarize this dialog:\nAmanda: I baked  cookies. Do you want some?\r\nJerry: Sure!\r\n"
        "Amanda: I'll bring you tomorrow :-)")
    assert report.rows[0]["completion"][0]["content"] == "Amanda baked cookies and will bring Jerry some tomorrow."
    assert [(i.row, i.column) for i in report.issues] == [(6055, "dialogue")]


def test_dialogsum_guessed_mapping(shared_datasets):
    report = prepare_data(DataMapping(str(shared_datasets / "dialogsum_dev.jsonl")))
    assert report.spec.prompt_column == "dialogue" and report.spec.completion_column == "summary"
    assert report.rows[0]["prompt"][0]["content"].startswith("#Person1#: Hello, how are you doing today?")


def test_classification_label_sets(shared_datasets):
    emotion = prepare_data(DataMapping(str(shared_datasets / "emotion_validation.jsonl")))
    assert set(emotion.labels) == EMOTION and sum(emotion.labels.values()) == 2000
    assert emotion.rows[0]["prompt"][0]["content"].startswith(
        "Classify the text into one of: anger, fear, joy, love, sadness, surprise.\n\nText: ")
    yelp = prepare_data(DataMapping(str(shared_datasets / "yelp5_train.json")))
    assert yelp.labels == {"negative": 794, "neutral": 772, "positive": 812, "very negative": 839, "very positive": 783}
    assert yelp.spec.prompt_column == "sentence"


def test_glaive_tool_calls_become_turns(shared_datasets):
    report = prepare_data(DataMapping(str(shared_datasets / "lf_glaive_toolcall_en_demo.json")))
    first = report.rows[0]["prompt"]
    assert first[0]["role"] == "system" and "search_recipes" in first[0]["content"]
    roles = [m["role"] for m in first[1:]]
    assert roles == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert first[4]["content"].startswith('{"name": "search_recipes"')
    assert first[5]["content"].startswith("Tool result:\n")


def test_token_stats_on_a_real_file(shared_datasets, tokenizer):
    out = inspect_file(DataMapping(str(shared_datasets / "lf_identity.json")), tokenizer, max_length=512)
    tokens = out["stats"]["tokens"]
    assert tokens["rows_measured"] == 91 and tokens["over_max_length"] == 0
    assert out["stats"]["duplicates"]["count"] == 0 and out["usable"]
