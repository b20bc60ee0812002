"""What a run asks of its accelerator: 4-bit loading for QLoRA, the attention
implementation, and padding-free batches.

Pure decisions from the device policy, the RunConfig and the model's class, so
they are tested on a CPU (tests/test_device_plan.py); bench/bench_gpu.py runs
them on a real GPU when a session has one.

* QLoRA: the base weights are loaded in 4-bit NF4 with double quantisation
  (bitsandbytes), computing in the policy's dtype (bf16 where the card has it,
  else fp16); the adapter trains in that dtype on top.
* Attention: on CUDA, FlashAttention 2 when the `flash_attn` package is
  installed and the model class supports it; otherwise transformers' own
  default (SDPA, or eager where SDPA is refused, e.g. Gemma 2's soft-capping).
* Padding-free batches (TRL's `padding_free`): only with FlashAttention, which
  takes the packed rows' boundaries from the position ids. On a CPU the
  studio's own packed attention does this (finetune_core/speedups).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from finetune_core.config import RunConfig
from finetune_core.models.sources import DevicePolicy

FLASH = ("flash_attention_2", "flash_attention_3")


@dataclass(frozen=True)
class DevicePlan:
    """How a run uses its accelerator: attention implementation, padding-free batches, 4-bit base."""

    attn_implementation: str | None  # None: the model's default
    padding_free: bool
    quantized: bool

    def describe(self) -> str:
        """One line for the UI and logs, e.g. "flash_attention_2, padding-free batches"."""
        attention = self.attn_implementation or "the model's default attention"
        extras = [x for x, on in (("4-bit NF4 base (QLoRA)", self.quantized), ("padding-free batches",
                                                                             self.padding_free)) if on]
        return ", ".join([attention, *extras])


def flash_attention_installed() -> bool:
    """Whether the `flash_attn` package can be imported (looked up without importing it)."""
    return importlib.util.find_spec("flash_attn") is not None


def model_class_supports_flash(model_config) -> bool:
    """Whether transformers' class for this config declares FlashAttention 2 support."""
    from transformers import AutoModelForCausalLM

    try:
        cls = AutoModelForCausalLM._model_mapping[type(model_config)]
    except (KeyError, AttributeError):
        return False
    return bool(getattr(cls, "_supports_flash_attn", False) or getattr(cls, "_supports_flash_attn_2", False))


def plan(cfg: RunConfig, policy: DevicePolicy, model_config=None) -> DevicePlan:
    """The accelerator choices for this run (model_config: the model's transformers config, if known)."""
    flash = (policy.device == "cuda" and policy.dtype in ("bfloat16", "float16") and flash_attention_installed()
             and model_config is not None and model_class_supports_flash(model_config))
    attn = "flash_attention_2" if flash else None
    # TRL's packing already packs rows (and turns padding-free on itself); otherwise only FlashAttention
    # keeps padding-free rows apart without a tokens x tokens mask.
    return DevicePlan(attn, padding_free=attn in FLASH and not cfg.packing, quantized=cfg.method == "qlora")


def quantization_config(cfg: RunConfig, policy: DevicePolicy):
    """BitsAndBytesConfig for QLoRA (None for LoRA and full fine-tuning)."""
    if cfg.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if policy.dtype == "bfloat16" else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute)


def load_kwargs(cfg: RunConfig, policy: DevicePolicy, device_plan: DevicePlan) -> dict:
    """Extra `from_pretrained` arguments for this plan (empty on a CPU)."""
    kwargs: dict = {}
    if device_plan.attn_implementation:
        kwargs["attn_implementation"] = device_plan.attn_implementation
    quant = quantization_config(cfg, policy)
    if quant is not None:
        import torch

        kwargs["quantization_config"] = quant
        # a 4-bit model is placed by from_pretrained (it cannot be moved with .to afterwards)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    return kwargs


def use_gradient_checkpointing(cfg: RunConfig, policy: DevicePolicy, n_params: int) -> bool:
    """Whether a run recomputes activations instead of keeping them: the run's choice, or for
    "auto" only on CUDA for models over 3B parameters and for QLoRA."""
    if cfg.gradient_checkpointing != "auto":
        return cfg.gradient_checkpointing == "on"
    # Recomputing activations costs ~30% speed; only worth it for big models on a GPU, and
    # with QLoRA, which is chosen to save memory.
    return policy.device == "cuda" and (n_params > 3_000_000_000 or cfg.method == "qlora")
