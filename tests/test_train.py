"""Training runner: a real TRL SFT run on a tiny model, stop, resume, faults, busy slot."""
from __future__ import annotations

import errno
import json
import math
import threading

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from conftest import toy_rows
from finetune_core.config import PRESETS, ConfigError, RunConfig, preset
from finetune_core.data.dataset import write_jsonl
from finetune_core.training.runner import Busy, TrainingSlot, run_job
from finetune_core.runs.store import create_run, get_run, list_runs
from finetune_core.training.train import TrainingError, check_checkpoint, latest_checkpoint


@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "toy.jsonl"
    write_jsonl(path, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(48)])
    return path


def tiny_cfg(model_dir, data_file, **kw) -> RunConfig:
    base = dict(model=str(model_dir), data_path=str(data_file), max_steps=2, batch_size=4,
                learning_rate=1e-3, lora_r=4, lora_alpha=8, logging_steps=1, save_steps=0)
    base.update(kw)
    return RunConfig.from_dict(base)


class AtStep(TrainerCallback):
    """Calls `action(model)` once, at the end of optimizer step `step`."""

    def __init__(self, step, action):
        self.step, self.action, self.fired = step, action, False

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step and not self.fired:
            self.fired = True
            self.action(model)


def test_lora_two_steps_changes_adapter_not_base(tiny_model_dir, data_file, runs_root):
    base_before = load_file(tiny_model_dir / "model.safetensors")
    run = create_run(tiny_cfg(tiny_model_dir, data_file))
    status = run_job(run, threading.Event())
    assert status["state"] == "completed" and status["step"] == 2
    for name in ("run.yaml", "status.json", "metrics.jsonl", "log.txt", "data/train.jsonl", "data/heldout.jsonl",
                 "adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/tokenizer.json"):
        assert (run.path / name).is_file(), name
    adapter = load_file(run.adapter_dir / "adapter_model.safetensors")
    # PEFT initialises lora_B to zeros: any non-zero B means training moved the adapter.
    b_weights = [t for k, t in adapter.items() if "lora_B" in k]
    assert b_weights and any(t.abs().sum() > 0 for t in b_weights)
    assert base_before.keys() == load_file(tiny_model_dir / "model.safetensors").keys()
    for k, t in load_file(tiny_model_dir / "model.safetensors").items():
        assert torch.equal(t, base_before[k]), k
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any("eval_loss" in m for m in run.metrics())
    held = [json.loads(line) for line in (run.data_dir / "heldout.jsonl").read_text().splitlines()]
    assert len(held) == 5  # 10% of 48, rounded up


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cpu_lora_in_either_precision_saves_a_float32_adapter(tiny_model_dir, data_file, runs_root, precision):
    """bf16 on a CPU (auto picks it where the CPU has bf16 instructions) holds only the frozen
    base in bf16: the adapter trains and is saved in float32."""
    run = create_run(tiny_cfg(tiny_model_dir, data_file, max_steps=4, device="cpu", precision=precision))
    status = run_job(run, threading.Event())
    assert status["state"] == "completed" and status["step"] == 4
    assert f"Training on cpu / {precision}" in run.log_tail(50)
    adapter = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert adapter and all(t.dtype == torch.float32 for t in adapter.values())
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]  # lr 1e-3 on 44 rows: the loss falls in a few steps


def test_stop_mid_run_saves_adapter_and_resume_continues(tiny_model_dir, data_file, runs_root):
    slot = TrainingSlot()
    stopper = AtStep(3, lambda _m: slot.stop())
    run = slot.start(tiny_cfg(tiny_model_dir, data_file, max_steps=40), extra_callbacks=[stopper])
    final = slot.wait(120)
    assert final["state"] == "stopped" and final["step"] == 3, final
    assert final["reason"] == "stopped at step 3"
    assert run.has_adapter()
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.name == "checkpoint-3"
    resumed = slot.start(resume_run=run)
    assert resumed.id == run.id
    final = slot.wait(300)
    assert final["state"] == "completed" and final["step"] == 40, final
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps[:3] == [1, 2, 3] and steps[3] == 4  # continued after 3, did not start over


def test_busy_slot_refuses_second_start_and_first_finishes(tiny_model_dir, data_file, runs_root):
    slot = TrainingSlot()
    started = threading.Event()
    release = threading.Event()

    def hold(_model):
        started.set()
        release.wait(60)

    first = slot.start(tiny_cfg(tiny_model_dir, data_file, max_steps=3), extra_callbacks=[AtStep(1, hold)])
    assert started.wait(120)
    with pytest.raises(Busy) as err:
        slot.start(tiny_cfg(tiny_model_dir, data_file))
    assert first.id in str(err.value)
    assert len(list_runs()) == 1  # the refused start created nothing
    release.set()
    assert slot.wait(120)["state"] == "completed"
    assert slot.active() is None


def test_exception_in_worker_marks_failed_and_frees_slot(tiny_model_dir, data_file, runs_root):
    slot = TrainingSlot()

    def boom(_model):
        raise RuntimeError("injected failure")

    run = slot.start(tiny_cfg(tiny_model_dir, data_file, max_steps=5), extra_callbacks=[AtStep(1, boom)])
    final = slot.wait(120)
    assert final["state"] == "failed"
    assert "injected failure" in final["reason"]
    assert "FAILED" in run.log_tail()
    assert slot.active() is None
    again = slot.start(tiny_cfg(tiny_model_dir, data_file))  # the slot is free again
    assert slot.wait(120)["state"] == "completed" and again.id != run.id


