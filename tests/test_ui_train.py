"""Train tab handlers, called as plain functions."""
from __future__ import annotations

import time

import gradio as gr
import pytest

from conftest import toy_rows
from finetune_core.config import PRESETS, RunConfig
from finetune_core.data.dataset import write_jsonl
from ui.context import AppContext
from finetune_core.runs.store import create_run, get_run
from ui.train_tab import (TRAIN_ANYWAY, build_config, cli_text, config_from_yaml_file, data_fields,
                          memory_markdown, model_choices, queue_note, rename_run, resume_training,
                          start_training)
from ui.train_views import (RUN_COLUMNS, device_note, loss_frame, run_picks, run_view, runs_table, tick,
                            watched_run_id)
from ui.widgets import build_config_widgets, chosen_run_name, config_from_values, default_name_for, named_values


@pytest.fixture()
def data_state(tmp_path):
    path = tmp_path / "toy.jsonl"
    write_jsonl(path, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(48)])
    return {"mapping": {"data_path": str(path), "data_format": "auto", "eval_fraction": 0.1}, "name": "toy"}


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
    assert cfg.lora_r == 8 and cfg.data.data_path == data_state["mapping"]["data_path"]
    with pytest.raises(gr.Error, match="lora_r"):
        build_config({"lora_r": 0}, data_state)


def test_refuses_unknown_model_id_before_creating_a_run(data_state, runs_root):
    ctx = AppContext()
    cfg = config_from_values({"model": "not a model id"}, data_fields(data_state))
    with pytest.raises(gr.Error, match="not a Hub model id"):
        start_training(ctx, cfg)
    assert not runs_root.exists() or not any(runs_root.iterdir())


def test_start_then_view_the_run(tiny_model_dir, data_state, runs_root):
    ctx = AppContext()
    cfg = config_from_values({"model": str(tiny_model_dir), "max_steps": 2, "batch_size": 4, "logging_steps": 1},
                             data_fields(data_state))
    run_id = start_training(ctx, cfg, label="toy", name="first toy run")
    assert queue_note(ctx, run_id) == 'Training started: "first toy run".'
    second = start_training(ctx, cfg, name="second")  # the job takes seconds: still running here
    assert get_run(second).status()["state"] == "waiting"
    assert queue_note(ctx, second).startswith('Queued: "second" is number 1 in the queue after "first toy run"')
    assert ctx.slot.wait(120)["state"] == "completed"
    assert ctx.queue.wait_idle(120) and get_run(second).status()["state"] == "completed"
    title, bar, frame, log = run_view(run_id)
    assert title.startswith("**first toy run** — completed (2 of 2 steps)")
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


def sent_value(view):
    """The loss frame a tick's plot update carries (None when it carries none)."""
    return view[2].get("value") if isinstance(view[2], dict) else None


def test_timer_tick_sends_only_what_changed(runs_root):
    run = create_run(RunConfig(max_steps=10), label="watched", name="watched run")
    view, table, seen = tick(run.id, None)  # a fresh page gets everything
    assert "watched run" in view[0] and list(table.name) == ["watched run"]
    view, table, seen = tick(run.id, seen)  # then the chart is built for the (no) series it holds
    assert view[2] == gr.update(colors_in_legend=[]) and table is None
    assert tick(run.id, seen)[:2] == (None, None)  # nothing changed: the page is left alone

    run.set_status(state="running", step=3, total_steps=10)
    run.append_metric({"step": 3, "loss": 1.25})
    view, table, seen = tick(run.id, seen)
    assert "step 3/10" in view[1] and list(sent_value(view).loss) == [1.25]
    assert list(table.steps) == ["3/10"]

    run.log("a new log line")  # the view changes, the runs table does not
    view, table, seen = tick(run.id, seen)
    assert "a new log line" in view[3] and table is None

    run.rename("renamed")  # the title and the table follow a new name
    view, table, seen = tick(run.id, seen)
    assert "**renamed**" in view[0] and list(table.name) == ["renamed"]

    other = create_run(RunConfig(), label="other", name="other run")  # a new run shows in the table
    view, table, seen = tick(run.id, seen)
    assert view is None and set(table.name) == {"renamed", "other run"}
    view, table, _ = tick(other.id, seen)  # picking another run sends its view
    assert "other run" in view[0] and table is None


