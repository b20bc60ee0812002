"""Data input limits of a public deployment (issue #16): data files and mapping
templates are refused before the work starts, with a message naming the field,
row or column, and a refused upload leaves no file (config limits:
tests/test_config_limits.py).

Each test writes its own small fixture in tmp_path and sets small limits through
``STUDIO_LIMIT_*``, so the attacks are measured at a size that runs in
milliseconds.

    .venv/bin/python -m pytest -q -m "" tests/test_data_limits.py
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pytest

from finetune_core.config import ConfigError, RunConfig
from finetune_core.data.checks import ROWS_PER_GROUP, find_duplicates
from finetune_core.data.cells import record_problem
from finetune_core.data.load import load_records, without_paths
from finetune_core.data.dataset import DataMapping, prepare_data
from finetune_core.limits import limits
from ui.data_tab import inspect_data, load_eval_upload, load_upload, view_values


# -- data files: shared helpers ----------------------------------------------------
def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def qa_rows(n: int) -> list[dict]:
    return [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(1, n + 1)]


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, compression="zstd")
    return path


@pytest.fixture()
def uploads(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "uploads"
    monkeypatch.setenv("STUDIO_UPLOADS_DIR", str(folder))
    return folder


def kept(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- 2. mapping templates ----------------------------------------------------------
def notes_csv(path: Path, n: int = 50) -> Path:
    path.write_text("text,summary\n" + "".join(f"note {i} about a printer,summary {i}\n" for i in range(n)))
    return path


def test_template_with_thousands_of_placeholders_refused_before_rendering(tmp_path):
    start = time.perf_counter()
    report = prepare_data(DataMapping(str(notes_csv(tmp_path / "n.csv")), prompt_template="{text}" * 10_000,
                                      completion_column="summary"))
    assert time.perf_counter() - start < 1
    assert report.fatal and not report.rows and not report.unreadable
    assert report.issues[-1].message == (
        "the length of prompt_template in characters is 60,000, over this server's limit of 8,000 "
        "(setting STUDIO_LIMIT_TEMPLATE_CHARS)")
    # Short enough in characters, still too many placeholders:
    report = prepare_data(DataMapping(str(tmp_path / "n.csv"), prompt_template="{text}" * 1000,
                                      completion_column="summary"))
    assert report.fatal and report.issues[-1].message == (
        "the number of {column} placeholders in prompt_template is 1,000, over this server's limit of 32 "
        "(setting STUDIO_LIMIT_TEMPLATE_PLACEHOLDERS)")


@pytest.mark.parametrize("name", ["prompt_template", "completion_template", "system_prompt"])
def test_template_length_is_limited_for_each_field(tmp_path, monkeypatch, name):
    monkeypatch.setenv("STUDIO_LIMIT_TEMPLATE_CHARS", "100")
    values = {"prompt_template": "{text}", "completion_template": "{summary}", name: "x" * 150 + "{text}"}
    report = prepare_data(DataMapping(str(notes_csv(tmp_path / "n.csv")), data_format="columns", **values))
    assert report.fatal and f"the length of {name} in characters is 156, over this server's limit of 100" in \
        report.issues[-1].message
    with pytest.raises(ConfigError, match=f"the length of {name} in characters is 156"):
        RunConfig.from_dict(values)


def test_template_with_a_broken_character_refused_by_name(tmp_path):
    report = prepare_data(DataMapping(str(notes_csv(tmp_path / "n.csv")), prompt_template="Sum\ud800: {text}",
                                      completion_column="summary"))
    assert report.fatal and "prompt_template holds a broken character" in report.issues[-1].message


def test_data_tab_shows_the_template_limit_and_keeps_the_columns(tmp_path):
    source = {"path": str(notes_csv(tmp_path / "n.csv")), "name": "n", "sample": ""}
    view = inspect_data(source, DataMapping(prompt_template="{text}" * 100, completion_column="summary"))
    assert view.data_state is None and view.columns == ["text", "summary"]
    assert "placeholders in prompt\\_template is 100" in view.status and "Apply mapping" in view.status


# -- 3. rows, columns, duplicates --------------------------------------------------
def test_parquet_row_count_read_from_the_footer_before_decoding(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setenv("STUDIO_LIMIT_DATA_ROWS", "100")
    path = write_parquet(tmp_path / "many.parquet", {"prompt": ["Same?"] * 1000, "completion": ["Yes."] * 1000})

    def no_decoding(*args, **kwargs):
        raise AssertionError("rows were decoded")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", no_decoding)
    monkeypatch.setattr(pq.ParquetFile, "read", no_decoding)
    monkeypatch.setattr(pq, "read_table", no_decoding)
    loaded = load_records(path)
    assert loaded.fatal and not loaded.records
    assert loaded.issues[0].message == ("the number of rows is 1,000, over this server's limit of 100 "
                                        "(setting STUDIO_LIMIT_DATA_ROWS)")


def test_parquet_compression_bomb_refused_from_the_footer(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("STUDIO_LIMIT_DATA_BYTES", "1000000")
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"prompt": ["y" * 50_000] * 200}), path, compression="zstd", use_dictionary=False)
    assert path.stat().st_size < 20_000  # 10 MB of text once decompressed
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda *a, **k: pytest.fail("rows were decoded"))
    loaded = load_records(path)
    assert loaded.fatal and loaded.issues[0].message.startswith(
        "the size of the file's data once decompressed (bytes) is 10,00")
    assert loaded.issues[0].message.endswith("over this server's limit of 1,000,000 (setting STUDIO_LIMIT_DATA_BYTES)")


def test_parquet_value_repeated_by_its_dictionary_refused_before_it_expands(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("STUDIO_LIMIT_DATA_BYTES", "5000000")
    # One 100,000-character value stored once and referenced by 1,000 rows: 100 MB of text, a few KB on disk.
    prompt = pa.DictionaryArray.from_arrays(pa.array([0] * 1000, pa.int32()), pa.array(["x" * 100_000]))
    path = tmp_path / "dictionary.parquet"
    pq.write_table(pa.table({"prompt": prompt, "completion": ["a"] * 1000}), path, compression="zstd")
    assert path.stat().st_size < 5000
    loaded = load_records(path)
    assert loaded.fatal and not loaded.records  # refused at the first batch, before any Python string was made
    assert loaded.issues[0].message == ("the size of the file's data once decoded (bytes, so far) is 25,600,256, "
                                        "over this server's limit of 5,000,000 (setting STUDIO_LIMIT_DATA_BYTES)")


def test_parquet_under_the_limit_still_loads_in_batches(tmp_path):
    path = write_parquet(tmp_path / "ok.parquet", {"prompt": [f"Q{i}?" for i in range(2500)],
                                                   "completion": [f"A{i}." for i in range(2500)]})
    loaded = load_records(path)
    assert not loaded.issues and len(loaded.records) == 2500 and loaded.row_numbers[-1] == 2500


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_jsonl_and_csv_stop_reading_past_the_row_limit(tmp_path, monkeypatch, suffix):
    monkeypatch.setenv("STUDIO_LIMIT_DATA_ROWS", "10")
    path = tmp_path / f"rows{suffix}"
    if suffix == ".jsonl":  # lines after the limit are broken: reading them would add row issues
        path.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(10)) + "{broken\n" * 50)
    else:
        path.write_text("prompt,completion\n" + "q,a\n" * 10 + "q,a,extra\n" * 50)
    loaded = load_records(path)
    assert loaded.fatal and loaded.total_rows == 10
    assert [i.message for i in loaded.issues] == [
        "the file has more than 10 rows, this server's limit (setting STUDIO_LIMIT_DATA_ROWS)"]


def test_json_array_and_object_of_columns_over_the_row_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_DATA_ROWS", "10")
    (tmp_path / "a.json").write_text(json.dumps(qa_rows(11)))
    (tmp_path / "c.json").write_text(json.dumps({"prompt": ["q"] * 11, "completion": ["a"] * 11}))
    for name in ("a.json", "c.json"):
        loaded = load_records(tmp_path / name)
        assert loaded.fatal and "the number of rows is 11, over this server's limit of 10" in loaded.issues[0].message


def test_columns_limited_in_every_format(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_DATA_COLUMNS", "5")
    wide = {f"c{i}": [f"v{i}"] for i in range(8)}
    (tmp_path / "w.csv").write_text(",".join(wide) + "\n" + ",".join(v[0] for v in wide.values()) + "\n")
    jsonl(tmp_path / "w.jsonl", [{k: v[0] for k, v in wide.items()}])
    (tmp_path / "w.json").write_text(json.dumps(wide))
    write_parquet(tmp_path / "w.parquet", wide)
    for name in ("w.csv", "w.jsonl", "w.json", "w.parquet"):
        loaded = load_records(tmp_path / name)
        assert loaded.fatal and loaded.issues[-1].message == (
            "the number of columns is 8, over this server's limit of 5 (setting STUDIO_LIMIT_DATA_COLUMNS)"), name


def test_duplicate_list_is_truncated_with_a_count_of_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_DUPLICATES_LISTED", "3")
    rows = [{"prompt": f"Q{i % 10}?", "completion": "A."} for i in range(5000)]  # 10 groups of 500
    path = jsonl(tmp_path / "dups.jsonl", rows)
    report = prepare_data(DataMapping(str(path)))
    dups = find_duplicates(report.rows, report.row_numbers)
    assert dups["count"] == 4990 and dups["groups"] == 10 and len(dups["examples"]) == 3
    assert dups["examples"][0] == list(range(1, 5000, 10))[:ROWS_PER_GROUP]
    assert dups["not_listed"] == {"groups": 7, "rows": 5000 - 3 * ROWS_PER_GROUP}
    view = inspect_data({"path": str(path), "name": "dups", "sample": ""}, DataMapping())
    line = next(x for x in view.summary.splitlines() if x.startswith("- Exact duplicates"))
    assert line == ("- Exact duplicates: 4990 (rows 1/11/21/31/41…, 2/12/22/32/42…, 3/13/23/33/43…, "
                    "… 7 more groups)")
    assert len(view.summary) < 2000  # was every row number: 6.9 MB for a million copies


def test_small_duplicate_reports_keep_their_shape():
    rows = [{"text": "a"}, {"text": "b"}, {"text": "a"}]
    assert find_duplicates(rows) == {"count": 1, "groups": 1, "examples": [[1, 3]]}


# -- 4. JSON nesting and refused uploads -------------------------------------------
def test_json_nested_200000_deep_is_a_clear_file_issue(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    loaded = load_records(path)
    assert loaded.fatal and loaded.issues[0].message == (
        "the JSON is nested deeper than this server's limit of 64 levels (setting STUDIO_LIMIT_JSON_DEPTH)")


def test_nested_rows_over_the_depth_limit_are_bad_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_JSON_DEPTH", "5")
    deep_line = '{"prompt": "q", "completion": "a", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"
    nested = {"prompt": "q", "completion": "a", "meta": [[[[["too deep"]]]]]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(qa_rows(1)[0]) + "\n" + deep_line + "\n" + json.dumps(nested) + "\n")
    loaded = load_records(path)
    assert len(loaded.records) == 1
    assert [(i.row, i.column) for i in loaded.issues] == [(2, None), (3, "meta")]
    assert loaded.issues[0].message.startswith("line 2 is nested deeper than this server's limit of 5 levels")
    assert loaded.issues[1].message.startswith("column 'meta' is nested deeper than this server's limit of 5")


def test_json_number_over_pythons_digit_limit_is_a_row_issue(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"prompt": "q", "completion": "a", "n": ' + "9" * 5000 + "}\n" + json.dumps(qa_rows(1)[0]) + "\n")
    loaded = load_records(path)
    assert len(loaded.records) == 1 and loaded.issues[0].row == 1
    assert loaded.issues[0].message.startswith("invalid JSON on line 1: Exceeds the limit")


def test_an_upload_that_cannot_be_read_is_removed(tmp_path, uploads):
    bomb = tmp_path / "deep.json"
    bomb.write_text("[" * 200_000 + "]" * 200_000)
    view = load_upload(str(bomb))
    assert kept(uploads) == []
    assert view.source is None and view.data_state is None
    assert "nested deeper than this server" in view.status and "upload it again" in view.status
    assert "nested deeper" in view_values(view)[2]


def test_an_upload_with_only_mapping_problems_is_kept(tmp_path, uploads):
    path = tmp_path / "cols.jsonl"
    jsonl(path, [{"a": "x", "b": "y"}])
    view = load_upload(str(path))
    assert view.data_state is None and len(kept(uploads)) == 1  # the mapping can still make it usable
    assert view.source is not None and "Apply mapping" in view.status


def test_an_evaluation_upload_that_cannot_be_read_is_removed(tmp_path, uploads):
    train = load_upload(str(jsonl(tmp_path / "train.jsonl", qa_rows(5))))
    (tmp_path / "eval.json").write_text("[" * 200_000 + "]" * 200_000)
    view = load_eval_upload(train.source, str(tmp_path / "eval.json"))
    assert kept(uploads) == [Path(train.source["path"]).name]
    assert view.source == {**train.source, "eval_path": "", "eval_name": ""}
    assert view.data_state is None and "not usable" in view.status


def test_a_failed_inspection_removes_the_copy_and_says_so(tmp_path, uploads, monkeypatch, caplog):
    import ui.data_tab

    def crash(*args, **kwargs):
        raise TypeError("an unexpected bug")

    monkeypatch.setattr(ui.data_tab, "inspect_mapping", crash)
    with pytest.raises(gr.Error, match="Internal error: TypeError: an unexpected bug"):
        load_upload(str(jsonl(tmp_path / "ok.jsonl", qa_rows(3))))
    assert kept(uploads) == []
    assert "in crash" in caplog.text  # the bug's traceback is in the app log


# -- 5. lone surrogates --------------------------------------------------------------
def test_lone_surrogate_makes_a_bad_row_naming_row_and_column(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "a\\ud800b", "completion": "ok"}\n'
                    '{"prompt": "fine", "completion": "ok"}\n'
                    '{"prompt": "q", "completion": "ok", "\\udc00key": "x"}\n')
    view = inspect_data({"path": str(path), "name": "s", "sample": ""}, DataMapping())
    report = prepare_data(DataMapping(str(path)))
    assert [(i.row, i.column) for i in report.issues] == [(1, "prompt"), (3, "\\udc00key")]
    assert "column 'prompt' holds a broken character (a lone UTF-16 surrogate" in report.issues[0].message
    assert len(report.rows) == 1 and view.data_state is not None and "2 rows with problems" in view.status


def test_surrogate_escapes_inside_messages_and_valid_pairs(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi \\ud83d\\ude00"}, '
                    '{"role": "assistant", "content": "ok"}]}\n'  # an emoji as a valid pair: fine
                    '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\\udead"}]}\n')
    loaded = load_records(path)
    assert loaded.records[0]["messages"][0]["content"] == "hi \U0001f600"
    assert [(i.row, i.column) for i in loaded.issues] == [(2, "messages")]
    assert "broken character" in loaded.issues[0].message


def test_lone_surrogate_in_a_parquet_or_csv_cell(tmp_path):
    write_parquet(tmp_path / "s.parquet", {"prompt": ["fine", "also fine"], "completion": ["ok", "ok"]})
    assert not load_records(tmp_path / "s.parquet").issues  # Arrow text is valid UTF-8 by construction
    (tmp_path / "s.csv").write_bytes(b"prompt,completion\nq\xed\xa0\x80,a\n")  # a surrogate encoded as UTF-8
    loaded = load_records(tmp_path / "s.csv")
    assert loaded.fatal and loaded.issues[0].message.startswith("not UTF-8: byte 0xed at offset 19")
    assert record_problem({"prompt": "x", "completion": "a\udfffb"}, limits()) == (
        "completion", "column 'completion' holds a broken character (a lone UTF-16 surrogate such as \\ud800, "
        "often half of an emoji); fix that text in the file")


# -- cells over cell_chars -------------------------------------------------------------
def test_cell_over_the_character_limit_names_row_and_column(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_CELL_CHARS", "50")
    long = "x" * 60
    jsonl(tmp_path / "c.jsonl", [*qa_rows(1), {"prompt": "q", "completion": long},
                                 {"messages": [{"role": "user", "content": "y" * 30}, {"role": "assistant",
                                                                                        "content": "z" * 30}]}])
    (tmp_path / "c.csv").write_text(f"prompt,completion\nq,a\nq,{long}\n")
    write_parquet(tmp_path / "c.parquet", {"prompt": ["q", "q"], "completion": ["a", long]})
    expected = ("column 'completion' is longer than this server's limit of 50 characters per cell "
                "(setting STUDIO_LIMIT_CELL_CHARS)")
    for name in ("c.jsonl", "c.csv", "c.parquet"):
        loaded = load_records(tmp_path / name)
        assert (loaded.issues[0].row, loaded.issues[0].column, loaded.issues[0].message) == (2, "completion", expected)
    nested = load_records(tmp_path / "c.jsonl").issues[1]  # 60 characters spread over a message list
    assert (nested.row, nested.column) == (3, "messages") and "longer than" in nested.message


def test_csv_cell_past_the_csv_readers_own_cap_is_a_named_bad_row(tmp_path, monkeypatch):
    # The csv module alone would stop the whole file at 131,072 characters, naming no column.
    monkeypatch.setenv("STUDIO_LIMIT_CELL_CHARS", "200000")
    (tmp_path / "big.csv").write_text("prompt,completion\nq,a\nq," + "x" * 300_000 + "\nq,b\n")
    loaded = load_records(tmp_path / "big.csv")
    assert not loaded.fatal and len(loaded.records) == 2
    assert (loaded.issues[0].row, loaded.issues[0].column) == (2, "completion")
    assert "longer than this server's limit of 200,000 characters per cell" in loaded.issues[0].message


# -- 7. no server paths in messages ----------------------------------------------------
def test_data_errors_never_show_the_server_path(tmp_path, uploads):
    secret = tmp_path / "server-secret-dir"
    secret.mkdir()
    (secret / "bad.parquet").write_bytes(b"PAR1 this is not parquet at all")
    (secret / "folder.json").mkdir()  # a directory where a file was expected
    for name in ("bad.parquet", "folder.json"):
        report = prepare_data(DataMapping(str(secret / name)))
        assert report.fatal and report.issues, name
        for issue in report.issues:
            assert "server-secret-dir" not in issue.message and str(tmp_path) not in issue.message, issue.message
    assert "magic bytes not found" in prepare_data(DataMapping(str(secret / "bad.parquet"))).issues[0].message
    view = load_upload(str(secret / "bad.parquet"))
    shown = " ".join(str(v) for v in view_values(view)[2:5])
    assert "cannot read the Parquet file" in shown
    assert str(uploads) not in shown and "server-secret-dir" not in shown and kept(uploads) == []


def test_without_paths_scrubs_windows_and_posix_paths():
    exc = OSError("failed on '/srv/app/uploads/x.parquet' and C:\\data\\y.csv")
    assert without_paths(exc, Path("/elsewhere/z.parquet")) == "failed on 'the file' and the file"
