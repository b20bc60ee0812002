"""Putting one of our SDPA variants in place of a model's SDPA attention.

transformers looks attention up by name (`AttentionInterface`) together with
the function that builds its mask (`AttentionMaskInterface`). Registering a
function under a fixed name is idempotent, so this holds no per-user state;
the switch itself is made on one model instance.
"""
from __future__ import annotations

from typing import Callable


def swap_sdpa(model, name: str, attention: Callable, mask: Callable) -> bool:
    """Make `model` (or the base model under a PEFT wrapper) use `attention` and `mask`
    under `name` instead of SDPA; a model not using SDPA is left alone. Returns whether it switched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) == name:  # switched before (a cached model)
        return True
    if getattr(base.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, mask)
    base.set_attn_implementation(name)
    return base.config._attn_implementation == name
