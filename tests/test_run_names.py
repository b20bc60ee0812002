"""Runs have human names (finetune_core/runs/store.py): a default of dataset · preset · time,
renamed at will, checked with the field named, and runs from before names read as their id.

    .venv/bin/python -m pytest -q tests/test_run_names.py
"""
from __future__ import annotations

import time

import pytest

from finetune_core import cli
from finetune_core.config import RunConfig
from finetune_core.runs.store import NAME_MAX, RunError, check_run_name, create_run, default_run_name, get_run


def test_the_default_name_is_dataset_preset_and_time():
    when = time.mktime((2026, 3, 4, 9, 5, 0, 0, 0, -1))
    assert default_run_name("customer_intents.jsonl", "Quick demo (CPU)", when) == \
        "customer_intents · Quick demo (CPU) · 04 Mar 09:05"
    assert default_run_name("Customer intents (classification)", "", when) == \
        "Customer intents (classification) · 04 Mar 09:05"  # a sample's name has no extension to drop
    assert default_run_name("", "", when) == "run · 04 Mar 09:05"
    assert len(default_run_name("x" * 200, "Quick demo (CPU)", when)) == NAME_MAX  # kept within the limit


def test_a_run_gets_its_name_or_the_default_and_can_be_renamed(runs_root):
    named = create_run(RunConfig.from_dict({"data_path": "colours.jsonl"}), name="  first   try ")
    assert named.name == "first try" and get_run(named.id).name == "first try"  # spaces tidied, kept on disk
    assert named.label() == f"first try ({named.id[:15]}…{named.id[-6:]})"
    assert named.summary()["name"] == "first try"
    default = create_run(RunConfig.from_dict({"data_path": "data/colours.jsonl"}))
    assert default.name.startswith("colours · ")
    assert named.rename("lr 2e-4, 3 epochs") == "lr 2e-4, 3 epochs"
    assert get_run(named.id).name == "lr 2e-4, 3 epochs"
    assert (named.path / "name.json").is_file() and named.id == get_run(named.id).id  # the id never changes


@pytest.mark.parametrize("bad, words", [
    ("", "type a name"), ("   ", "type a name"), (None, "type a name"), (42, "type a name"),
    ("two\nlines", "control characters"), ("tab\there", "control characters"),
    ("x" * (NAME_MAX + 1), f"{NAME_MAX + 1} characters; keep it to {NAME_MAX}"),
])
def test_bad_names_are_refused_naming_the_field(bad, words, runs_root):
    with pytest.raises(RunError) as caught:
        check_run_name(bad)
    assert str(caught.value).startswith("Run name: ") and words in str(caught.value)
    run = create_run(RunConfig.from_dict({"data_path": "colours.jsonl"}), name="kept")
    with pytest.raises(RunError, match="^Run name: "):
        run.rename(bad)
    assert get_run(run.id).name == "kept"  # a refused rename changes nothing


def test_a_run_made_before_names_existed_reads_as_its_id(runs_root):
    run = create_run(RunConfig.from_dict({"data_path": "colours.jsonl"}), name="soon gone")
    (run.path / "name.json").unlink()
    assert run.name == run.id and run.label() == run.id and run.summary()["name"] == run.id
    (run.path / "name.json").write_text("{not json", encoding="utf-8")  # damaged: the id again, no error
    assert run.name == run.id
    (run.path / "name.json").write_text('{"name": "a\\nb"}', encoding="utf-8")  # a name no check would pass
    assert run.name == run.id


def test_cli_train_takes_a_name(runs_root, monkeypatch, capsys, tmp_path):
    from finetune_core.training import runner

    monkeypatch.setattr(cli, "memory_allows", lambda cfg, force: True)
    monkeypatch.setattr(runner, "run_job", lambda run, stop, emit=None, resume=False: {"state": "completed"})
    data = tmp_path / "colours.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n', encoding="utf-8")
    argv = ["train", "--quiet", "--set", f"data_path={data}"]
    assert cli.main([*argv, "--name", "from the shell"]) == 0
    assert [run.name for run in map(get_run, [p.name for p in runs_root.iterdir()])] == ["from the shell"]
    assert cli.main(argv) == 0  # no --name: dataset · time
    names = sorted(get_run(p.name).name for p in runs_root.iterdir())
    assert names[0].startswith("colours · ") and names[1] == "from the shell"
    capsys.readouterr()
    assert cli.main([*argv, "--name", "x" * (NAME_MAX + 1)]) != 0
    assert "Run name: " in capsys.readouterr().err
