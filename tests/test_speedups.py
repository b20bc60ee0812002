"""CPU training speed-ups (finetune_core.speedups) keep the training maths unchanged:
dropout still drops with probability p and keeps the expectation, the label-only
LM head gives the same loss and gradients, and dropping a right-padding mask
changes no real token's output."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from finetune_core.speedups import packed_attention as cpu_speed
from finetune_core.speedups.dropout import FastDropout, use_fast_lora_dropout
from finetune_core.speedups.lm_head import label_only_lm_head


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


# -- dropout -----------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.05, 0.3])
def test_fast_dropout_drops_with_probability_p_and_keeps_the_mean(p):
    torch.manual_seed(0)
    drop = FastDropout(p).train()
    x = torch.ones(1_000_000)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.002
    assert abs(y.mean().item() - 1.0) < 0.005  # survivors scaled by 1/(1-p)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - drop.cut / 65536)))


def test_fast_dropout_masks_are_fresh_reproducible_and_carry_gradients():
    drop = FastDropout(0.5).train()
    x = torch.randn(4, 64, requires_grad=True)
    torch.manual_seed(1)
    a = drop(x)
    b = drop(x)
    assert not torch.equal(a == 0, b == 0)  # a new mask each call
    torch.manual_seed(1)
    assert torch.equal(drop(x), a)  # same seed, same mask
    a.sum().backward()
    torch.testing.assert_close(x.grad, (a / x).detach())  # gradient is the scaled mask
    drop.eval()
    assert drop(x) is x


def test_fast_dropout_rejects_bad_p():
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.0)


def test_lora_dropouts_are_swapped():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear"))
    assert use_fast_lora_dropout(model) == 2 * 7  # 7 adapted projections per layer
    drops = [m for m in model.modules() if isinstance(m, FastDropout)]
    assert len(drops) == 14 and all(d.p == 0.1 for d in drops)
    assert not any(type(m) is nn.Dropout for m in model.modules())
    no_dropout = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear"))
    assert use_fast_lora_dropout(no_dropout) == 0


# -- label-only LM head ------------------------------------------------------------
def fused_loss_and_grad(model, batch):
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)
    model.zero_grad()
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    return out.loss.detach(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()


def test_label_only_lm_head_gives_the_same_loss_and_gradients(monkeypatch):
    import trl.trainer.utils as trl_utils

    torch.manual_seed(0)
    ids = torch.randint(1, 120, (3, 12))
    labels = ids.clone()
    labels[:, :8] = -100  # prompt positions: no loss
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    full_loss, full_grad = fused_loss_and_grad(tiny_llama(), batch)
    scored = []
    original = trl_utils._use_triton
    real_apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        scored.append(hidden.shape[0])
        return real_apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    with label_only_lm_head():
        assert trl_utils._use_triton(torch.device("cpu")) is True
        assert trl_utils._use_triton(torch.device("meta")) is original(torch.device("meta"))
        loss, grad = fused_loss_and_grad(tiny_llama(), batch)
    assert scored == [3 * 4]  # only the 4 label positions of each row were projected
    assert trl_utils._use_triton is original  # put back when the block ends
    torch.testing.assert_close(loss, full_loss)
    torch.testing.assert_close(grad, full_grad)
    # Reference: plain cross-entropy over full logits.
    ref = tiny_llama()
    logits = ref(input_ids=ids).logits[:, :-1]
    ce = nn.functional.cross_entropy(logits.reshape(-1, 120), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ce.detach())


# -- training without padding ----------------------------------------------------
def right_padded_batch():
    torch.manual_seed(4)
    ids = torch.randint(1, 120, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    labels = ids.clone()
    labels[:, :2] = -100
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_packed_training_matches_padded_training():
    batch = right_padded_batch()
    logits, loss, grads = loss_and_grads(tiny_llama().train(), batch)
    model = tiny_llama().train()
    assert cpu_speed.train_without_padding(model)
    seen = []
    model.model.layers[0].self_attn.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["hidden_states"].shape), with_kwargs=True)
    packed_logits, packed_loss, packed_grads = loss_and_grads(model, batch)
    assert seen == [(1, 10 + 6 + 3, 32)]  # one row of the 19 real tokens, no padding
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(packed_logits[real], logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed_loss, loss)
    assert len(packed_grads) == len(grads)
    for a, b in zip(packed_grads, grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_packed_rows_do_not_see_each_other():
    model = tiny_llama().eval()
    assert cpu_speed.train_without_padding(model)
    batch = right_padded_batch()
    with torch.no_grad():
        first = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        changed = batch["input_ids"].clone()
        changed[0] = torch.randint(1, 120, (10,))  # another first row: rows 1 and 2 must not move
        second = model(input_ids=changed, attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(first[1:], second[1:])


def test_generation_with_left_padding_is_left_alone():
    model = tiny_llama().eval()
    ids = torch.randint(1, 120, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as generation uses
    with torch.no_grad():
        before = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert cpu_speed.train_without_padding(model)
    with torch.no_grad():
        after = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(before, after)


def test_models_without_sdpa_are_not_hooked():
    model = tiny_llama()
    model.set_attn_implementation("eager")
    assert not cpu_speed.train_without_padding(model)


def test_rows_packed_without_boundaries_are_kept_apart():
    """A batch packed elsewhere (position ids restarting, no cu_seq_lens) still gets per-row attention."""
    model = tiny_llama().eval()
    assert cpu_speed.train_without_padding(model)
    a, b = torch.randint(1, 120, (1, 7)), torch.randint(1, 120, (1, 5))
    packed = torch.cat([a, b], 1)
    positions = torch.cat([torch.arange(7), torch.arange(5)])[None]
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions).logits
        alone = model(input_ids=b).logits
    torch.testing.assert_close(together[:, 7:], alone, atol=1e-5, rtol=1e-5)


# -- bf16 attention ------------------------------------------------------------------
def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("length", [1, 9, 40])
def test_grouped_bf16_attention_is_causal_attention(length):
    torch.manual_seed(length)
    q = torch.randn(1, 6, length, 16).bfloat16().requires_grad_()
    k, v = (torch.randn(1, 2, length, 16).bfloat16().requires_grad_() for _ in range(2))
    got = cpu_speed.grouped_causal_attention(q, k, v, 0.25)
    assert got.shape == q.shape and got.dtype == torch.bfloat16
    weights = torch.randn(got.shape)
    (got.float() * weights).sum().backward()
    # float64 reference: query heads 0-2 read key/value head 0, heads 3-5 head 1
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    kk, vv = k64.repeat_interleave(3, dim=1), v64.repeat_interleave(3, dim=1)
    scores = q64 @ kk.transpose(-1, -2) * 0.25
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    want = torch.softmax(scores, -1) @ vv
    (want * weights.double()).sum().backward()
    assert _rel_err(got, want) < 2e-2
    for a, b in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        if b.norm() > 0:  # a one-token row has no gradient for its query
            assert _rel_err(a, b) < 3e-2


def test_causal_softmax_gradient_by_autograd_check():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    future = torch.full((5, 5), float("-inf"), dtype=torch.float64).triu_(1)
    probs = cpu_speed.CausalSoftmax.apply(scores, 0.5, future)
    torch.testing.assert_close(probs, torch.softmax(scores * 0.5 + future, -1))
    assert torch.autograd.gradcheck(lambda s: cpu_speed.CausalSoftmax.apply(s, 0.5, future), (scores,))


def test_bf16_rows_take_grouped_attention_up_to_the_length_limit(monkeypatch):
    calls = []
    real = cpu_speed.grouped_causal_attention
    monkeypatch.setattr(cpu_speed, "grouped_causal_attention", lambda *a: calls.append(a[0].shape[2]) or real(*a))
    monkeypatch.setattr(cpu_speed, "GROUPED_MAX_LEN", 8)
    model = tiny_llama().to(torch.bfloat16).train()
    assert cpu_speed.train_without_padding(model)
    batch = right_padded_batch()  # rows of 10, 6 and 3 tokens
    loss_and_grads(model, batch)
    assert calls == [6, 3, 6, 3]  # both layers; the 10-token row goes to the SDPA kernel
    calls.clear()
    loss_and_grads(tiny_llama().train(), batch)  # float32: always the kernel
    assert calls == []


def test_packed_bf16_training_matches_padded_bf16_training():
    batch = right_padded_batch()
    exact = loss_and_grads(tiny_llama().train(), batch)
    padded = loss_and_grads(tiny_llama().to(torch.bfloat16).train(), batch)
    model = tiny_llama().to(torch.bfloat16).train()
    assert cpu_speed.train_without_padding(model)
    packed = loss_and_grads(model, batch)
    assert abs(float(packed[1]) - float(exact[1])) < 1e-2 * float(exact[1])
    real = batch["attention_mask"].bool()
    # no further from float32 than bf16 training without the packing
    assert _rel_err(packed[0][real], exact[0][real]) < 1.5 * _rel_err(padded[0][real], exact[0][real]) + 1e-3
    ours = sum(_rel_err(a, b) for a, b in zip(packed[2], exact[2])) / len(exact[2])
    theirs = sum(_rel_err(a, b) for a, b in zip(padded[2], exact[2])) / len(exact[2])
    assert ours < 1.5 * theirs + 1e-3, (ours, theirs)


def tiny_sliding(kind: str, seed: int = 0):
    """Tiny random models whose attention is not plain causal: a window shorter than the rows."""
    from transformers import Gemma3TextConfig, Gemma3ForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, attn_implementation="sdpa")
    if kind == "mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=4, **common))
    return Gemma3ForCausalLM(Gemma3TextConfig(sliding_window=4, head_dim=8, layer_types=[
        "sliding_attention", "full_attention"], **common))


@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
def test_sliding_window_models_train_on_the_librarys_own_attention(kind):
    """Rows of 10 tokens, window of 4: the packed path would attend past the window, so
    it is not applied, and the loss and gradients are the library's own."""
    batch = right_padded_batch()
    logits, loss, grads = loss_and_grads(tiny_sliding(kind).train(), batch)
    model = tiny_sliding(kind).train()
    assert "sliding-window" in cpu_speed.packing_unsafe_reason(model, max_length=10)
    assert not cpu_speed.train_without_padding(model, max_length=10)
    _, same_loss, same_grads = loss_and_grads(model, batch)
    torch.testing.assert_close(same_loss, loss)
    for a, b in zip(same_grads, grads):
        torch.testing.assert_close(a, b)
    assert cpu_speed.packing_unsafe_reason(tiny_llama(), max_length=10) == ""


