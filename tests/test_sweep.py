"""Sweeps: the runs a grid or list makes, the refusals (each naming the field, value or limit), the queued
runs' tags and names, and the ranked table with the metric's direction and the best marked."""
from __future__ import annotations

import pytest

from finetune_core.__main__ import main
from finetune_core.config import RunConfig
from finetune_core.runs.store import get_run, list_runs
from finetune_core.training.sweep import (BEST, MAX_RUNS, SweepError, expand, list_sweeps, queue_sweep, sweep_table,
                                      values_text)
from sweep_support import FakeQueue, fake_run


def test_grid_makes_every_combination_first_field_slowest():
    runs = expand(RunConfig(), {"learning_rate": "1e-4, 2e-4", "lora_r": [8, 16]})
    assert [values_text(v) for _, v in runs] == ["learning_rate=0.0001, lora_r=8", "learning_rate=0.0001, lora_r=16",
                                                 "learning_rate=0.0002, lora_r=8", "learning_rate=0.0002, lora_r=16"]
    cfg, values = runs[3]
    assert (cfg.learning_rate, cfg.lora_r) == (2e-4, 16) and values == {"learning_rate": 2e-4, "lora_r": 16}
    assert cfg.lora_alpha == RunConfig().lora_alpha  # everything else is the base's


def test_target_modules_values_are_split_on_semicolons_not_commas():
    runs = expand(RunConfig(), {"target_modules": "all-linear; q_proj,v_proj"})
    assert [c.target_modules for c, _ in runs] == ["all-linear", "q_proj,v_proj"]
    with pytest.raises(SweepError, match="target_modules: each value is itself a comma-separated list"):
        expand(RunConfig(), {"target_modules": "all-linear, q_proj,v_proj"})
    with pytest.raises(SweepError, match="target_modules: an empty value between semicolons"):
        expand(RunConfig(), {"target_modules": "all-linear;; q_proj,v_proj"})


def test_list_zips_values_and_coerces_each_as_its_field():
    runs = expand(RunConfig(), {"lora_r": "8, 16", "lora_alpha": "16,32", "packing": "no, yes"}, mode="list")
    assert [(c.lora_r, c.lora_alpha, c.packing) for c, _ in runs] == [(8, 16, False), (16, 32, True)]


@pytest.mark.parametrize("axes, mode, said", [
    ({"lora_r": "8, 0"}, "grid", "lora_r: 0 is below the minimum 1"),
    ({"learning_rate": "1e-4, fast"}, "grid", "learning_rate: 'fast' is not a valid float"),
    ({"lora_r": "8, 8.5"}, "grid", "lora_r: '8.5' is not a valid int"),
    ({"lr_scheduler": "linear, wavy"}, "grid", "lr_scheduler: 'wavy' is not one of"),
    ({"model": "a, b"}, "grid", "model: not a field a sweep varies"),
    ({"data_path": "a, b"}, "grid", "data_path: not a field a sweep varies"),
    ({"launcher": "thread, process"}, "grid", "launcher: not a field a sweep varies"),
    ({"lora_rank": "8, 16"}, "grid", "Unknown config field 'lora_rank'"),
    ({"lora_r": ""}, "grid", "lora_r: no values"),
    ({"lora_r": "8,,16"}, "grid", "lora_r: an empty value"),
    ({"lora_r": "8, 8"}, "grid", "lora_r: '8' is given twice"),
    ({"lora_r": "8"}, "grid", "one run, not a sweep"),
    ({"lora_r": "8,16", "learning_rate": "1e-4"}, "list", "got lora_r 2, learning_rate 1"),
    ({"lora_r": "1,2,3,4", "learning_rate": "1e-4,2e-4,3e-4,4e-4"}, "grid", f"16 runs; a sweep may queue at most {MAX_RUNS}"),
    ({"lora_r": "1,2", "lora_alpha": "1,2", "lora_dropout": "0,0.1", "batch_size": "1,2"}, "grid", "at most 3 fields"),
    ({"lora_r": "8,16"}, "random", "mode: 'random' is not one of grid, list"),
])
def test_refusals_name_the_field_value_or_limit(axes, mode, said):
    with pytest.raises(SweepError) as info:
        expand(RunConfig(), axes, mode)
    assert said in str(info.value)


def test_queue_sweep_tags_and_names_each_run_in_order(runs_root):
    queue = FakeQueue()
    base = RunConfig(evaluate_after=True)
    runs = queue_sweep(queue, base, {"learning_rate": "1e-4, 2e-4", "lora_r": "8"}, "grid", "rougeL",
                       owner={"user": "alice"}, name="emotions")
    assert [r.name for r in runs] == ["emotions · learning_rate=0.0001, lora_r=8",
                                      "emotions · learning_rate=0.0002, lora_r=8"]
    tags = [r.run_yaml()["sweep"] for r in runs]
    assert len({t["id"] for t in tags}) == 1 and tags[0]["name"] == "emotions" and tags[0]["metric"] == "rougeL"
    assert tags[1]["values"] == {"learning_rate": 2e-4, "lora_r": 8}
    assert runs[1].config().learning_rate == 2e-4 and runs[1].config().evaluate_after
    assert [e["id"] for e in list_sweeps()] == [tags[0]["id"]]


