"""Preference training on a tiny model: DPO and KTO runs complete, stop and resume, start from a parent
SFT run whose merged model is both the start and the reference, and bad data or a bad parent is refused
before a run exists. Rows are written straight into each run's saved split (prepare_split reuses it)."""
from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_trained_run
from finetune_core.config import ConfigError, RunConfig
from finetune_core.data.dataset import write_jsonl
from finetune_core.runs.chain import check_parent
from finetune_core.runs.store import create_run, list_runs, write_json_atomic
from finetune_core.training.events import REWARD_KEYS
from finetune_core.training.preference import check_start, data_problem
from finetune_core.training.runner import TrainingSlot, run_job
from finetune_core.training.train import TrainingError

COLOURS = ("red", "blue", "green")


def pair_rows(n: int = 24) -> list[dict]:
    """Normalised preference pairs (the data layer's shape): the right colour is chosen, a wrong one rejected."""
    rows = []
    for i in range(n):
        colour, wrong = COLOURS[i % 3], COLOURS[(i + 1) % 3]
        rows.append({"prompt": [{"role": "user", "content": f"Ball {i} is {colour}. Which colour is ball {i}?"}],
                     "chosen": [{"role": "assistant", "content": f"It is {colour}."}],
                     "rejected": [{"role": "assistant", "content": f"It is {wrong}."}]})
    return rows


def unpaired_rows(n: int = 24) -> list[dict]:
    """Thumbs up/down rows: the answer is the right colour (desirable) or a wrong one (not)."""
    return [{"prompt": r["prompt"], "completion": r["chosen"] if i % 2 else r["rejected"], "desirable": bool(i % 2)}
            for i, r in enumerate(pair_rows(n))]


def make_run(model_dir, rows, held=None, **overrides):
    """A created run whose split is `rows` (and `held`): no data file is read."""
    settings = dict(model=str(model_dir), data_path="prefs.jsonl", objective="dpo", max_steps=2, batch_size=4,
                    learning_rate=5e-3, lora_r=4, lora_alpha=8, logging_steps=1, max_length=64,
                    precision="float32")
    settings.update(overrides)
    run = create_run(RunConfig.from_dict(settings))
    write_jsonl(run.data_dir / "train.jsonl", rows)
    write_jsonl(run.data_dir / "heldout.jsonl", held if held is not None else rows[:4])
    write_json_atomic(run.data_dir / "report.json", {"format": "preference", "rows": len(rows)})
    return run


def test_dpo_run_trains_the_adapter_logs_rewards_and_leaves_the_base(tiny_model_dir, runs_root):
    base_before = load_file(tiny_model_dir / "model.safetensors")
    run = make_run(tiny_model_dir, pair_rows())
    status = run_job(run, threading.Event())
    assert status["state"] == "completed" and status["step"] == 2, status
    adapter = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # PEFT starts B at zero
    for key, tensor in load_file(tiny_model_dir / "model.safetensors").items():
        assert torch.equal(tensor, base_before[key]), key
    train_events = [m for m in run.metrics() if "loss" in m]
    assert [m["step"] for m in train_events] == [1, 2]
    assert all(set(REWARD_KEYS) <= set(m) for m in train_events)
    assert any("eval_rewards/accuracies" in m for m in run.metrics())
    log = run.log_path.read_text()
    assert "Objective dpo: TRL's DPOTrainer, beta 0.1, loss sigmoid" in log and "reward_acc" in log
    assert run.summary()["objective"] == "dpo" and run.summary()["parent"] == ""


def one_step_gradients(model_dir, objective: str, speedups: str, rows) -> tuple[float, dict]:
    """The loss and adapter gradients of one batch of a freshly built preference trainer."""
    from finetune_core.models.sources import training_policy
    from finetune_core.training.preference import build_preference_trainer

    run = make_run(model_dir, rows, objective=objective, speedups=speedups, lora_dropout=0.1)
    cfg = run.config()
    torch.manual_seed(0)  # the same adapter initialisation on both sides
    trainer, _ = build_preference_trainer(cfg, run, rows, [], training_policy("cpu", "float32"), [], lambda e: None)
    applied = trainer.speedups.applied()
    assert ({"packed_attention", "fused_lora", "fused_rms_norm"} <= set(applied)) == (speedups == "auto"), applied
    gen = torch.Generator().manual_seed(1)
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero: A's gradients (and the rewards) would all be zero
            param.data.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    with trainer.speedups.scope():
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.item(), grads


@pytest.mark.parametrize("objective", ["dpo", "kto", "orpo"])
def test_speedups_give_the_preference_trainers_own_loss_and_gradients(tiny_model_dir, runs_root, objective):
    """The CPU speed-ups stay on for preference runs because, on their forward (policy and reference),
    they give TRL's own loss and adapter gradients."""
    rows = unpaired_rows() if objective == "kto" else pair_rows()
    loss_off, grads_off = one_step_gradients(tiny_model_dir, objective, "off", rows)
    loss_on, grads_on = one_step_gradients(tiny_model_dir, objective, "auto", rows)
    assert loss_on == pytest.approx(loss_off, rel=1e-5)
    assert grads_on.keys() == grads_off.keys() and grads_on
    for name, grad in grads_off.items():
        torch.testing.assert_close(grads_on[name], grad, rtol=1e-4, atol=1e-7, msg=name)