def test_the_chart_is_rebuilt_without_a_value_when_its_series_change(runs_root):
    """Gradio's LinePlot colours only the series it held when its chart was built: each new series
    is followed, one tick later, by an update that rebuilds the chart (colors_in_legend) and carries
    no value, so the chart is built from data the page already holds."""
    run = create_run(RunConfig(max_steps=10), name="curve")
    view, _, seen = tick(run.id, None)
    assert list(sent_value(view).series) == [] and "colors_in_legend" not in view[2]
    view, _, seen = tick(run.id, seen)
    assert view[2] == gr.update(colors_in_legend=[]) and view[0] == view[1] == view[3] == gr.skip()

    run.append_metric({"step": 1, "loss": 2.0})
    view, _, seen = tick(run.id, seen)
    assert list(sent_value(view).series) == ["train"] and "colors_in_legend" not in view[2]
    run.append_metric({"step": 2, "loss": 1.5})  # the value that comes meanwhile waits a tick
    view, _, seen = tick(run.id, seen)
    assert view[2] == gr.update(colors_in_legend=["train"]) and "value" not in view[2]
    view, _, seen = tick(run.id, seen)
    assert list(sent_value(view).step) == [1, 2] and view[0] == gr.skip()  # only the plot had changed

    run.append_metric({"step": 2, "eval_loss": 1.7})
    view, _, seen = tick(run.id, seen)
    assert list(sent_value(view).series) == ["train", "train", "held-out"]
    view, _, seen = tick(run.id, seen)
    assert view[2] == gr.update(colors_in_legend=["train", "held-out"])
    assert tick(run.id, seen)[0] is None  # and then nothing, until something changes


def test_the_tab_watches_the_job_else_the_pick_else_the_session_else_the_latest(runs_root, monkeypatch):
    from types import SimpleNamespace

    ctx = AppContext()
    assert watched_run_id(ctx, None) is None and run_view(None)[0].startswith("No run yet")
    older = create_run(RunConfig(), name="older")
    time.sleep(1.05)  # run ids tell time to the second: "latest" is the newer id
    newer = create_run(RunConfig(), name="newer")
    assert watched_run_id(ctx, None) == newer.id  # a page opened after the runs: the latest
    assert watched_run_id(ctx, None, session=older.id) == older.id  # the session's run (Train, guided demo)
    assert watched_run_id(ctx, None, session="20990101-000000-gone-abcdef") == newer.id
    assert watched_run_id(ctx, older.id, session=newer.id) == older.id  # the run picked in "Open run"
    monkeypatch.setattr(ctx.slot, "active", lambda: SimpleNamespace(run=older))
    assert watched_run_id(ctx, newer.id, session=newer.id) == older.id  # the running job first


def test_a_stopped_run_says_where_it_stopped_and_keeps_its_log(runs_root):
    run = create_run(RunConfig(), name="long one")
    run.log("Stop requested: finishing the current step and saving.")
    run.set_status(state="stopped", step=19, total_steps=60, reason="stopped at step 19")
    title, bar, _, log = run_view(run.id)
    assert title == "**long one** — stopped at step 19 of 60" and "step 19/60" in bar
    assert "Stop requested" in log
    run.set_status(state="failed", step=0, reason="ValueError: bad <b>thing</b>")
    assert run_view(run.id)[0] == "**long one** — failed before its first step · ValueError: bad \\<b\\>thing\\</b\\>"


def test_runs_table_and_open_run_show_names(runs_root, tmp_path):
    cfg = RunConfig.from_dict({"model": "HuggingFaceTB/SmolLM2-360M-Instruct",
                               "data_path": str(tmp_path / "20260101-101009-0123456789ab.jsonl")})
    upload = create_run(cfg, label="my colours", name="upload run")
    upload.set_status(step=19, total_steps=60)
    sample = create_run(RunConfig.from_dict({"data_path": "customer_intents.jsonl"}), name="sample run")
    table = runs_table()
    assert list(table.columns) == RUN_COLUMNS == ["name", "state", "steps", "model", "method", "data", "reason"]
    rows = {row["name"]: row for row in table.to_dict("records")}
    assert rows["upload run"] == {"name": "upload run", "state": "queued", "steps": "19/60",
                                  "model": "SmolLM2-360M-Instruct", "method": "lora",
                                  "data": "my-colours", "reason": ""}  # an upload: the name it came with
    assert rows["sample run"]["data"] == "customer_intents.jsonl"
    assert rows["sample run"]["model"] == "SmolLM2-135M (bundled)"
    assert sorted(run_picks()) == sorted([(sample.label(), sample.id), (upload.label(), upload.id)])
    assert any(label.startswith("sample run (") for label, _ in run_picks())


