"""Early stopping, the best checkpoint as the final adapter, and experiment trackers (report_to), on the
tiny model: what a user who turns them on relies on."""
from __future__ import annotations

import sys
import threading

import pytest
import torch
from safetensors.torch import load_file

from conftest import toy_rows
from finetune_core.config import ConfigError, RunConfig
from finetune_core.data.dataset import write_jsonl
from finetune_core.runs.store import create_run, write_json_atomic
from finetune_core.training import tracking
from finetune_core.training.checkpoint_choice import align_checkpoints, trainer_extras
from finetune_core.training.runner import run_job
from finetune_core.training.train import TrainingError


def tiny_run(model_dir, **overrides):
    """A run of the tiny model with a saved split (40 training rows, 8 held out) and its config aligned
    as the CLI aligns it."""
    settings = dict(model=str(model_dir), data_path="toy.jsonl", max_steps=3, batch_size=4, learning_rate=1e-3,
                    lora_r=4, lora_alpha=8, lora_dropout=0.0, logging_steps=1, precision="float32")
    cfg, _said = align_checkpoints(RunConfig.from_dict({**settings, **overrides}))
    run = create_run(cfg)
    rows = toy_rows(48)
    write_jsonl(run.data_dir / "train.jsonl", rows[:40])
    write_jsonl(run.data_dir / "heldout.jsonl", rows[40:])
    write_json_atomic(run.data_dir / "report.json", {"format": "prompt_completion", "rows": 48, "train_rows": 40,
                                                     "heldout_rows": 8})
    return run


# -- align_checkpoints -----------------------------------------------------------------------------
def test_align_sets_eval_and_save_steps_and_says_so():
    cfg, said = align_checkpoints(RunConfig(max_steps=200, early_stopping_patience=3))
    assert (cfg.eval_steps, cfg.save_steps) == (20, 20)
    assert said.startswith("Early stopping needs the held-out loss during training: eval_steps set to 20")
    assert "save_steps set to 20" in said

    # a user's eval_steps stays; early stopping alone accepts any multiple of it as save_steps
    cfg, said = align_checkpoints(RunConfig(max_steps=200, early_stopping_patience=3, eval_steps=5, save_steps=50))
    assert (cfg.eval_steps, cfg.save_steps, said) == (5, 50, "")
    cfg, said = align_checkpoints(RunConfig(max_steps=200, early_stopping_patience=3, eval_steps=5, save_steps=12))
    assert cfg.save_steps == 5 and "a multiple of eval_steps" in said

    # keep_best needs a checkpoint at every evaluation: only a saved step can become the adapter
    cfg, said = align_checkpoints(RunConfig(max_steps=200, keep_best=True, eval_steps=5, save_steps=50))
    assert (cfg.eval_steps, cfg.save_steps) == (5, 5)
    assert said.startswith("keep_best needs") and "eval_steps set" not in said

    # both on; a run measured in epochs gets an estimate from its row cap, and says it is one
    cfg, said = align_checkpoints(RunConfig.from_dict({"keep_best": True, "early_stopping_patience": 2,
                                                       "num_epochs": 2, "max_train_rows": 400, "batch_size": 4}))
    assert (cfg.eval_steps, cfg.save_steps) == (20, 20)
    assert said.startswith("Early stopping and keep_best need") and "estimated 200 steps" in said

    # nothing asked, or nothing to change: the config comes back as it was, with no sentence
    assert align_checkpoints(RunConfig(max_steps=10)) == (RunConfig(max_steps=10), "")
    tiny = RunConfig(max_steps=4, keep_best=True)
    assert align_checkpoints(tiny)[0].eval_steps == 1  # never 0
    aligned = align_checkpoints(tiny)[0]
    assert align_checkpoints(aligned) == (aligned, "")


def test_early_stopping_and_keep_best_refused_without_heldout_rows(tiny_model_dir, runs_root):
    with pytest.raises(ConfigError, match=r"^early_stopping_patience: .*eval_fraction is 0"):
        align_checkpoints(RunConfig.from_dict({"early_stopping_patience": 2, "eval_fraction": 0}))
    with pytest.raises(ConfigError, match=r"^keep_best: .*set eval_fraction above 0 or choose an evaluation file"):
        align_checkpoints(RunConfig.from_dict({"keep_best": True, "eval_fraction": 0}))
    assert align_checkpoints(RunConfig.from_dict({"keep_best": True, "eval_fraction": 0,
                                                  "eval_path": "held.jsonl", "max_steps": 10}))[0].eval_steps == 1
    # a split that came out empty is refused when the trainer is built, naming the field
    with pytest.raises(TrainingError, match="^keep_best: the data split left no held-out rows"):
        trainer_extras(align_checkpoints(RunConfig(keep_best=True, max_steps=10))[0], has_eval=False)
    # a run.yaml written without the CLI's check fails before any training, with the same reason
    run = create_run(RunConfig.from_dict({"model": str(tiny_model_dir), "data_path": "toy.jsonl",
                                          "early_stopping_patience": 1, "eval_fraction": 0}))
    status = run_job(run, threading.Event())
    assert status["state"] == "failed" and status["reason"].startswith("early_stopping_patience: ")
    assert not run.metrics()


