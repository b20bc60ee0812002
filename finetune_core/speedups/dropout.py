"""A cheaper LoRA dropout for CPU training.

PEFT's `nn.Dropout` draws one Bernoulli sample per input element, for each of
the 7 adapted projections of each layer; torch's CPU Bernoulli sampler made
that the largest cost after the matrix products (torch.profiler on the 2-core
CPU this project targets). `FastDropout` draws 16 random bits per element
from 64-bit words instead (several times cheaper) and keeps dropout's
meaning: each element is zeroed with probability p (to within 1/65536) and
survivors are scaled so the expectation is unchanged. Dropout is random, so
"the same result as the library" here means the same distribution
(tests/test_speedups.py), not the same draws.
"""
from __future__ import annotations

import torch
from torch import nn

_BITS = 1 << 16


def _random_words(n: int, device: torch.device) -> torch.Tensor:
    """`n` uniformly random 64-bit words.

    On a CPU, numpy's SFC64 generator fills them about twice as fast as torch's
    Mersenne twister; it is seeded from torch's generator on each call, so
    `torch.manual_seed` (the Trainer's seed) still makes runs repeatable.
    """
    if device.type != "cpu":
        return torch.empty(n, dtype=torch.int64, device=device).random_(-(2 ** 63), None)
    import numpy as np

    seed = int(torch.randint(0, 2 ** 62, (1,)))
    return torch.from_numpy(np.random.SFC64(seed).random_raw(n).view(np.int64))


def keep_mask(shape: torch.Size, cut: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """1.0 where an element is kept, 0.0 where it is dropped (its 16 random bits fall below `cut`).

    Made by clamping the bits shifted to [cut-1, cut]: on a CPU this is about
    three times cheaper than building the mask from a comparison (bool tensors
    take slow paths in torch's CPU kernels).
    """
    n = shape.numel()
    bits = _random_words((n + 3) // 4, device).view(torch.int16)[:n].view(shape)  # uniform int16
    # float32 holds every int16 exactly (bfloat16 would not); `to` is free for float32 inputs
    return bits.float().sub_(cut - 1 - _BITS // 2).clamp_(0, 1).to(dtype)


class FastDropout(nn.Module):
    """Inverted dropout with a cheaper random source; identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.cut = round(p * _BITS)  # elements whose 16 random bits fall below the cut are dropped
        self.scale = _BITS / (_BITS - self.cut)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cut == 0:
            return x
        # autograd keeps the mask for backward
        return x * keep_mask(x.shape, self.cut, x.device, x.dtype).mul_(self.scale)


def use_fast_lora_dropout(model: nn.Module) -> int:
    """Swap PEFT's LoRA `nn.Dropout` modules for `FastDropout`; returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, drop in list(dropouts.items()):
            if type(drop) is nn.Dropout and drop.p > 0:
                dropouts[name] = FastDropout(drop.p)
                swapped += 1
    return swapped