def test_injected_oom_fails_with_advice_and_next_run_works(tiny_model_dir, data_file, runs_root):
    slot = TrainingSlot()

    def oom(_model):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    slot.start(tiny_cfg(tiny_model_dir, data_file, max_steps=5), extra_callbacks=[AtStep(1, oom)])
    final = slot.wait(120)
    assert final["state"] == "failed"
    assert "Out of memory" in final["reason"] and "batch size" in final["reason"]
    slot.start(tiny_cfg(tiny_model_dir, data_file))
    assert slot.wait(120)["state"] == "completed"


def test_nan_loss_fails_without_saving_adapter(tiny_model_dir, data_file, runs_root):
    def poison(model):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.fill_(float("nan"))

    run = create_run(tiny_cfg(tiny_model_dir, data_file, max_steps=6))
    final = run_job(run, threading.Event(), extra_callbacks=[AtStep(2, poison)])
    assert final["state"] == "failed"
    assert "nan" in final["reason"].lower()
    assert not run.has_adapter()


def test_disk_full_while_saving_keeps_previous_adapter(tiny_model_dir, data_file, runs_root, monkeypatch):
    slot = TrainingSlot()
    run = slot.start(tiny_cfg(tiny_model_dir, data_file, max_steps=10), extra_callbacks=[AtStep(2, lambda _m: slot.stop())])
    assert slot.wait(120)["state"] == "stopped"
    before = (run.adapter_dir / "adapter_model.safetensors").read_bytes()

    from peft import PeftModel

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PeftModel, "save_pretrained", full_disk)
    slot.start(resume_run=run)
    final = slot.wait(120)
    assert final["state"] == "failed"
    assert final["reason"].startswith("disk full: the adapter could not be saved")
    assert (run.adapter_dir / "adapter_model.safetensors").read_bytes() == before
    assert not (run.path / ".adapter-tmp").exists()


def test_resume_refuses_incomplete_checkpoint(tiny_model_dir, data_file, runs_root):
    slot = TrainingSlot()
    run = slot.start(tiny_cfg(tiny_model_dir, data_file, max_steps=10), extra_callbacks=[AtStep(2, lambda _m: slot.stop())])
    assert slot.wait(120)["state"] == "stopped"
    ckpt = latest_checkpoint(run)
    (ckpt / "optimizer.pt").unlink()
    with pytest.raises(TrainingError, match="missing optimizer.pt"):
        check_checkpoint(ckpt, "lora")
    slot.start(resume_run=run)
    final = slot.wait(120)
    assert final["state"] == "failed" and "incomplete" in final["reason"]
    assert run.has_adapter()  # the stopped run's adapter is still there


def test_resume_skips_a_half_written_newest_checkpoint(tiny_model_dir, data_file, runs_root):
    slot = TrainingSlot()
    run = slot.start(tiny_cfg(tiny_model_dir, data_file, max_steps=6), extra_callbacks=[AtStep(2, lambda _m: slot.stop())])
    assert slot.wait(120)["state"] == "stopped"
    torn = run.checkpoints_dir / "checkpoint-5"  # what a kill during a save leaves behind
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"")
    slot.start(resume_run=run)
    final = slot.wait(120)
    assert final["state"] == "completed" and final["step"] == 6, final
    log = run.log_tail(60)
    assert "Skipping checkpoint-5: incomplete" in log and "Resuming from checkpoint-2" in log


def test_qlora_refused_on_cpu(tiny_model_dir, data_file, runs_root):
    run = create_run(tiny_cfg(tiny_model_dir, data_file, method="qlora"))
    final = run_job(run, threading.Event())
    assert final["state"] == "failed"
    assert "QLoRA needs a CUDA GPU" in final["reason"]


def test_bad_data_fails_before_training(tiny_model_dir, tmp_path, runs_root):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("", encoding="utf-8")
    run = create_run(tiny_cfg(tiny_model_dir, bad))
    final = run_job(run, threading.Event())
    assert final["state"] == "failed" and "not usable" in final["reason"]


def test_run_yaml_round_trip_and_presets(tmp_path):
    cfg = RunConfig.from_dict(dict(model="bundled", lora_r=8, learning_rate=3e-4, use_dora=True,
                                   prompt_template="Q: {q}"))
    cfg.save(tmp_path / "run.yaml", extra={"resolved_device": "cpu"})
    assert RunConfig.load(tmp_path / "run.yaml") == cfg
    for name in PRESETS:
        assert preset(name).validate().method in ("lora", "full")
    assert preset("OCI AI Quick Actions defaults").lora_r == 32
    unsloth = preset("Unsloth notebook defaults")
    assert (unsloth.lora_r, unsloth.lora_alpha, unsloth.lora_dropout, unsloth.weight_decay) == (16, 16, 0.0, 0.01)
    with pytest.raises(ConfigError, match="lora_r"):
        RunConfig(lora_r=0)  # direct construction validates too
    with pytest.raises(ConfigError, match="method"):
        cfg.with_sets(["method=magic"])
    assert cfg.with_sets(["use_dora=false", "batch_size=2"]).batch_size == 2


def test_run_ids_are_not_paths(runs_root):
    for bad in ("../../etc", "a;rm -rf /", "", "20260101-000000-x-abcdef/../.."):
        with pytest.raises(Exception):
            get_run(bad)