# -- a real run: early stopping and the best checkpoint ------------------------------------------
def test_early_stopping_ends_a_diverging_run_and_keeps_the_best_checkpoint(tiny_model_dir, runs_root):
    # a learning rate this high on a LoRA scaled by 64 makes the held-out loss jump about after two steps
    run = tiny_run(tiny_model_dir, max_steps=20, learning_rate=1e-2, lora_alpha=256, eval_steps=1,
                   early_stopping_patience=2, keep_best=True)
    status = run_job(run, threading.Event())
    assert status["state"] == "completed", status
    held = {m["step"]: m["eval_loss"] for m in run.metrics() if "eval_loss" in m}
    stop = status["step"]
    assert stop < 20 and status["early_stopped"] and status["early_stopped_at"] == stop
    best = min(held, key=held.get)
    assert best < stop  # the held-out loss rose after it: the last weights are not the best
    assert all(held[s] >= held[best] for s in held if s > best) and len([s for s in held if s > best]) == 2
    assert (status["best_checkpoint"], status["best_step"]) == (f"checkpoint-{best}", best)
    assert status["best_eval_loss"] == pytest.approx(held[best])
    assert "stopped early at step" in status["reason"] and f"checkpoint-{best}" in status["reason"]

    # the adapter is that checkpoint's weights, not the last step's
    adapter = load_file(run.adapter_dir / "adapter_model.safetensors")
    chosen = load_file(run.checkpoints_dir / f"checkpoint-{best}" / "adapter_model.safetensors")
    last = load_file(run.checkpoints_dir / f"checkpoint-{stop}" / "adapter_model.safetensors")
    assert adapter.keys() == chosen.keys()
    assert all(torch.equal(adapter[k], chosen[k]) for k in adapter)
    assert not all(torch.equal(adapter[k], last[k]) for k in adapter)

    fact = run.run_yaml()["final_adapter"]
    assert fact["chosen"] == "best" and fact["checkpoint"] == f"checkpoint-{best}" and fact["stopped_at_step"] == stop
    log = run.log_tail(200)
    assert f"Early stopping: held-out loss has not improved for 2 evaluations; stopped at step {stop}." in log
    assert f"Final adapter: checkpoint-{best} (held-out loss {held[best]:.4f}), the best." in log

    from evaluation.report_facts import training_facts

    facts = dict(training_facts(run))
    assert facts["Final adapter"].startswith(f"checkpoint-{best}, the best by held-out loss ({held[best]:.4f})")
    assert f"early stopping ended the run at step {stop} of 20" in facts["Final adapter"]


# -- trackers ----------------------------------------------------------------------------------------
def test_tensorboard_writes_event_files_in_the_run_while_the_live_plot_fills(tiny_model_dir, runs_root):
    run = tiny_run(tiny_model_dir, max_steps=2, report_to="tensorboard", eval_steps=2)
    status = run_job(run, threading.Event())
    assert status["state"] == "completed", status
    events = list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert not (run.checkpoints_dir / "runs").exists()  # not transformers' default place
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(run.path / "tensorboard")).Reload().Tags()["scalars"]
    assert "train/loss" in scalars and "eval/loss" in scalars
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(losses) == 2 and any("eval_loss" in m for m in run.metrics())
    assert run.run_yaml()["tracking"] == {"report_to": "tensorboard", "folder": "tensorboard"}
    assert "Tracking: TensorBoard event files in" in run.log_tail(100)


def test_a_missing_tracker_package_is_refused_with_the_line_that_installs_it(tiny_model_dir, runs_root,
                                                                           monkeypatch):
    tracking.check_tracker("none")
    tracking.check_tracker("tensorboard")  # pinned in requirements.txt
    tracking.check_tracker("trackio")
    # W&B is left out of requirements.txt (see README): without it, the run is refused up front
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert not tracking.installed("wandb")
    with pytest.raises(ConfigError, match=r"^report_to: W&B needs the wandb package, .*: pip install wandb "):
        tracking.check_tracker("wandb")
    run = tiny_run(tiny_model_dir, report_to="wandb")
    status = run_job(run, threading.Event())
    assert status["state"] == "failed" and status["reason"].startswith("report_to: W&B needs the wandb package")
    assert not run.metrics()


def test_wandb_is_offline_without_a_key_and_writes_in_the_run_folder(tmp_path, monkeypatch):
    from finetune_core.runs.store import Run

    run = Run(tmp_path / "20260101-000000-toy-abcdef")
    cfg = RunConfig(report_to="wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert tracking.tracker_facts(cfg, run) == {"report_to": "wandb", "folder": "wandb", "mode": "offline"}
    assert "offline, in 20260101-000000-toy-abcdef/wandb" in tracking.describe(cfg, run)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.tracker_facts(cfg, run)["mode"] == "online"
    # the trackers report through their callbacks; TrainingArguments never names one (no second copy)
    assert tracking.tracker_arguments(cfg, run)["report_to"] == "none"


def test_cli_train_says_what_it_set_and_refuses_before_a_run_exists(runs_root, monkeypatch, capsys):
    from finetune_core.cli import main

    assert main(["train", "--set", "keep_best=true", "--set", "eval_fraction=0"]) == 2
    assert "error: keep_best: choosing the best checkpoint needs held-out rows" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(["train", "--set", "early_stopping_patience=2", "--set", "max_steps=30",
                 "--set", "report_to=wandb"]) == 2
    err = capsys.readouterr().err
    assert "Early stopping needs the held-out loss during training: eval_steps set to 3" in err
    assert "error: report_to: W&B needs the wandb package" in err
    assert not runs_root.exists() or not any(runs_root.iterdir())