def test_queue_sweep_is_all_or_nothing_when_the_queue_refuses(runs_root):
    queue = FakeQueue(refuse_after=2)
    with pytest.raises(SweepError, match="refused the sweep's 3 runs: You have too many runs waiting. None of"):
        queue_sweep(queue, RunConfig(), {"lora_r": "4, 8, 16"}, owner={"user": "bob"}, name="ranks")
    assert queue.items() == [] and list_runs() == []


def test_queue_sweep_refuses_a_metric_its_runs_cannot_produce(runs_root):
    with pytest.raises(SweepError, match="evaluate_after=true"):
        queue_sweep(FakeQueue(), RunConfig(), {"lora_r": "4, 8"}, metric="rougeL")
    with pytest.raises(SweepError, match="no held-out rows"):
        queue_sweep(FakeQueue(), RunConfig().with_overrides({"eval_fraction": 0}), {"lora_r": "4, 8"})
    assert list_runs() == []


def _sweep(tag_id="20260101-101010-abc123", metric="eval_loss"):
    return lambda values: {"id": tag_id, "name": "s", "values": values, "metric": metric}


def test_sweep_table_ranks_held_out_loss_lowest_first_and_marks_the_best(runs_root):
    tag = _sweep()
    fake_run("a", held=(1.4, 0.9), sweep=tag({"lora_r": 4}))
    fake_run("b", held=(0.7,), sweep=tag({"lora_r": 8}))
    fake_run("c", held=(), losses=(), state="waiting", sweep=tag({"lora_r": 16}))
    table = sweep_table("20260101-101010-abc123")
    assert list(table["name"]) == ["b", "a", "c"] and list(table["lora_r"]) == ["8", "4", "16"]
    assert list(table["eval_loss"])[:2] == [0.7, 0.9]  # the LAST held-out loss of each run
    assert list(table["best"]) == [BEST, "", ""] and list(table["rank"]) == ["1", "2", "—"]
    assert list(table["state"]) == ["completed", "completed", "waiting"]


def test_sweep_table_ranks_an_evaluation_metric_highest_first(runs_root):
    tag = _sweep(metric="rougeL")
    fake_run("low", evaluation={"rougeL": (0.2, True)}, sweep=tag({"lr": 1}))
    fake_run("high", evaluation={"rougeL": (0.5, True)}, sweep=tag({"lr": 2}))
    table = sweep_table("20260101-101010-abc123")
    assert list(table["name"]) == ["high", "low"] and table.loc[0, "best"] == BEST
    assert list(sweep_table("20260101-101010-abc123", "train_loss")["train_loss"]) == [1.2, 1.2]


def test_sweep_table_refuses_an_id_that_is_not_a_sweeps(runs_root):
    with pytest.raises(Exception, match="not a sweep id"):
        sweep_table("../../etc")
    with pytest.raises(Exception, match="does not exist"):
        sweep_table("20260101-101010-abc123")


def test_cli_sweep_refuses_bad_axes_before_queueing(runs_root, capsys):
    assert main(["sweep", "--axis", "lora_r=8,0"]) == 2
    assert "lora_r: 0 is below the minimum 1" in capsys.readouterr().err
    assert main(["sweep", "--axis", "lora_r=8,16", "--axis", "lora_r=32"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert list_runs() == []


def test_cli_sweep_puts_the_runs_on_the_persisted_queue(runs_root, tmp_path, capsys):
    from conftest import toy_rows
    from finetune_core.data.dataset import write_jsonl
    from finetune_core.training.queue import RunQueue
    from finetune_core.training.runner import TrainingSlot

    data = tmp_path / "toy.jsonl"
    write_jsonl(data, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(24)])
    RunConfig(max_steps=2).with_overrides({"data_path": str(data)}).save(tmp_path / "run.yaml")
    assert main(["sweep", "--config", str(tmp_path / "run.yaml"), "--axis", "learning_rate=1e-4,2e-4",
                 "--axis", "lora_r=4,8", "--mode", "list", "--name", "cli"]) == 0
    out = capsys.readouterr().out
    assert "2 runs queued, ranked by eval_loss" in out and "1. " in out and "2. " in out
    items = RunQueue(TrainingSlot()).items()  # the same file a running app (or `queue work`) reads
    names = [get_run(i["run"]).name for i in items]
    assert names == ["cli · learning_rate=0.0001, lora_r=4", "cli · learning_rate=0.0002, lora_r=8"]
    assert get_run(items[1]["run"]).config().max_steps == 2
