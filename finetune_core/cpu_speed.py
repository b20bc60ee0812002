"""CPU speed-ups for LoRA training that the libraries do not make themselves.

Measured on the 2-core CPU this project targets (docs/benchmarks.md):
* LoRA dropout: PEFT's `nn.Dropout` draws one Bernoulli sample per input
  element, for each of the 7 adapted projections of each layer; torch's CPU
  Bernoulli sampler made that ~20% of a training step. `FastDropout` draws
  16 random bits per element from 64-bit words instead (~4x cheaper) and
  keeps dropout's meaning: each element is zeroed with probability p (to
  within 1/65536) and survivors are scaled so the expectation is unchanged.
* LM head: TRL's fused log-prob head scores only the label positions on
  Triton devices and every position elsewhere, so that compiled shapes stay
  fixed. On a CPU nothing is compiled, and for prompt/completion rows most
  positions are prompt: scoring only the label positions gives the same loss
  for a fraction of the vocabulary-wide products.
* Attention mask: TRL pads training batches on the right. Under a causal
  mask a real token never looks at the padding after it, so the padding
  mask changes nothing for real tokens (whose outputs alone reach the loss)
  — but passing it makes SDPA use its masked kernel, which computes every
  block instead of skipping the causal upper half. Dropping a right-padding
  mask lets SDPA take the causal path.
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
        n = x.numel()
        bits = _random_words((n + 3) // 4, x.device).view(torch.int16)[:n].view(x.shape)  # uniform int16
        # One pass to a float mask already holding the scale; autograd keeps it for backward.
        mask = torch.where(bits >= (self.cut - _BITS // 2), self.scale, 0.0).to(x.dtype)
        return x * mask


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


def score_only_label_positions_on_cpu() -> bool:
    """Make TRL's fused LM head score only label positions on CPU too; returns whether it applies.

    TRL decides per call with `trl.trainer.utils._use_triton(device)`; the
    wrapper answers yes for CPU tensors and leaves every other device alone.
    """
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if current is None:  # a TRL without this switch: nothing to do
        return False
    if getattr(current, "_studio_cpu_compact", False):
        return True

    def compact_on_cpu(device: torch.device) -> bool:
        return device.type == "cpu" or current(device)

    compact_on_cpu._studio_cpu_compact = True
    trl_utils._use_triton = compact_on_cpu
    return True


def drop_right_padding_masks(model: nn.Module) -> bool:
    """Let the decoder run causal attention without a mask on right-padded training batches.

    Only a 2-D mask whose rows are ones then zeros (right padding), with no
    cache and no explicit position ids, is dropped; anything else passes
    through untouched. Returns whether a decoder was found to hook.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "model", None)
    if not isinstance(decoder, nn.Module):
        return False

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if (mask is None or mask.dim() != 2 or kwargs.get("past_key_values") is not None
                or kwargs.get("position_ids") is not None):
            return None
        if bool((mask[:, 1:] <= mask[:, :-1]).all()) and bool(mask[:, 0].all()):
            return args, {**kwargs, "attention_mask": None}
        return None

    decoder.register_forward_pre_hook(hook, with_kwargs=True)
    return True
