"""Train tab handlers, called as plain functions."""
from __future__ import annotations

import gradio as gr
import pytest

from conftest import toy_rows
from finetune_core.config import PRESETS, RunConfig
from finetune_core.dataset import write_jsonl
from ui.context import AppContext
from finetune_core.runs import create_run
from ui.train_tab import (build_config, cli_text, config_from_yaml_file, loss_frame, resume_training, run_view,
                          start_training, tick)
from ui.widgets import build_config_widgets, config_from_values, named_values


@pytest.fixture()
def data_state(tmp_path):
    path = tmp_path / "toy.jsonl"
    write_jsonl(path, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(48)])
    return {"data_path": str(path), "data_format": "auto", "eval_fraction": 0.1, "name": "toy"}


def test_widgets_carry_bounds_and_help_from_the_config():
    with gr.Blocks():
        widgets = build_config_widgets(("method", "schedule"))
    assert isinstance(widgets["lora_r"], gr.Number)
    assert (widgets["lora_r"].minimum, widgets["lora_r"].maximum) == (1, 512)
    assert isinstance(widgets["lora_dropout"], gr.Slider)
    assert isinstance(widgets["method"], gr.Dropdown)
    assert isinstance(widgets["use_dora"], gr.Checkbox)
    assert "rank" in widgets["lora_r"].info.lower()
    raw = {widgets["lora_r"]: 8, widgets["method"]: "full"}
    assert named_values(widgets, raw) == {"lora_r": 8, "method": "full"}


def test_build_config_needs_data_and_checks_bounds(data_state):
    with pytest.raises(gr.Error, match="Data tab"):
        build_config({"lora_r": 8}, None)
    cfg = build_config({"lora_r": 8.0, "learning_rate": 1e-4}, data_state)
    assert cfg.lora_r == 8 and cfg.data_path == data_state["data_path"]
    with pytest.raises(gr.Error, match="lora_r"):
        build_config({"lora_r": 0}, data_state)


def test_refuses_unknown_model_id_before_creating_a_run(data_state, runs_root):
    ctx = AppContext()
    cfg = config_from_values({"model": "not a model id"}, data_state)
    with pytest.raises(gr.Error, match="not a Hub model id"):
        start_training(ctx, cfg)
    assert not runs_root.exists() or not any(runs_root.iterdir())


def test_start_then_view_the_run(tiny_model_dir, data_state, runs_root):
    ctx = AppContext()
    cfg = config_from_values({"model": str(tiny_model_dir), "max_steps": 2, "batch_size": 4, "logging_steps": 1}, data_state)
    run_id = start_training(ctx, cfg, label="toy")
    with pytest.raises(gr.Error, match="already running"):  # the job takes seconds: still running here
        start_training(ctx, cfg)
    assert ctx.slot.wait(120)["state"] == "completed"
    title, bar, frame, log = run_view(run_id)
    assert run_id in title and "completed" in title
    assert "step 2/2" in bar
    assert list(frame[frame.series == "train"].step) == [1, 2]
    assert "Run completed" in log
    with pytest.raises(gr.Error, match="only stopped, failed or interrupted"):
        resume_training(ctx, run_id)


def test_loss_frame_and_cli_text():
    frame = loss_frame([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "eval_loss": 1.7}])
    assert frame.to_dict("records") == [
        {"step": 1, "loss": 2.0, "series": "train"}, {"step": 2, "loss": 1.5, "series": "train"},
        {"step": 2, "loss": 1.7, "series": "held-out"}]
    text = cli_text(RunConfig(lora_r=8))
    assert "python -m finetune_core train --config run.yaml" in text
    assert "torchrun --nproc_per_node 2" in text and "accelerate launch" in text
    assert "lora_r: 8" in text


def test_yaml_upload_round_trips_and_rejects_garbage(tmp_path):
    cfg = RunConfig().with_overrides(PRESETS["Unsloth notebook defaults"])
    cfg.save(tmp_path / "run.yaml")
    assert config_from_yaml_file(str(tmp_path / "run.yaml")) == cfg
    (tmp_path / "bad.yaml").write_text("lora_r: -3\n")
    with pytest.raises(gr.Error, match="lora_r"):
        config_from_yaml_file(str(tmp_path / "bad.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(gr.Error, match="mapping"):
        config_from_yaml_file(str(tmp_path / "list.yaml"))


def test_timer_tick_sends_only_what_changed(runs_root):
    run = create_run(RunConfig(max_steps=10), label="watched")
    view, table, seen = tick(run.id, None)  # a fresh page gets everything
    assert run.id in view[0] and list(table.id) == [run.id]
    assert tick(run.id, seen)[:2] == (None, None)  # nothing changed: the page is left alone

    run.set_status(state="running", step=3, total_steps=10)
    run.append_metric({"step": 3, "loss": 1.25})
    view, table, seen = tick(run.id, seen)
    assert "step 3/10" in view[1] and list(view[2].loss) == [1.25]
    assert list(table.step) == [3]

    run.log("a new log line")  # the view changes, the runs table does not
    view, table, seen = tick(run.id, seen)
    assert "a new log line" in view[3] and table is None

    other = create_run(RunConfig(), label="other")  # a new run shows in the table
    view, table, seen = tick(run.id, seen)
    assert view is None and set(table.id) == {run.id, other.id}
    view, table, _ = tick(other.id, seen)  # picking another run sends its view
    assert other.id in view[0] and table is None
