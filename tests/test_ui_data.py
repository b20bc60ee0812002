"""Data tab handlers, called as plain functions (no browser, no training).

    .venv/bin/python -m pytest -q tests/test_ui_data.py
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import pytest

from finetune_core.data.dataset import prepare_data
from finetune_core.data.samples import SAMPLES
from finetune_core.data.mapping import DataMapping
from ui.context import AppContext
from ui_support import shared_for
from ui.data_tab import (MASKED, TRAINED, build, display_name, inspect_data, load_sample, load_upload,
                         md_text, save_upload, TokenizerCache, view_values, with_eval_file)
from ui.train_tab import build_config

STATE_KEYS = {"mapping", "name", "rows"}
GENERATED = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{12}\.(jsonl|json|csv|tsv|parquet)$")
FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture()
def uploads(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "uploads"
    monkeypatch.setenv("STUDIO_UPLOADS_DIR", str(folder))
    return folder


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pc_lines(n: int) -> list[str]:
    return [json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) for i in range(1, n + 1)]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_sample_sets_a_usable_data_state(name, tokenizer):
    view = load_sample(name, tokenizer)
    state = view.data_state
    assert state is not None, view.status
    assert set(state) == STATE_KEYS and set(state["mapping"]) == set(DataMapping.names())
    entry = SAMPLES[name]
    mapping = state["mapping"]
    assert mapping["data_path"] == entry["data_path"] and mapping["data_format"] == entry["data_format"]
    assert state["name"] == name and state["mapping"]["eval_path"] == "" and state["mapping"]["eval_fraction"] == 0.1
    for key in ("prompt_column", "completion_column", "prompt_template"):
        assert state["mapping"][key] == entry.get(key, "")
    assert f"Ready: {state['rows']} rows. Next: the Train tab." in view.status
    assert entry["description"] in view_values(view)[9]
    # The Train tab accepts it, and a run re-reads exactly the rows inspected here.
    cfg = build_config({}, state)
    assert prepare_data(cfg.data).usable
    assert len(prepare_data(cfg.data).rows) == state["rows"]


def test_upload_is_copied_under_a_generated_name(uploads, tmp_path, tokenizer):
    src = write_lines(tmp_path / "My Data (v2).jsonl", pc_lines(30))
    view = load_upload(str(src), tokenizer)
    copied = Path(view.data_state["mapping"]["data_path"])
    assert copied.parent == uploads.resolve() and GENERATED.match(copied.name)
    assert copied.read_bytes() == src.read_bytes()
    assert view.data_state["name"] == "My-Data-v2"
    assert view.data_state["rows"] == 30 and view.data_state["mapping"]["data_format"] == "prompt_completion"
    assert src.exists()  # the upload itself is left alone


def test_broken_jsonl_line_57_is_named(uploads, tmp_path, tokenizer):
    lines = pc_lines(60)
    lines[56] = '{"prompt": "Question 57?", "completion": '
    src = write_lines(tmp_path / "broken.jsonl", lines)
    view = load_upload(str(src), tokenizer, DataMapping(drop_bad_rows=False))
    row = view.issues[view.issues["row"] == "57"]
    assert len(row) == 1 and "line 57" in row.iloc[0]["message"]
    assert view.data_state is None
    assert "row 57" in view.status and "Drop bad rows" in view.status
    dropped = inspect_data(view.source, DataMapping(drop_bad_rows=True), tokenizer)
    assert dropped.data_state["rows"] == 59 and "1 row with problems will be dropped" in dropped.status


def test_oversize_upload_is_refused_and_nothing_written(uploads, tmp_path):
    src = write_lines(tmp_path / "big.jsonl", pc_lines(200))
    with pytest.raises(gr.Error, match="over this server's 0.001 MB upload limit"):
        load_upload(str(src), None, max_file_mb=0.001)
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.parametrize("filename", ["page.html", "tool.exe", "noext", "data.jsonl.html"])
def test_disallowed_extension_is_refused(uploads, tmp_path, filename):
    src = tmp_path / filename
    src.write_text('{"prompt": "a", "completion": "b"}\n', encoding="utf-8")
    with pytest.raises(gr.Error, match="not accepted"):
        save_upload(str(src), 100)
    assert not uploads.exists() or not any(uploads.iterdir())


def test_hostile_file_names_land_inside_the_uploads_folder(uploads, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    write_lines(tmp_path / "x.jsonl", pc_lines(3))
    semicolon = write_lines(tmp_path / "a;rm -rf.csv", ["prompt,completion", "hi,there"])
    saved = [save_upload(str(tmp_path / "a" / "b" / ".." / ".." / "x.jsonl"), 100), save_upload(str(semicolon), 100)]
    assert sorted(p.name for p in uploads.iterdir()) == sorted(p.name for p in saved)
    for path in saved:
        assert path.parent == uploads.resolve() and GENERATED.match(path.name)
    assert saved[1].suffix == ".csv"
    assert display_name("../../x.jsonl") == "x" and display_name("a;rm -rf.csv") == "a-rm--rf"
    assert display_name("<script>.csv") == "script"


def test_training_view_marks_completion_tokens_as_trained(tokenizer):
    view = load_sample("Fact cards (prompt/completion)", tokenizer)
    assert {label for _, label in view.example} == {TRAINED, MASKED}
    trained = "".join(text for text, label in view.example if label == TRAINED)
    masked = "".join(text for text, label in view.example if label == MASKED)
    first = view.preview.iloc[0]
    assert first["completion"] in trained and first["completion"] not in masked
    assert first["prompt"] in masked and first["prompt"] not in trained
    assert view.example[0][1] == MASKED and view.example[-1][1] == TRAINED


def test_classification_label_counts(tokenizer):
    view = load_sample("Customer intents (classification)", tokenizer)
    counts = dict(zip(view.labels["label"], view.labels["count"]))
    assert len(counts) == 5 and set(counts.values()) == {90}
    assert "refund\\_request (90)" in view.summary
    labels_update = view_values(view)[5]
    assert labels_update["visible"] is True
    fixture = inspect_data({"path": str(FIXTURES / "classification.csv"), "name": "c"}, DataMapping(), tokenizer)
    assert fixture.data_state["mapping"]["data_format"] == "classification" and not fixture.labels.empty
    assert view_values(load_sample("Fact cards (prompt/completion)", tokenizer))[5]["visible"] is False


def test_token_stats_and_max_length(tokenizer):
    view = load_sample("CALC-9 calculator chats (multi-turn messages)", tokenizer, max_length=64)
    assert view.tokens["max_length"] == 64 and view.tokens["over_max_length"] > 0
    assert len(view.lengths.axes) == 3
    assert "the prompt alone is longer than the maximum length (64 tokens)" in view.summary
    longer = load_sample("CALC-9 calculator chats (multi-turn messages)", tokenizer, max_length=128).summary
    assert re.search(r"\*\*Rows \d+, \d+, .*: longer than the maximum length \(128 tokens\)\*\*; the end of the "
                     r"answer is cut off", longer)  # the rows are named by number
    for summary in (view.summary, longer):
        assert "max_length" not in summary and "nothing left to learn" not in summary
    plain = load_sample("CALC-9 calculator chats (multi-turn messages)", None)  # no tokenizer: no stats, still usable
    assert plain.tokens is None and plain.lengths is None and plain.data_state is not None


def test_a_prompt_longer_than_the_max_length_is_named_by_row_in_plain_words(tmp_path, tokenizer):
    lines = pc_lines(12)
    lines[6] = json.dumps({"prompt": "Summarise: " + "word " * 120, "completion": "Short."})  # file row 7
    view = inspect_data({"path": str(write_lines(tmp_path / "long.jsonl", lines)), "name": "long"}, DataMapping(),
                        tokenizer, max_length=64)
    assert ("**Row 7: the prompt alone is longer than the maximum length (64 tokens), so nothing of the answer "
            "would be learned.** Raise the max length or shorten the prompt.") in view.summary
    assert "cut off" not in view.summary  # row 7 is the only long row, and it is said once


def test_a_file_problem_reads_as_one_plain_sentence(uploads, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    view = load_upload(str(empty))
    assert view.status == ("**Not usable:** The file is empty: it needs at least one example. "
                           "Fix the file and upload it again.")  # was "Not usable: file: the file is empty"
    rows = write_lines(tmp_path / "rows.jsonl", ['{"prompt": "", "completion": "a"}', "[1, 2]",
                                                 '{"prompt": "q", "completion": "a"}'])
    status = inspect_data({"path": str(rows), "name": "rows"}, DataMapping(drop_bad_rows=False)).status
    assert status.startswith("**Not usable yet:** 2 of 3 rows have problems, e.g. row 2: line 2 is a list, not an "
                             "example")
    assert "; row 1, column 'prompt': the prompt" in status


def test_mapping_problems_make_the_data_unusable(tmp_path):
    src = write_lines(tmp_path / "tickets.csv", ["body,answer", "printer jams,restart it"])
    source = {"path": str(src), "name": "tickets"}
    view = inspect_data(source, DataMapping(data_format="columns", prompt_column="body", completion_column="reply"))
    assert view.data_state is None and "Not usable" in view.status and "'reply'" in view.status
    good = inspect_data(source, DataMapping(prompt_column="body", completion_column="answer"))
    chosen = good.data_state["mapping"]
    assert chosen["data_format"] == "columns" and chosen["completion_column"] == "answer"
    assert good.columns == ["body", "answer"]


def test_the_column_pickers_are_named_for_the_format_found(tmp_path):
    """A question/answer file has a prompt and a completion column; only a classification
    file has a text and a label column (the pickers said "for classification" for every file)."""
    qa = write_lines(tmp_path / "qa.csv", ["question,answer"] + [f"What is {i}+{i}?,{2 * i}" for i in range(12)])
    values = view_values(inspect_data({"path": str(qa), "name": "qa"}, DataMapping()))
    prompt, completion = values[11]["label"], values[12]["label"]
    assert (prompt, completion) == ("Prompt column", "Completion column (the answer to learn)")
    intents = view_values(load_sample("Customer intents (classification)", None))
    assert intents[11]["label"].startswith("Text column") and intents[12]["label"].startswith("Label column")
    chats = view_values(load_sample("CALC-9 calculator chats (multi-turn messages)", None))
    assert chats[11]["label"] == "Conversation column" and "not used" in chats[12]["label"]
    for update in values[11:13] + chats[11:13]:
        assert "classification" not in update["label"]


def test_separate_evaluation_file_and_leakage(uploads, tmp_path):
    train = write_lines(tmp_path / "train.jsonl", pc_lines(20))
    held = write_lines(tmp_path / "held.jsonl", pc_lines(25)[18:])  # rows 19, 20 are also in training
    view = load_upload(str(train))
    source = with_eval_file(view.source, str(held), 100)
    assert Path(source["eval_path"]).parent == uploads.resolve()
    both = inspect_data(source, DataMapping())
    assert both.data_state["mapping"]["eval_path"] == source["eval_path"]
    assert "2 exact" in both.summary and "held.jsonl" not in both.summary
    bad = write_lines(tmp_path / "bad.jsonl", pc_lines(1) + ['{"prompt": "x", "completion": ""}'] + pc_lines(1))
    unusable = inspect_data(with_eval_file(view.source, str(bad), 100), DataMapping(drop_bad_rows=False))
    assert unusable.data_state is None and "evaluation file" in unusable.status and "row 2" in unusable.status
    assert "eval file, row 2" in set(unusable.issues["row"])
    assert with_eval_file(source, None, 100)["eval_path"] == ""


def test_file_content_is_escaped_in_markdown(tmp_path):
    src = write_lines(tmp_path / "x.csv", ["text,label"] + [f"message {i},<img src=x onerror=alert(1)>" for i in range(6)]
                      + [f"other {i},ok" for i in range(6)])
    view = inspect_data({"path": str(src), "name": "x"}, DataMapping())
    assert "<img" not in view.summary and "&lt;img" in view.summary
    assert "<b>" not in md_text("<b>bold</b>")


def test_bad_tokenizer_source_only_skips_token_stats():
    tok, problem = TokenizerCache().for_stats("not a model id", "bundled")
    assert tok is None and "not a Hub model id" in problem
    view = load_sample("Fact cards (prompt/completion)", None, token_problem=problem)
    assert view.data_state is not None and "Token statistics unavailable" in view.summary


def test_build_registers_the_guided_demo_hooks(tiny_model_dir):
    ctx = AppContext()
    ctx.settings.default_model = str(tiny_model_dir)
    with gr.Blocks() as demo:
        shared = shared_for(demo)
        parts = build(ctx, shared)
    outputs = parts.outputs
    assert outputs[0] is shared.data_state
    values = parts.load_sample("Customer intents (classification)")
    assert len(values) == len(outputs)
    assert values[0]["rows"] == 450 and values[0]["mapping"]["data_format"] == "classification"
    assert values[6] is not None  # token histogram from the tiny model's tokenizer