def test_a_run_on_a_sliding_window_model_says_so_in_its_log(tmp_path, tokenizer, monkeypatch):
    from transformers import MistralConfig, MistralForCausalLM

    from conftest import make_trained_run

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, sliding_window=8, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    folder = tmp_path / "tiny-mistral"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    run, status = make_trained_run(folder, steps=2)
    assert status["state"] == "completed", status
    log = run.log_path.read_text()
    assert "packed attention" in log and "sliding-window attention (8 tokens) shorter than the rows" in log, log
    facts = run.run_yaml()
    assert "packed_attention" not in facts["speedups_applied"] and "fused_lora" in facts["speedups_applied"]
    assert "sliding-window" in facts["speedups_skipped"]["packed_attention"]


# -- the switch and the library names it depends on ---------------------------------
def test_trl_still_has_the_function_the_label_only_head_replaces():
    """Fails loudly when TRL renames `_use_triton`, changes its signature, or stops asking it
    in the fused LM head: the label-only head would then silently do nothing."""
    import inspect

    import trl.trainer.utils as trl_utils

    from finetune_core.speedups.lm_head import unavailable_reason

    assert unavailable_reason() == ""
    assert list(inspect.signature(trl_utils._use_triton).parameters) == ["device"]
    assert "_use_triton(hidden_states.device)" in inspect.getsource(trl_utils.add_fused_lm_head)


