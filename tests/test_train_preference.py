"""Preference training on a tiny model: DPO and KTO runs complete, stop and resume, start from a parent
SFT run whose merged model is both the start and the reference, and bad data or a bad parent is refused
before a run exists. Rows are written straight into each run's saved split (prepare_split reuses it)."""
from __future__ import annotations

import math
import threading

import gradio as gr
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from conftest import REPO, make_trained_run, toy_rows
from finetune_core.config import PRESETS, ConfigError, RunConfig
from finetune_core.data.dataset import write_jsonl
from finetune_core.runs.chain import check_parent, describe_chain
from finetune_core.runs.ownership import Visitor
from finetune_core.runs.store import create_run, list_runs, write_json_atomic
from finetune_core.training.events import REWARD_KEYS
from finetune_core.training.preference import check_start
from finetune_core.training.runner import run_job
from finetune_core.training.train import TrainingError, latest_checkpoint

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
    settings = dict(model=str(model_dir), data_path="prefs.jsonl", objective="dpo", max_steps=2, batch_size=2,
                    learning_rate=5e-3, lora_r=4, lora_alpha=8, logging_steps=1, max_length=64,
                    precision="float32")
    settings.update(overrides)
    run = create_run(RunConfig.from_dict(settings))
    write_jsonl(run.data_dir / "train.jsonl", rows)
    write_jsonl(run.data_dir / "heldout.jsonl", held if held is not None else rows[:2])
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
    assert "RMSNorm backward: the reference is scored without gradients" in log
    assert run.summary()["objective"] == "dpo" and run.summary()["parent"] == ""


def test_pairs_whose_prompt_fills_max_length_are_counted_in_the_log_not_dropped_silently(tiny_model_dir,
                                                                                        runs_root):
    rows = pair_rows(6)
    long_prompt = " ".join(["ball"] * 80)  # about 80 tokens: more than max_length 64 on its own
    rows[0] = {**rows[0], "prompt": [{"role": "user", "content": long_prompt}]}
    rows[3] = {**rows[3], "prompt": [{"role": "user", "content": long_prompt + " again"}]}
    run = make_run(tiny_model_dir, rows, max_steps=1)
    status = run_job(run, threading.Event())
    assert status["state"] == "completed", status
    assert "2 of 6 training rows left out: their prompt alone is 64 tokens or longer" in run.log_path.read_text()
    assert run.run_yaml()["rows_left_out_by_length"] == 2


def one_step_gradients(model_dir, objective: str, speedups: str, rows, **settings) -> tuple[float, dict]:
    """The loss and adapter gradients of one batch of a freshly built preference trainer."""
    from finetune_core.models.sources import training_policy
    from finetune_core.training.preference import build_preference_trainer

    run = make_run(model_dir, rows, objective=objective, speedups=speedups, lora_dropout=0.1, **settings)
    cfg = run.config()
    torch.manual_seed(0)  # the same adapter initialisation on both sides
    trainer, _ = build_preference_trainer(cfg, run, rows, [], training_policy("cpu", "float32"), [], lambda e: None)
    applied = set(trainer.speedups.applied())
    # the fused norm only where no reference is scored (see the test below)
    expected = {"packed_attention", "fused_lora", *(("fused_rms_norm",) if objective == "orpo" else ())}
    assert applied == (expected | {"label_only_lm_head"} if speedups == "auto" else set()), applied
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


@pytest.mark.parametrize("objective, loss_type", [("dpo", "auto"), ("dpo", "sigmoid+sft"), ("kto", "auto"),
                                                  ("orpo", "auto")])