def test_run_name_box_default_and_start_training_refuses_a_bad_name(runs_root, data_state):
    assert default_name_for(data_state, "Quick demo (CPU)").startswith("toy · Quick demo (CPU) · ")
    assert default_name_for(None, "Quick demo (CPU)").startswith("run · Quick demo (CPU) · ")
    assert chosen_run_name("  ", data_state, "Full fine-tune").startswith("toy · Full fine-tune · ")
    assert chosen_run_name("mine", data_state, "Full fine-tune") == "mine"
    cfg = config_from_values({"max_steps": 1}, data_fields(data_state))
    for bad, words in (("x" * 81, "81 characters"), ("a\tb", "control characters")):
        with pytest.raises(gr.Error, match=f"Run name: .*{words}"):
            start_training(AppContext(), cfg, name=bad)
    assert not runs_root.exists() or not any(runs_root.iterdir())  # refused before a run was made


def test_rename_is_for_the_owner_or_an_admin_and_names_the_field(runs_root, monkeypatch):
    from finetune_core.runs.ownership import Visitor

    monkeypatch.setenv("STUDIO_REQUIRE_LOGIN", "1")
    monkeypatch.setenv("STUDIO_ADMINS", "root")
    run = create_run(RunConfig(), name="alice's", owner={"user": "alice"})
    alice, bob, root = Visitor(user="alice"), Visitor(user="bob"), Visitor(user="root")
    assert rename_run(run.id, "  alice   v2 ", alice) == "alice v2"
    with pytest.raises(gr.Error, match="does not exist"):  # bob may not even see it
        rename_run(run.id, "bob's now", bob)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    monkeypatch.delenv("STUDIO_REQUIRE_LOGIN")
    with pytest.raises(gr.Error, match="Only the person who started run .* can rename it"):
        rename_run(run.id, "bob's now", bob)
    assert rename_run(run.id, "by an admin", root) == "by an admin"
    with pytest.raises(gr.Error, match="Run name: type a name"):
        rename_run(run.id, "   ", root)
    with pytest.raises(gr.Error, match="Pick a run to rename"):
        rename_run(None, "x", root)
    assert run.name == "by an admin"


def test_device_line_says_it_in_plain_words():
    from finetune_core.models.sources import DevicePolicy

    cpu32 = device_note(DevicePolicy("cpu", "float32"))
    assert cpu32.startswith("Training runs on this machine's CPU in full precision (float32)")
    cpu16 = device_note(DevicePolicy("cpu", "bfloat16"))
    assert "half precision (bfloat16)" in cpu16 and "full precision (float32)" in cpu16
    assert "on this machine's GPU in half precision (bfloat16)" in device_note(DevicePolicy("cuda", "bfloat16"))
    for note in (cpu32, cpu16):
        assert "bf16 matrix" not in note and "cpu /" not in note


# -- the model picker and the memory estimate ------------------------------------------
def fixed_device(monkeypatch, available_gb: float) -> None:
    """This machine as the estimate sees it: a CPU with `available_gb` of RAM to train in."""
    from finetune_core.models import memory

    monkeypatch.setattr(memory, "probe_device", lambda cfg: memory.Device("cpu", available=available_gb * memory.GB))


