"""The fused LoRA training step (finetune_core.fused_lora) computes PEFT's LoRA layer:
same outputs, same gradients for the adapter weights and the input, same dropout
masks as FastDropout under the same seed; eval mode, merged or disabled adapters,
and DoRA keep PEFT's own path; the saved adapter is unchanged."""
from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from finetune_core.speedups.dropout import use_fast_lora_dropout
from finetune_core.speedups.fused_lora import LoraBranch, use_fused_lora


def tiny_lora(dropout: float, **lora) -> nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, attn_implementation="sdpa")
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                              target_modules="all-linear", **lora))
    for name, param in model.named_parameters():  # PEFT starts B at zero; give it a value so B matters
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)
    use_fast_lora_dropout(model)
    return model.train()


def batch():
    torch.manual_seed(3)
    ids = torch.randint(1, 120, (3, 9))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def step(model, seed: int = 11):
    model.zero_grad()
    inputs = batch()
    torch.manual_seed(seed)  # the dropout masks come from torch's generator
    out = model(**inputs)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), out.loss.detach(), grads


def fused_calls(model) -> list:
    calls = []
    real = LoraBranch.apply

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    LoraBranch.apply = spy
    return calls, real


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_fused_step_matches_peft(dropout):
    reference = tiny_lora(dropout)
    fused = copy.deepcopy(reference)
    assert use_fused_lora(fused) == 2 * 7  # every adapted projection of both layers
    calls, real = fused_calls(fused)
    try:
        logits, loss, grads = step(fused)
    finally:
        LoraBranch.apply = real
    assert len(calls) == 14  # the fused path really ran
    ref_logits, ref_loss, ref_grads = step(reference)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and all("lora_" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_dropout_is_applied_and_fresh_each_step():
    model = tiny_lora(0.5)
    use_fused_lora(model)
    first, _, _ = step(model, seed=1)
    again, _, _ = step(model, seed=1)
    other, _, _ = step(model, seed=2)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)
    model.eval()
    with torch.no_grad():
        a, b = model(**batch()).logits, model(**batch()).logits
    torch.testing.assert_close(a, b)  # no dropout in eval mode


def test_branch_gradients_by_autograd_check():
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    weight, bias = torch.randn(7, 6, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    a = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    keep = (torch.rand(5, 6) >= 0.3).double()
    for mask in (None, keep):
        assert torch.autograd.gradcheck(lambda x, a, b: LoraBranch.apply(x, weight, bias, a, b, mask, 1.7), (x, a, b))
        expected = x @ weight.T + bias + 1.7 * ((x if mask is None else x * mask) @ a.T) @ b.T
        torch.testing.assert_close(LoraBranch.apply(x, weight, bias, a, b, mask, 1.7), expected)


def test_other_paths_use_peft():
    model = tiny_lora(0.2)
    use_fused_lora(model)
    calls, real = fused_calls(model)
    try:
        model.eval()
        with torch.no_grad():
            model(**batch())
        model.train()
        with model.disable_adapter():
            model(**batch())
        with torch.no_grad():
            model(**batch())
    finally:
        LoraBranch.apply = real
    assert calls == []
    dora = tiny_lora(0.0, use_dora=True)
    assert use_fused_lora(dora) == 0


def test_saved_adapter_is_unchanged(tmp_path):
    reference = tiny_lora(0.1)
    fused = copy.deepcopy(reference)
    use_fused_lora(fused)
    assert use_fused_lora(fused) == 0  # applying twice changes nothing
    reference.save_pretrained(tmp_path / "ref")
    fused.save_pretrained(tmp_path / "fused")
    from safetensors.torch import load_file

    ref, got = load_file(tmp_path / "ref" / "adapter_model.safetensors"), load_file(
        tmp_path / "fused" / "adapter_model.safetensors")
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm())


def test_bf16_base_with_float32_adapter():
    """A CPU with bf16 instructions trains a bf16 base; the adapter and its gradients stay float32."""
    torch.manual_seed(0)
    x = torch.randn(40, 24).bfloat16().requires_grad_()
    weight = torch.randn(32, 24).bfloat16()
    a, b = torch.randn(4, 24, requires_grad=True), torch.randn(32, 4, requires_grad=True)
    keep = (torch.rand(40, 24) >= 0.2).bfloat16()
    out = LoraBranch.apply(x, weight, None, a, b, keep, 0.5)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert a.grad.dtype == b.grad.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    # the same maths in float64 from the same (bf16-rounded) inputs
    x64, a64, b64 = x.detach().double().requires_grad_(), a.detach().double().requires_grad_(), \
        b.detach().double().requires_grad_()
    want = x64 @ weight.double().T + 0.5 * ((x64 * keep.double()) @ a64.T) @ b64.T
    want.square().sum().backward()
    assert _rel_err(out, want) < 2e-2
    for got, ref in ((x.grad, x64.grad), (a.grad, a64.grad), (b.grad, b64.grad)):
        assert _rel_err(got, ref) < 3e-2


def test_bf16_model_trains_through_the_fused_step():
    """Over a bf16 base, the fused step's gradients are as close to float32 training as PEFT's own."""
    exact = tiny_lora(0.0)
    peft_bf16 = copy.deepcopy(exact)
    peft_bf16.base_model.model.to(torch.bfloat16)
    for name, param in peft_bf16.named_parameters():  # as PEFT sets it up: float32 adapter over a bf16 base
        if "lora_" in name:
            param.data = param.data.float()
    fused = copy.deepcopy(peft_bf16)
    assert use_fused_lora(fused) == 14
    calls, real = fused_calls(fused)
    try:
        _, loss, grads = step(fused)
    finally:
        LoraBranch.apply = real
    assert len(calls) == 14
    _, exact_loss, exact_grads = step(exact)
    _, peft_loss, peft_grads = step(peft_bf16)
    assert abs(float(loss) - float(exact_loss)) < 2e-2 * float(exact_loss)
    assert grads.keys() == exact_grads.keys()
    assert all(g.dtype == torch.float32 for g in grads.values())
    ours = sum(_rel_err(grads[n], exact_grads[n]) for n in grads) / len(grads)
    theirs = sum(_rel_err(peft_grads[n], exact_grads[n]) for n in grads) / len(grads)
    assert ours < 1.5 * theirs + 1e-3, (ours, theirs)