def test_speedups_give_the_preference_trainers_own_loss_and_gradients(tiny_model_dir, runs_root, objective,
                                                                      loss_type):
    """The CPU speed-ups stay on for preference runs because, on their forward (policy and reference),
    they give TRL's own loss and adapter gradients."""
    rows = unpaired_rows() if objective == "kto" else pair_rows()
    loss_off, grads_off = one_step_gradients(tiny_model_dir, objective, "off", rows, loss_type=loss_type)
    loss_on, grads_on = one_step_gradients(tiny_model_dir, objective, "auto", rows, loss_type=loss_type)
    assert loss_on == pytest.approx(loss_off, rel=1e-5)
    assert grads_on.keys() == grads_off.keys() and grads_on
    for name, grad in grads_off.items():
        torch.testing.assert_close(grads_on[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_the_fused_norm_is_withheld_where_a_reference_is_scored_without_gradients():
    """The fused RMSNorm step runs only where gradients are taken: the policy would get it and the
    reference (no gradients) the library's norm, which rounds a few bf16 values differently, so at step
    0 policy and reference would differ (on the bundled model the DPO loss was 0.671, not log 2)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from finetune_core.speedups.fused_norm import RMSNormStep
    from finetune_core.training.preference import withheld_speedups

    torch.manual_seed(0)
    norm = LlamaRMSNorm(576).to(torch.bfloat16)
    norm.weight.data = (torch.rand(576) * 2).to(torch.bfloat16)
    x = (torch.randn(4096, 576) * torch.rand(4096, 1) * 10).to(torch.bfloat16)
    with torch.no_grad():
        assert not torch.equal(norm(x), RMSNormStep.apply(x, norm.weight, norm.variance_epsilon))
    assert "fused_rms_norm" in withheld_speedups(RunConfig(objective="dpo"))
    assert "fused_rms_norm" in withheld_speedups(RunConfig(objective="kto", method="full"))
    assert withheld_speedups(RunConfig(objective="dpo", reference="none")) == {}  # no reference is scored
    assert withheld_speedups(RunConfig(objective="orpo")) == {}


class AtStep(TrainerCallback):
    """Calls `action(model)` at the end of optimizer step `step` (and `at_begin`/`at_end` around training)."""

    def __init__(self, step=0, action=None, at_begin=None, at_end=None):
        self.step, self.action, self.at_begin, self.at_end = step, action, at_begin, at_end

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.at_begin:
            self.at_begin(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.action and state.global_step == self.step:
            self.action(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.at_end:
            self.at_end(model)


IDS = torch.tensor([[1, 20, 300, 4000, 5, 60, 700, 8000]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def test_dpo_from_a_parent_sft_run_starts_from_and_is_referenced_to_the_merged_parent(tiny_model_dir, runs_root,
                                                                                      capsys):
    from peft import PeftModel

    from finetune_core.cli import main
    from transformers import AutoModelForCausalLM

    parent, status = make_trained_run(tiny_model_dir, steps=2, label=False, batch_size=4)
    assert status["state"] == "completed", status
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_logits = logits(base)
    parent_logits = logits(PeftModel.from_pretrained(base, str(parent.adapter_dir)))  # applied, not merged
    assert not torch.allclose(parent_logits, base_logits, atol=1e-3)  # the parent's adapter matters here
    seen = {}

    def at_end(model):
        seen["policy"] = logits(model)
        with model.disable_adapter():  # TRL's reference: the new adapter off
            seen["reference"] = logits(model)

    watch = AtStep(at_begin=lambda model: seen.update(start=logits(model)), at_end=at_end)
    run = make_run(tiny_model_dir, pair_rows(), parent_run=parent.id, learning_rate=1e-2)
    status = run_job(run, threading.Event(), extra_callbacks=[watch])
    assert status["state"] == "completed", status
    torch.testing.assert_close(seen["start"], parent_logits, rtol=1e-4, atol=1e-4)  # base + parent merged
    torch.testing.assert_close(seen["reference"], parent_logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(seen["policy"], parent_logits, atol=1e-4)  # the new adapter moved away from it
    assert run.run_yaml()["parent_run"] == parent.id and run.summary()["parent"] == parent.id
    assert describe_chain(run) == f"{tiny_model_dir} -> {parent.name} -> {run.name}"
    assert f"starts from run {parent.name!r} merged" in run.log_path.read_text()
    capsys.readouterr()
    assert main(["runs"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert f"  dpo  {tiny_model_dir}  from {parent.id}  " in listed[run.id] and "  sft  " in listed[parent.id]


def test_dpo_with_the_sft_term_adds_the_chosen_answers_loss(tiny_model_dir, runs_root):
    run = make_run(tiny_model_dir, pair_rows(), loss_type="sigmoid+sft", max_steps=1)
    assert run_job(run, threading.Event())["state"] == "completed"
    first = next(m for m in run.metrics() if "loss" in m)
    # at step 0 the policy is the reference: DPO's part is log 2, the rest is the chosen answers' NLL
    assert first["loss"] > math.log(2) + 1 and first["rewards/margins"] == 0
    assert "loss sigmoid+sft" in run.log_path.read_text()


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_stop_then_resume_a_preference_run(tiny_model_dir, runs_root, objective):
    stop = threading.Event()
    rows = pair_rows() if objective == "dpo" else unpaired_rows()
    run = make_run(tiny_model_dir, rows, max_steps=3, objective=objective)
    status = run_job(run, stop, extra_callbacks=[AtStep(1, lambda _m: stop.set())])
    assert status["state"] == "stopped" and status["step"] == 1, status
    assert run.has_adapter() and latest_checkpoint(run).name == "checkpoint-1"
    status = run_job(run, threading.Event(), resume=True)
    assert status["state"] == "completed" and status["step"] == 3, status
    assert [m["step"] for m in run.metrics() if "loss" in m] == [1, 2, 3]  # continued, did not start over
    assert "Resuming from checkpoint-1." in run.log_path.read_text()


@pytest.mark.parametrize("objective, rows, said", [
    ("kto", "unpaired", "Objective kto: TRL's KTOTrainer"),
    ("kto", "pairs", "KTO: the 24 pairs are unpaired into 48 answers"),
    ("orpo", "pairs", "Objective orpo: TRL's ORPOTrainer"),
    ("sft", "pairs", "SFT trains on the chosen answers"),
])
def test_kto_orpo_and_sft_train_on_the_rows_they_take(tiny_model_dir, runs_root, objective, rows, said):
    run = make_run(tiny_model_dir, unpaired_rows() if rows == "unpaired" else pair_rows(), objective=objective)
    status = run_job(run, threading.Event())
    assert status["state"] == "completed" and status["step"] == 2, status
    assert said in run.log_path.read_text()
    steps = [m for m in run.metrics() if "loss" in m]
    assert len(steps) == 2 and all(math.isfinite(m["loss"]) for m in steps)
    keys = set().union(*steps)
    if objective == "kto":  # a batch of 2 may hold only desirable (or only undesirable) answers
        assert "kl" in keys and keys & {"rewards/chosen", "rewards/rejected"}
    if objective == "orpo":
        assert set(REWARD_KEYS) <= keys


@pytest.mark.parametrize("settings, said", [
    ({"method": "full", "learning_rate": 1e-4}, "a frozen copy of the start model is kept as the reference"),
    ({"reference": "none"}, "no reference model (reference-free"),
])
def test_full_dpo_keeps_a_frozen_reference_and_reference_none_is_reference_free(tiny_model_dir, runs_root,
                                                                                 settings, said):
    run = make_run(tiny_model_dir, pair_rows(), **settings)
    status = run_job(run, threading.Event())
    assert status["state"] == "completed", status
    assert said in run.log_path.read_text()
    first = next(m for m in run.metrics() if "loss" in m)
    if settings.get("reference") == "none":  # reward = beta * log p(answer), no reference to subtract
        assert first["rewards/chosen"] < -1 and first["rewards/rejected"] < -1
    else:  # the frozen copy is the model at step 0: no reward yet, the loss is log 2
        assert first["rewards/chosen"] == 0 and first["loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert (run.adapter_dir / "model.safetensors").is_file()


def test_a_file_the_objective_cannot_use_is_refused_before_a_run_exists(tiny_model_dir, runs_root, tmp_path,
                                                                         capsys):
    from finetune_core.cli import main

    data = tmp_path / "chat.jsonl"
    write_jsonl(data, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(12)])
    cfg = RunConfig.from_dict({"model": str(tiny_model_dir), "data_path": str(data), "objective": "dpo"})
    with pytest.raises(TrainingError, match=r"objective dpo needs chosen/rejected pairs .* chat.jsonl holds "
                                            "prompt/answer demonstrations"):
        check_start(cfg)
    code = main(["train", "--set", f"data_path={data}", "--set", "objective=dpo", "--set", f"model={tiny_model_dir}"])
    assert code == 2 and "error: objective dpo needs chosen/rejected pairs" in capsys.readouterr().err
    check_start(cfg.with_overrides({"objective": "sft"}))  # the same file is fine for SFT
    assert list_runs() == []
    # a split saved with such rows (an older run, a hand edit): the run fails before loading a model
    run = make_run(tiny_model_dir, toy_rows(12))
    status = run_job(run, threading.Event())
    assert status["state"] == "failed" and status["reason"].startswith("The run's training rows: objective dpo")
    assert "Loading model" not in run.log_path.read_text()


def test_the_command_line_trains_dpo_from_a_parent_on_a_pair_file(tiny_model_dir, runs_root, capsys):
    """`train --set objective=dpo --set parent_run=<id>` on the project's sample pair file, through the data
    layer's reader; the thumbs sample is refused for SFT before a run exists."""
    from finetune_core.cli import main

    parent, _ = make_trained_run(tiny_model_dir, steps=1)
    sets = {"data_path": REPO / "sample_data" / "helpful_pairs.jsonl", "objective": "dpo", "parent_run": parent.id,
            "model": tiny_model_dir, "max_steps": 2, "batch_size": 2, "max_length": 64, "lora_r": 4,
            "precision": "float32"}
    assert main(["train", "--quiet", *(x for k, v in sets.items() for x in ("--set", f"{k}={v}"))]) == 0, \
        capsys.readouterr().err
    run = next(r for r in list_runs() if r.id != parent.id)
    assert run.status()["state"] == "completed" and run.config().parent_run == parent.id
    assert run.summary()["objective"] == "dpo" and (run.data_dir / "heldout.jsonl").is_file()
    thumbs = RunConfig.from_dict({"data_path": str(REPO / "sample_data" / "helpful_thumbs.jsonl")})
    with pytest.raises(TrainingError, match="objective sft learns from demonstrations, and helpful_thumbs.jsonl "
                                            "holds answers marked desirable or not"):
        check_start(thumbs)
    check_start(thumbs.with_overrides({"objective": "kto"}))


def fake_adapter(run) -> None:
    """Mark a run as having a saved adapter (check_parent reads no weights)."""
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")


def test_check_parent_refuses_a_missing_unfinished_or_foreign_parent(tiny_model_dir, runs_root):
    def cfg(**kw):
        return RunConfig.from_dict({"model": str(tiny_model_dir), "objective": "dpo", **kw})

    assert check_parent(cfg()) is None
    gone = "20260101-000000-gone-abcdef"
    with pytest.raises(ConfigError, match=f"parent_run: Run {gone} does not exist"):
        check_parent(cfg(parent_run=gone))
    unfinished = create_run(cfg(objective="sft"), name="unfinished")
    with pytest.raises(ConfigError, match=f"parent_run: Run {unfinished.id} has no saved adapter"):
        check_parent(cfg(parent_run=unfinished.id))
    fake_adapter(unfinished)
    assert check_parent(cfg(parent_run=unfinished.id)).id == unfinished.id
    with pytest.raises(ConfigError, match=r"parent_run: run 'unfinished' was trained on model '.*tiny-llama.*', "
                                          r"not on 'bundled'"):
        check_start(cfg(parent_run=unfinished.id, model="bundled"))
    with pytest.raises(ConfigError, match="parent_run: .* is not a run id"):
        cfg(parent_run="../etc")


def test_train_tab_lists_own_parents_plots_rewards_and_shows_the_chain(tiny_model_dir, runs_root, monkeypatch):
    from ui.train_checks import check_preference
    from ui.train_views import NO_PARENT, parent_choices, parent_model, reward_frame, runs_table, tick
    from ui.widgets import build_config_widgets

    monkeypatch.setenv("STUDIO_PUBLIC", "1")  # everything shared, but a parent must be the visitor's own
    alice, bob = Visitor.from_browser_key("alice" * 4), Visitor.from_browser_key("bob" * 6)
    base = {"model": str(tiny_model_dir)}
    mine = create_run(RunConfig.from_dict(base), owner=alice.owner_record(), name="sft of alice")
    theirs = create_run(RunConfig.from_dict(base), owner=bob.owner_record(), name="sft of bob")
    for run in (mine, theirs):
        fake_adapter(run)
        run.set_status(state="completed")
    running = create_run(RunConfig.from_dict(base), owner=alice.owner_record(), name="running")
    assert [v for _, v in parent_choices(alice)] == ["", mine.id] and parent_choices(alice)[0][0] == NO_PARENT
    assert parent_model(mine.id, alice) == str(tiny_model_dir) and parent_model(theirs.id, alice) is None
    with pytest.raises(gr.Error, match=f"parent_run: Run {theirs.id} does not exist"):
        check_preference(RunConfig.from_dict({**base, "parent_run": theirs.id}), alice)
    with pytest.raises(gr.Error, match=f"parent_run: Run {running.id} has no saved adapter"):
        check_preference(RunConfig.from_dict({**base, "parent_run": running.id}), alice)

    child = create_run(RunConfig.from_dict({**base, "objective": "dpo", "parent_run": mine.id}),
                       owner=alice.owner_record(), name="dpo child")
    row = runs_table(alice).set_index("name").loc["dpo child"]
    assert row.method == "dpo · lora" and row.model.endswith(" · from sft of alice")
    assert runs_table(alice).set_index("name").loc["sft of alice"].method == "lora"
    child.append_metric({"step": 1, "loss": 0.69, "rewards/chosen": 0.1, "rewards/rejected": -0.1,
                         "rewards/margins": 0.2, "rewards/accuracies": 1.0})
    assert list(reward_frame(child.metrics()).series) == ["chosen", "rejected", "margin", "reward accuracy"]
    view, _, _ = tick(child.id, None, alice)
    assert view[4]["visible"] is True and list(view[4]["value"].reward) == [0.1, -0.1, 0.2, 1.0]
    view, _, _ = tick(mine.id, None, alice)  # an SFT run: no rewards, the plot hides
    assert view[4]["visible"] is False

    with gr.Blocks():
        widgets = build_config_widgets(("method",))
    assert {"objective", "beta", "loss_type", "reference"} <= set(widgets)
    assert "dpo" in [c[1] for c in widgets["objective"].choices] and widgets["beta"].minimum == 0.001
    assert PRESETS["Quick demo DPO (CPU)"]["objective"] == "dpo"