def test_start_training_refuses_a_run_that_will_not_fit_unless_forced(tiny_model_dir, data_state, runs_root,
                                                                       monkeypatch):
    fixed_device(monkeypatch, 1.5)
    ctx = AppContext()
    cfg = config_from_values({"model": str(tiny_model_dir), "max_steps": 1, "batch_size": 16, "max_length": 1024,
                              "logging_steps": 1}, data_fields(data_state))
    with pytest.raises(gr.Error) as caught:
        start_training(ctx, cfg)
    text = caught.value.message
    assert "will not fit" in text and "of 1.5 GB available" in text and TRAIN_ANYWAY in text
    from finetune_core.models import memory

    tips = memory.assess(cfg).suggestions
    assert tips and all(f"{t.text}: {t.total / memory.GB:.1f} GB" in text for t in tips)
    assert not runs_root.exists() or not any(runs_root.iterdir())  # refused before a run was made
    run_id = start_training(ctx, cfg, force=True)  # the visitor ticked "Train anyway"
    assert ctx.slot.wait(120)["state"] == "completed" and "completed" in run_view(run_id)[0]


def test_memory_note_shows_the_model_and_the_verdict(monkeypatch, tmp_path, tiny_model_dir):
    import huggingface_hub.constants

    fixed_device(monkeypatch, 16)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    note = memory_markdown({"model": "google/gemma-3-1b-it", "batch_size": 1, "max_length": 128})
    assert "**google/gemma-3-1b-it** · 1B params · 32k context · gemma3_text · licence-gated" in note
    assert "of 16.0 GB available: **fits** (weights" in note
    assert "⚠ google/gemma-3-1b-it is not downloaded on this machine and the Hugging Face Hub is offline" in note
    big = memory_markdown({"model": "bundled", "batch_size": 64, "max_length": 4096})
    assert "SmolLM2-135M-Instruct (bundled)" in big and "**will not fit**" in big
    assert "Settings that would fit:\n- " in big
    assert "(from its local config)" in memory_markdown({"model": str(tiny_model_dir)})
    assert memory_markdown({"model": "not a model"}).startswith("⚠ 'not a model' is not a Hub model id")
    assert memory_markdown({"model": "bundled", "batch_size": 0}) == "⚠ batch_size: 0 is below the minimum 1."


def test_model_picker_lists_the_catalogue_this_deployment_allows(monkeypatch):
    from finetune_core.models.sources import CATALOGUE

    for name in ("STUDIO_PUBLIC", "STUDIO_MODEL_ALLOWLIST", "STUDIO_MAX_PARAMS_B"):
        monkeypatch.delenv(name, raising=False)
    choices = model_choices()
    assert choices[0][1] == "bundled" and "(bundled)" in choices[0][0] and "offline" in choices[0][0]
    assert [value for _, value in choices[1:]] == list(CATALOGUE)
    assert all("licence-gated" in label for label, value in choices if value.startswith(("meta-llama/", "google/")))
    monkeypatch.setenv("STUDIO_MAX_PARAMS_B", "1")
    assert [v for _, v in model_choices()[1:]] == [k for k, size in CATALOGUE.items() if size <= 1]
    monkeypatch.setenv("STUDIO_MODEL_ALLOWLIST", "Qwen/Qwen3-0.6B,someone/private")
    assert [v for _, v in model_choices()] == ["bundled", "Qwen/Qwen3-0.6B"]


def test_train_tab_wires_the_picker_the_note_and_train_anyway(monkeypatch, tiny_model_dir):
    import app

    monkeypatch.setenv("STUDIO_DEFAULT_MODEL", str(tiny_model_dir))
    ctx = AppContext()
    demo = app.build_app(ctx)
    widgets = demo.studio_page.train.widgets
    picker = widgets["model"]
    assert isinstance(picker, gr.Dropdown) and picker.allow_custom_value and picker.value == str(tiny_model_dir)
    note = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "memory-estimate")
    anyway = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "train-anyway")
    fns = list(demo.fns.values())
    train = next(f for f in fns if f.api_name == "train")
    assert anyway in train.inputs
    run_name = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "run-name")
    assert run_name in train.inputs and "· Quick demo (CPU) ·" in run_name.placeholder
    assert any(f.api_name == "train_rename" for f in fns)
    log = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "run-log")
    assert any(f.js and "scrollHeight" in f.js and (log._id, "change") in f.targets for f in fns)  # follows
    followers = {block_id for f in fns if note in f.outputs for block_id, _event in f.targets}  # what it follows
    assert {widgets[n]._id for n in ("model", "method", "batch_size", "max_length", "precision",
                                     "gradient_checkpointing")} <= followers