def test_label_only_head_stays_in_its_thread_and_block():
    import threading

    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    seen = {}
    with label_only_lm_head():
        other = threading.Thread(target=lambda: seen.update(other=trl_utils._use_triton(torch.device("cpu"))))
        other.start()
        other.join()
        with label_only_lm_head():  # nested (a trainer evaluating inside train)
            seen["nested"] = trl_utils._use_triton(torch.device("cpu"))
        seen["after_nested"] = trl_utils._use_triton(torch.device("cpu"))
    assert seen == {"other": original(torch.device("cpu")), "nested": True, "after_nested": True}
    assert trl_utils._use_triton is original


def lora_llama(dropout: float = 0.1):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(tiny_llama(), LoraConfig(r=4, lora_dropout=dropout, target_modules="all-linear"))


@pytest.mark.parametrize("how", ["setting", "environment"])
def test_speedups_off_leaves_the_libraries_paths_untouched(how, monkeypatch):
    import trl.trainer.utils as trl_utils

    from finetune_core.speedups import TRAINING, apply_training

    if how == "environment":
        monkeypatch.setenv("STUDIO_SPEEDUPS", "off")
    model = lora_llama()
    forwards = {name: m.forward for name, m in model.named_modules()}
    original = trl_utils._use_triton
    report = apply_training(model, "cpu", "float32", 64, "off" if how == "setting" else "auto")
    assert report.applied() == [] and set(report.skipped()) == set(TRAINING)
    assert all("switched off" in why for why in report.skipped().values())
    assert model.get_base_model().config._attn_implementation == "sdpa"
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    assert {name: m.forward for name, m in model.named_modules()} == forwards  # no layer re-bound
    with report.scope():
        assert trl_utils._use_triton is original
    assert "Speed-ups (off): none." in report.summary()


