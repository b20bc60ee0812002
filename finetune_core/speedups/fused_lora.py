"""One autograd step for a LoRA-adapted linear layer while training on CPU.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as separate
operations, so each of the 7 adapted projections of each layer writes and
reads full-width tensors for the dropout mask, the scaling and the sum, in
the forward pass and again in the backward pass. `LoraBranch` computes the
same function with fewer full-width passes:
* the LoRA scaling and dropout's 1/(1-p) are applied to the rank-r
  intermediate (r is 8-64 columns, the layer is 576-1536 wide);
* the LoRA product is added into the base output by `addmm_` instead of a
  separate sum;
* the dropout mask is 0/1 (its scale goes to the narrow side too) and is
  applied in backward by one fused multiply-add.
With a bf16 base (training on a CPU with bf16 instructions) the float32
adapter weights are rounded to bf16 for the products, as autocast would do,
and their gradients come back in float32 for the optimizer.
The frozen base weight gets no gradient, as in PEFT; the adapter weights and
the input get the same gradients (tests/test_fused_lora.py compares them with
PEFT's own layer). Found with torch.profiler on the 2-core CPU this project
targets; the throughput is in docs/benchmarks.md.
"""
from __future__ import annotations

import types

import torch
from torch import nn

from .dropout import FastDropout, keep_mask


class LoraBranch(torch.autograd.Function):
    """out = x W^T + b + scale * ((x * keep) A^T) B^T for 2-D x; `keep` is a 0/1 dropout mask or None."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, keep, scale):
        out = nn.functional.linear(x, weight, bias)
        kept = x * keep if keep is not None else x
        ctx.adapter_dtype = lora_a.dtype
        lora_a, lora_b = lora_a.to(x.dtype), lora_b.to(x.dtype)  # no-ops unless the base is bf16
        low = torch.mm(kept, lora_a.t()).mul_(scale)  # scaled on the narrow side
        out.addmm_(low, lora_b.t())
        ctx.save_for_backward(weight, lora_a, lora_b, kept, low, keep)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        weight, lora_a, lora_b, kept, low, keep = ctx.saved_tensors
        need_x, _, _, need_a, need_b = ctx.needs_input_grad[:5]
        # (low^T grad)^T: a skinny product with the long dimension inside runs about twice as fast on CPU
        grad_b = torch.mm(low.t(), grad).t().to(ctx.adapter_dtype) if need_b else None
        grad_low = torch.mm(grad, lora_b).mul_(ctx.scale)
        grad_a = torch.mm(grad_low.t(), kept).to(ctx.adapter_dtype) if need_a else None
        grad_x = None
        if need_x:
            grad_x = torch.mm(grad, weight)
            if keep is None:
                grad_x.addmm_(grad_low, lora_a)
            else:
                grad_x.addcmul_(torch.mm(grad_low, lora_a), keep)
        return grad_x, None, None, grad_a, grad_b, None, None


def _fusable(layer) -> bool:
    """A plain LoRA linear layer with one adapter over a frozen nn.Linear."""
    base = getattr(layer, "base_layer", None)
    if type(base) is not nn.Linear or base.weight.requires_grad:
        return False
    if base.bias is not None and base.bias.requires_grad:
        return False
    adapters = list(getattr(layer, "lora_A", {}).keys())
    if len(adapters) != 1 or getattr(layer, "lora_variant", {}).get(adapters[0]) is not None:
        return False  # DoRA and other variants have their own maths
    name = adapters[0]
    a, b, drop = layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name]
    plain = type(a) is nn.Linear and type(b) is nn.Linear and a.bias is None and b.bias is None
    return plain and type(drop) in (nn.Identity, FastDropout)


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """The fused step when training with the adapter on; PEFT's own forward otherwise."""
    name = self._studio_adapter
    if (args or kwargs or not self.training or not torch.is_grad_enabled() or self.disable_adapters
            or self.merged or list(self.active_adapters) != [name] or x.dtype != self.base_layer.weight.dtype):
        return type(self).forward(self, x, *args, **kwargs)
    drop = self.lora_dropout[name]
    flat = x.reshape(-1, x.shape[-1])
    keep, scale = None, self.scaling[name]
    if isinstance(drop, FastDropout) and drop.training and drop.cut:
        keep = keep_mask(flat.shape, drop.cut, flat.device, flat.dtype)
        scale = scale * drop.scale
    out = LoraBranch.apply(flat, self.base_layer.weight, self.base_layer.bias, self.lora_A[name].weight,
                           self.lora_B[name].weight, keep, scale)
    return out.view(*x.shape[:-1], out.shape[-1])


def use_fused_lora(model: nn.Module) -> int:
    """Give each plain LoRA linear layer of `model` the fused training step; returns how many.

    The weights and their names are untouched, so saving, loading and merging
    the adapter work as before; eval mode and anything unusual take PEFT's path.
    """
    fused = 0
    for module in model.modules():
        if getattr(module, "_studio_adapter", None) is None and _fusable(module):
            module._studio_adapter = next(iter(module.lora_A.keys()))
            module.forward = types.MethodType(_fused_forward, module)
            fused += 1
    return fused
