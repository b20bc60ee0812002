"""RMSNorm with a hand-written backward pass, for training on CPU.

Llama-style RMSNorm is written as `weight * x * rsqrt(mean(x**2) + eps)`, and
autograd differentiates it term by term: on a CPU the backward of `x**2`
alone (a pow with a scalar exponent, then two multiplies) costs about ten
times the whole forward pass. `RMSNormStep` computes the same gradient in
four passes over the activations:

    y = w * x * r,  r = (mean(x^2) + eps)^-1/2
    dL/dx = r * (g*w) - x * r^3 * mean((g*w) * x)

`use_fused_rms_norm` gives it to the norm layers whose forward is exactly
Llama's (Qwen2/3, Mistral and others reuse it); anything else keeps its own.
Found with torch.profiler on the 2-core CPU this project targets; the
throughput is in docs/benchmarks.md.
"""
from __future__ import annotations

import types

import torch
from torch import nn


class RMSNormStep(torch.autograd.Function):
    """y = weight * x / sqrt(mean(x^2, last dim) + eps), computed in float32 like Llama's."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        x32 = x.float()
        # mean of squares from the vector norm: one pass instead of pow, then mean
        size = x32.shape[-1]
        r = torch.rsqrt(torch.linalg.vector_norm(x32, dim=-1, keepdim=True).pow_(2).div_(size).add_(eps))
        normed = x32 * r
        ctx.save_for_backward(x32, r, weight)
        return weight * normed.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x32, r, weight = ctx.saved_tensors
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad * (x32 * r).to(grad.dtype)).reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            gw = (grad * weight).float()
            # mean over the last dim of gw * x, times r^3
            coef = torch.linalg.vecdot(gw, x32).unsqueeze(-1).mul_(r.pow(3) / x32.shape[-1])
            grad_x = gw.mul_(r).addcmul_(x32, coef, value=-1).to(grad.dtype)
        return grad_x, grad_w, None


def _llama_norm_code():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    return LlamaRMSNorm.forward.__code__


def _same_code(a, b) -> bool:
    return a.co_code == b.co_code and a.co_consts == b.co_consts and a.co_names == b.co_names


def _fused_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return type(self).forward(self, hidden_states)
    return RMSNormStep.apply(hidden_states, self.weight, self.variance_epsilon)


def use_fused_rms_norm(model: nn.Module) -> int:
    """Give every Llama-style RMSNorm layer of `model` the hand-written backward; returns how many."""
    reference = _llama_norm_code()
    fused = 0
    for module in model.modules():
        forward = getattr(type(module), "forward", None)
        if (getattr(module, "_studio_fused_norm", False) or not hasattr(module, "variance_epsilon")
                or not isinstance(getattr(module, "weight", None), torch.Tensor) or forward is None
                or not _same_code(forward.__code__, reference)):
            continue
        module._studio_fused_norm = True
        module.forward = types.MethodType(_fused_forward, module)
        fused += 1
    return fused
