"""Datasets by Hub id (finetune_core/data/hub.py, ui/data_hub.py, `inspect --hub`), offline.

A folder written here stands in for the Hub (``local_root``: the id owner/name is
the folder root/owner/name), laid out as a Hub dataset repo: JSON Lines files and
a README.md whose ``configs:`` block declares the configs and their splits, so
``datasets.load_dataset`` reads configs and splits the way it reads the Hub's.

    .venv/bin/python -m pytest -q tests/test_data_hub.py
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from finetune_core.__main__ import main as program
from finetune_core.data.hub import (HubDataError, HubRequest, check_dataset_id, describe, fetch_to_file,
                                    fill_from_hub, hub_error, list_configs, list_splits)
from finetune_core.data.mapping import DataMapping
from ui.data_hub import hub_token, load_hub, look_up
from ui.data_tab import load_upload

DATASET = "owner/notes"
GENERATED = re.compile(r"^hub-\d{8}-\d{6}-[0-9a-f]{12}\.jsonl$")
README = {"configs": [
    {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.jsonl"},
                                              {"split": "test", "path": "data/test.jsonl"}]},
    {"config_name": "short", "data_files": [{"split": "train", "path": "short/train.jsonl"}]},
]}
FIRST_SHARD = 30  # rows in data/train-00000.jsonl; data/train-00001.jsonl is broken on purpose
BAD_ROW = 7  # its completion is empty: the checks must name row 7


def _lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def qa(i: int) -> dict:
    return {"prompt": f"Which colour is ball {i}?", "completion": "red" if i % 2 else "blue", "source": f"s{i}"}


@pytest.fixture()
def hub_root(tmp_path) -> Path:
    """The stand-in Hub: owner/notes with configs default (train in two shards, test) and short."""
    repo = tmp_path / "hub" / DATASET
    (repo / "README.md").parent.mkdir(parents=True)
    (repo / "README.md").write_text(f"---\n{yaml.safe_dump(README, sort_keys=False)}---\n# Notes\n", encoding="utf-8")
    rows = [qa(i) for i in range(1, FIRST_SHARD + 1)]
    rows[BAD_ROW - 1]["completion"] = ""
    _lines(repo / "data/train-00000.jsonl", rows)
    # Past the first shard nothing can be read: a stream that stops at the limit never opens it.
    (repo / "data/train-00001.jsonl").write_text('{"prompt": "broken\n', encoding="utf-8")
    _lines(repo / "data/test.jsonl", [qa(i) for i in range(100, 104)])
    _lines(repo / "short/train.jsonl", [{"text": f"note {i}"} for i in range(3)])
    return tmp_path / "hub"


@pytest.fixture()
def uploads(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "uploads"
    monkeypatch.setenv("STUDIO_UPLOADS_DIR", str(folder))
    return folder


def test_configs_and_splits_are_listed_like_the_hub(hub_root):
    assert list_configs(DATASET, local_root=hub_root) == ["default", "short"]
    assert list_splits(DATASET, "default", local_root=hub_root) == ["train", "test"]
    # what "Look up" fills: the config asked for where the dataset has it, and its splits
    assert look_up(DATASET, "short", local_root=hub_root) == (["default", "short"], "short", ["train"], "train")
    assert look_up(DATASET, "gone", local_root=hub_root)[1:] == ("default", ["train", "test"], "train")


def test_hub_rows_get_the_same_view_as_an_upload(hub_root, uploads, tmp_path):
    view, rows, read = load_hub(DATASET, "default", "train", 12, local_root=hub_root)
    # the rows as read: numbered from 1 like the dataset's, every column
    assert list(rows.columns) == ["row", "prompt", "completion", "source"]
    assert rows["row"].tolist() == list(range(1, 11)) and rows["source"][0] == "s1"
    assert "Read 12 rows of owner/notes (config default, split train, first 12 rows)" in read
    # written under a server-made name in the uploads folder
    written = Path(view.source["path"])
    assert written.parent == uploads.resolve() and GENERATED.match(written.name)
    # the provenance travels in the mapping the Train tab reads
    mapping = view.data_state["mapping"]
    assert mapping["hub_source"] == "owner/notes?config=default&split=train&rows=12"
    assert mapping["data_path"] == str(written)
    # an upload of the same 12 rows gives the same checks, statistics and preview
    same = tmp_path / "same.jsonl"
    same.write_bytes(written.read_bytes())
    upload = load_upload(str(same))
    assert view.issues.equals(upload.issues) and view.preview.equals(upload.preview)
    assert view.status == upload.status
    assert view.summary.split("\n")[1:] == upload.summary.split("\n")[1:]  # the first line names the source
    assert view.summary.startswith("**owner/notes · default · train**")


def test_issues_name_the_datasets_row(hub_root, uploads):
    view, _, _ = load_hub(DATASET, "default", "train", 20, mapping=DataMapping(drop_bad_rows=False),
                          local_root=hub_root)
    assert view.issues.values.tolist() == [[str(BAD_ROW), "completion", "the completion ('completion') is empty"]]
    assert view.data_state is None and f"row {BAD_ROW}" in view.status
    kept, _, _ = load_hub(DATASET, "default", "train", 20, local_root=hub_root)  # dropping bad rows: usable
    assert kept.data_state["rows"] == 19 and BAD_ROW not in kept.preview["row"].tolist()


def test_the_row_limit_stops_the_stream(hub_root, tmp_path):
    got = fetch_to_file(HubRequest(DATASET, "default", "train", FIRST_SHARD), tmp_path / "out", local_root=hub_root)
    assert got.rows == FIRST_SHARD and len(got.path.read_text().splitlines()) == FIRST_SHARD
    # one row more needs the broken second shard: the stream had not read it before
    with pytest.raises(HubDataError, match=f"reading row {FIRST_SHARD + 1} failed") as failed:
        fetch_to_file(HubRequest(DATASET, "default", "train", FIRST_SHARD + 1), tmp_path / "out",
                      local_root=hub_root)
    assert str(hub_root) not in str(failed.value)  # no server path in the message
    assert [p.name for p in (tmp_path / "out").iterdir()] == [got.path.name]  # the failed file is removed
    small = fetch_to_file(HubRequest(DATASET, "short", "train", 50), tmp_path / "out", local_root=hub_root)
    assert small.rows == 3 and "the split has 3 rows: all of them were read" in small.notes


def test_binary_columns_are_left_out_and_the_size_limit_holds(hub_root, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (hub_root / "owner/blobs").mkdir()  # a repo of one format: the Hub reads one builder per repo
    pq.write_table(pa.table({"text": ["a", "b"], "blob": [b"\x00\x01", b"\x02"]}),
                   hub_root / "owner/blobs/train.parquet")
    got = fetch_to_file(HubRequest("owner/blobs", "", "train", 5), tmp_path / "out", local_root=hub_root)
    assert got.columns == ["text"] and got.preview == [{"text": "a"}, {"text": "b"}]
    assert "column 'blob' left out: it holds images, audio or other binary data" in got.notes
    with pytest.raises(HubDataError, match="The first 2 rows of owner/notes take over .* lower the row limit"):
        fetch_to_file(HubRequest(DATASET, "default", "train", 5), tmp_path / "small", local_root=hub_root,
                      max_file_mb=100 / 1024 / 1024)  # 100 bytes: one row fits, two do not
    assert not any((tmp_path / "small").iterdir())


def test_bad_ids_limits_and_splits_are_refused_by_name(hub_root, tmp_path, monkeypatch):
    for bad in ("", "notes", "../etc/passwd", "/etc/passwd", "https://huggingface.co/datasets/a/b", "a/../b"):
        with pytest.raises(HubDataError, match="dataset id"):
            check_dataset_id(bad)
    monkeypatch.setenv("STUDIO_LIMIT_DATA_ROWS", "5")
    assert HubRequest(DATASET, limit="").checked().limit == 5  # the default never passes the limit
    with pytest.raises(HubDataError, match="over this server's limit of 5 rows"):
        HubRequest(DATASET, limit=6).checked()
    with pytest.raises(HubDataError, match="has no split 'validation'"):
        fetch_to_file(HubRequest(DATASET, "default", "validation", 5), tmp_path, local_root=hub_root)
    with pytest.raises(ValueError, match="hub_source: unknown part 'foo'"):
        DataMapping.from_dict({"hub_source": "a/b?foo=1"})


def test_offline_fails_fast_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    for call in (lambda: list_configs("someone/some-data"),
                 lambda: fetch_to_file(HubRequest("someone/some-data"), tmp_path / "out")):
        with pytest.raises(HubDataError, match="this server is offline"):
            call()
    # no network at all (a closed port stands in for it): refused just as fast, without the library's retries
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubDataError, match="this server is offline"):
        fetch_to_file(HubRequest("someone/some-data"), tmp_path / "out")
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "out").exists()


def _hub_failure(kind: str, message: str):
    from huggingface_hub import errors

    exc = getattr(errors, kind).__new__(getattr(errors, kind))
    Exception.__init__(exc, message)
    return exc


def test_private_and_gated_datasets_say_what_to_do():
    gated = hub_error(_hub_failure("GatedRepoError", "403 Client Error"), "org/gated")
    assert "accept its terms at https://huggingface.co/datasets/org/gated" in str(gated)
    missing = hub_error(_hub_failure("RepositoryNotFoundError", "401 Client Error"), "org/private")
    assert "not found on the Hub, or it is private" in str(missing) and "sign in" in str(missing)


def test_the_servers_token_is_not_lent_to_visitors(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_server_secret")
    monkeypatch.delenv("STUDIO_ALLOW_SERVER_TOKEN", raising=False)
    assert hub_token(None) is False  # False: no token is sent at all (None would send the server's)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    monkeypatch.setenv("STUDIO_ALLOW_SERVER_TOKEN", "1")
    assert hub_token(None) is False  # lent only to admins on a shared deployment


def test_inspect_and_train_from_the_command_line(hub_root, tmp_path, capsys):
    out = tmp_path / "rows"
    assert program(["inspect", "--hub", DATASET, "--hub-config", "default", "--split", "test", "--limit", "3",
                    "--hub-root", str(hub_root), "--hub-out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["rows"] == 3 and result["format"] == "prompt_completion"
    assert "--set 'hub_source=owner/notes?config=default&split=test&rows=3'" in captured.err
    assert program(["inspect", "--hub", DATASET, str(tmp_path / "x.jsonl")]) == 2  # a file or --hub, not both
    # train --set hub_source=... (data_path empty): fill_from_hub fetches the rows first
    filled = fill_from_hub(DataMapping.from_dict({"hub_source": "owner/notes?config=short&rows=2"}), out,
                           local_root=hub_root)
    assert Path(filled.data_path).parent == out and describe(filled.hub_source).startswith("owner/notes (config short")


def test_a_hub_dataset_goes_from_preview_to_a_trained_run(hub_root, uploads, tiny_model_dir, runs_root):
    from evaluation.report_facts import data_facts
    from finetune_core.config import RunConfig
    from finetune_core.runs.store import create_run
    from finetune_core.training.runner import run_job
    from ui.train_tab import data_fields

    view, _, _ = load_hub(DATASET, "default", "train", 24, local_root=hub_root)
    cfg = RunConfig.from_dict({**data_fields(view.data_state), "model": str(tiny_model_dir), "max_steps": 2,
                               "batch_size": 4, "lora_r": 4, "lora_alpha": 8, "save_steps": 0})
    run = create_run(cfg)
    recorded = yaml.safe_load((run.path / "run.yaml").read_text(encoding="utf-8"))
    assert recorded["hub_source"] == "owner/notes?config=default&split=train&rows=24"
    status = run_job(run, threading.Event())
    assert status["state"] == "completed" and status["step"] == 2
    report = json.loads((run.path / "data/report.json").read_text(encoding="utf-8"))
    assert report["total_rows"] == 24 and report["rows"] == 23
    assert report["issues"][0]["row"] == BAD_ROW
    assert ("Hub dataset", "owner/notes (config default, split train, first 24 rows)") in data_facts(run)
