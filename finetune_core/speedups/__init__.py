"""The CPU speed-ups, one entry point and one switch.

Training (`apply_training`, on the model the SFTTrainer holds):
  packed_attention        padding-free batches, causal attention row by row (packed_attention.py)
  grouped_bf16_attention  bf16 score products for packed rows, float32 softmax (packed_attention.py)
  fused_lora              one autograd step per LoRA linear layer (fused_lora.py)
  fused_rms_norm          a hand-written RMSNorm backward (fused_norm.py)
  fast_lora_dropout       a cheaper random source for LoRA dropout (dropout.py)
  label_only_lm_head      TRL's fused head scores label positions only (lm_head.py)
Generation (`apply_inference` and `prefilled_generation_reason`):
  prefilled_kv_cache      per-row prefill into a cache that grows in place (kv_cache.py)
  trimmed_decode_attention  decode attention skipping each group's padding (decode_attention.py)

Each is decided per model from what the model declares (device, dtype,
attention implementation, sliding window against max_length, soft-capping,
attention sinks, norm and layer types); a model that declares anything a
speed-up does not reproduce keeps the library's own path. Every one gives the
libraries' own loss, gradients or tokens on the families in
tests/test_model_matrix.py (fast dropout: the same distribution).

The switch: `RunConfig.speedups` ("auto" | "off") per run, and
`STUDIO_SPEEDUPS=off` for the whole server, which wins. "off" means the
libraries' own code paths, nothing patched; precision is a separate setting.
The returned `Report` says what was applied and why the rest was not: the run
log and run.yaml record it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Iterator

MODES = ("auto", "off")
ENV = "STUDIO_SPEEDUPS"
TRAINING = ("packed_attention", "grouped_bf16_attention", "fused_lora", "fused_rms_norm", "fast_lora_dropout",
            "label_only_lm_head")
INFERENCE = ("prefilled_kv_cache", "trimmed_decode_attention")
LABELS = {
    "packed_attention": "packed attention", "grouped_bf16_attention": "grouped bf16 attention",
    "fused_lora": "fused LoRA step", "fused_rms_norm": "RMSNorm backward", "fast_lora_dropout": "fast LoRA dropout",
    "label_only_lm_head": "label-only LM head", "prefilled_kv_cache": "prefilled KV cache",
    "trimmed_decode_attention": "trimmed decode attention",
}


def effective_mode(requested: str = "auto") -> tuple[str, str]:
    """The mode in force and, when it is "off", who turned it off."""
    env = os.environ.get(ENV, "").strip().lower()
    if env in ("off", "0", "false", "no"):
        return "off", f"{ENV}={env}"
    if requested == "off":
        return "off", "speedups: off"
    return "auto", ""


@dataclass(frozen=True)
class Choice:
    """One speed-up's decision: its name (a key of LABELS), whether it was applied, and if not, why."""

    name: str
    applied: bool
    reason: str = ""  # why not, when not applied


@dataclass
class Report:
    """What one model got: a Choice per speed-up, and the scope the training runs in."""

    mode: str
    choices: list[Choice] = field(default_factory=list)

    def applied(self) -> list[str]:
        """Names of the speed-ups applied, in the order they were decided."""
        return [c.name for c in self.choices if c.applied]

    def skipped(self) -> dict[str, str]:
        """Name -> reason for each speed-up not applied."""
        return {c.name: c.reason for c in self.choices if not c.applied}

    def as_dict(self) -> dict:
        """The facts recorded in run.yaml: speedups_mode, speedups_applied, speedups_skipped."""
        return {"speedups_mode": self.mode, "speedups_applied": self.applied(), "speedups_skipped": self.skipped()}

    def summary(self) -> str:
        """One line for the run log."""
        applied = ", ".join(LABELS[n] for n in self.applied()) or "none"
        reasons = {}
        for name, why in self.skipped().items():
            reasons.setdefault(why, []).append(LABELS[name])
        skipped = "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())
        return f"Speed-ups ({self.mode}): {applied}." + (f" Not applied — {skipped}." if skipped else "")

    @contextmanager
    def scope(self) -> Iterator[None]:
        """The context training and evaluation run in (the label-only LM head lives only there)."""
        from .lm_head import label_only_lm_head

        with label_only_lm_head() if "label_only_lm_head" in self.applied() else nullcontext():
            yield


