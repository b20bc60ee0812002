"""The hand-written RMSNorm backward (finetune_core.fused_norm) gives Llama's RMSNorm
outputs and gradients, for the input and (in full fine-tuning) the weight; it is
given only to norm layers whose forward is Llama's."""
from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from finetune_core.speedups.fused_norm import RMSNormStep, use_fused_rms_norm


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    for module in model.modules():  # norms start at weight 1; make the weight matter
        if isinstance(module, LlamaRMSNorm):
            nn.init.normal_(module.weight, mean=1.0, std=0.3)
    return model.train()


def test_norm_step_matches_llama_norm():
    torch.manual_seed(1)
    norm = LlamaRMSNorm(48, eps=1e-6)
    nn.init.normal_(norm.weight)
    x = (torch.randn(2, 7, 48) * 3).requires_grad_()
    grad = torch.randn(2, 7, 48)
    expected = norm(x)
    expected.backward(grad)
    want_x, want_w = x.grad.clone(), norm.weight.grad.clone()
    x.grad, norm.weight.grad = None, None
    got = RMSNormStep.apply(x, norm.weight, 1e-6)
    got.backward(grad)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(x.grad, want_x)
    torch.testing.assert_close(norm.weight.grad, want_w)


def test_whole_model_gradients_are_unchanged():
    reference = tiny_llama()
    fused = copy.deepcopy(reference)
    assert use_fused_rms_norm(fused) == 2 * 2 + 1  # two per layer and the final norm
    assert use_fused_rms_norm(fused) == 0  # once only
    ids = torch.randint(1, 120, (2, 10))
    results = []
    for model in (reference, fused):
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        results.append((out.logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (ref_logits, ref_grads), (logits, grads) = results
    torch.testing.assert_close(logits, ref_logits)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_other_norms_are_left_alone():
    class ScaledNorm(LlamaRMSNorm):
        def forward(self, hidden_states):  # (1 + weight), as some models do
            return super().forward(hidden_states) * 2

    model = nn.Sequential(ScaledNorm(8), nn.LayerNorm(8), LlamaRMSNorm(8))
    assert use_fused_rms_norm(model) == 1
    assert "forward" not in vars(model[0]) and "forward" in vars(model[2])