def test_auto_says_what_it_applied_and_why_not_the_rest():
    from finetune_core.speedups import apply_training

    report = apply_training(lora_llama(), "cpu", "float32", 64)
    assert set(report.applied()) == {"packed_attention", "fused_lora", "fused_rms_norm", "fast_lora_dropout",
                                     "label_only_lm_head"}
    assert report.skipped() == {"grouped_bf16_attention": "float32 weights (a bf16 speed-up)"}
    full = apply_training(tiny_llama(), "cpu", "float32", 64)
    assert full.skipped()["fused_lora"] == "no LoRA layers (full fine-tune)"
    assert "packed attention" in full.summary() and "fused LoRA step" in full.summary()


def test_no_speedup_is_applied_on_a_gpu():
    """On CUDA the libraries' kernels are used: the model is left exactly as it was."""
    from finetune_core.speedups import INFERENCE, TRAINING, apply_inference, apply_training

    model = lora_llama()
    report = apply_training(model, "cuda", "bfloat16", 64)
    assert report.applied() == [] and set(report.skipped()) == set(TRAINING)
    assert all(why.startswith("CPU only") for why in report.skipped().values())
    assert model.get_base_model().config._attn_implementation == "sdpa"
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    gen = apply_inference(tiny_llama(), "cuda")
    assert gen.applied() == [] and set(gen.skipped()) == set(INFERENCE)


def test_a_run_with_speedups_off_trains_on_the_libraries_paths_and_records_it(tiny_model_dir, runs_root):
    from conftest import make_trained_run

    from finetune_core.config import RunConfig

    run, status = make_trained_run(tiny_model_dir, steps=2, speedups="off")
    assert status["state"] == "completed", status
    assert RunConfig.load(run.path / "run.yaml").speedups == "off"  # the setting round-trips
    facts = run.run_yaml()
    assert facts["speedups_mode"] == "off" and facts["speedups_applied"] == []
    assert facts["speedups_skipped"]["packed_attention"] == "switched off (speedups: off)"
    assert "Speed-ups (off): none." in run.log_path.read_text()