def _off(names: tuple[str, ...], mode: str, why: str) -> Report:
    return Report(mode, [Choice(n, False, why) for n in names])


def _device_reason(device: str) -> str:
    return "" if device == "cpu" else f"CPU only (on {device} the libraries' own kernels are used)"


def apply_training(model, device: str, dtype: str, max_length: int | None, requested: str = "auto",
                   withhold: dict[str, str] | None = None) -> Report:
    """Apply the training speed-ups that are safe for `model` (PEFT-wrapped or not) and say which;
    `withhold` names speed-ups this trainer must not get, each with the reason the report gives (only
    fused_rms_norm so far: a caller asking for another is a bug, refused before anything is applied)."""
    withhold = withhold or {}
    if set(withhold) - {"fused_rms_norm"}:
        raise ValueError(f"apply_training cannot withhold {sorted(set(withhold) - {'fused_rms_norm'})}")
    mode, why = effective_mode(requested)
    if mode == "off":
        return _off(TRAINING, mode, f"switched off ({why})")
    if _device_reason(device):
        return _off(TRAINING, mode, _device_reason(device))
    from .dropout import use_fast_lora_dropout
    from .fused_lora import use_fused_lora
    from .fused_norm import use_fused_rms_norm
    from .lm_head import unavailable_reason
    from .packed_attention import packing_unsafe_reason, train_without_padding

    lora = hasattr(model, "peft_config")
    dropouts = use_fast_lora_dropout(model)  # before fused_lora, which takes FastDropout's masks
    fused = use_fused_lora(model)
    norms = 0 if "fused_rms_norm" in withhold else use_fused_rms_norm(model)
    unsafe = packing_unsafe_reason(model, max_length)
    packed = not unsafe and train_without_padding(model, max_length)
    no_lora = "no LoRA layers (full fine-tune)"
    head_missing = unavailable_reason()
    choices = [
        Choice("packed_attention", packed, unsafe or ("" if packed else "the model's backbone could not be hooked")),
        Choice("grouped_bf16_attention", packed and dtype == "bfloat16",
               "" if packed and dtype == "bfloat16" else
               ("packed attention is off" if not packed else f"{dtype} weights (a bf16 speed-up)")),
        Choice("fused_lora", fused > 0, "" if fused else
               (no_lora if not lora else "no plain LoRA linear layer (DoRA, Conv1D or another variant)")),
        Choice("fused_rms_norm", norms > 0, "" if norms else withhold.get(
            "fused_rms_norm", "the model's norm layers are not Llama's RMSNorm")),
        Choice("fast_lora_dropout", dropouts > 0, "" if dropouts else (no_lora if not lora else "LoRA dropout is 0")),
        Choice("label_only_lm_head", not head_missing, head_missing),
    ]
    return Report(mode, choices)


def prefilled_generation_reason(model, device: str, requested: str = "auto") -> str:
    """Why held-out generation must not use per-row prefilled caches ("" when it may)."""
    mode, why = effective_mode(requested)
    if mode == "off":
        return f"switched off ({why})"
    if _device_reason(device):
        return _device_reason(device)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    kinds = set(getattr(config, "layer_types", None) or [])
    others = kinds - {"full_attention", "sliding_attention"}
    if others:  # recurrent or chunked layers keep state a key/value cache does not hold
        return f"layer types {', '.join(sorted(others))}"
    return ""


def apply_inference(model, device: str, requested: str = "auto") -> Report:
    """Apply the generation speed-ups that are safe for `model` and say which."""
    mode, why = effective_mode(requested)
    if mode == "off":
        return _off(INFERENCE, mode, f"switched off ({why})")
    from .decode_attention import use_trimmed_decode_attention

    prefill_reason = prefilled_generation_reason(model, device, requested)
    device_reason = _device_reason(device)
    trimmed = not device_reason and use_trimmed_decode_attention(model)
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return Report(mode, [
        Choice("prefilled_kv_cache", not prefill_reason, prefill_reason),
        Choice("trimmed_decode_attention", trimmed,
               "" if trimmed else device_reason or f"attention implementation {impl!r} (it replaces sdpa only)"),
    ])
