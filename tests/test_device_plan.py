"""The GPU path's decisions, checked on a CPU: dtype by card, the trainer's precision
flags, QLoRA's 4-bit config, FlashAttention and padding-free batches, and that the
CPU speed-ups stay off on CUDA (test_speedups.py). bench/bench_gpu.py runs the same
path on a real GPU."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from finetune_core.models import device_plan
from finetune_core.config import RunConfig
from finetune_core.models.sources import DevicePolicy, training_policy
from finetune_core.models.device_plan import use_gradient_checkpointing
from finetune_core.training.train import TrainingError, check_method, sft_config

CUDA_BF16 = DevicePolicy("cuda", "bfloat16")
CUDA_FP16 = DevicePolicy("cuda", "float16")
CPU = DevicePolicy("cpu", "float32")


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch reports a CUDA card; `bf16` says whether it has bf16."""
    card = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: card["bf16"])
    return card


def test_a_card_with_bf16_trains_in_bf16_and_an_older_one_in_fp16(fake_cuda):
    assert training_policy("auto", "auto", "lora") == CUDA_BF16
    assert training_policy("auto", "auto", "full") == CUDA_BF16  # full fine-tunes too, as TRL's own GPU recipes load them
    assert training_policy("cuda", "float32", "lora") == DevicePolicy("cuda", "float32")
    fake_cuda["bf16"] = False
    assert training_policy("auto", "auto", "lora") == CUDA_FP16
    assert training_policy("cpu", "auto", "lora").device == "cpu"  # asked for the CPU: stays there


def test_the_trainer_gets_mixed_precision_flags_on_gpus_only(tmp_path, monkeypatch):
    from finetune_core.runs.store import create_run

    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path))
    run = create_run(RunConfig())
    # SFTConfig checks the flags against the hardware: skip that check, keep what we pass.
    monkeypatch.setattr("transformers.training_args.TrainingArguments.__post_init__", lambda self: None)
    monkeypatch.setattr("trl.SFTConfig.__post_init__", lambda self: None)
    bf16 = sft_config(RunConfig(), run, CUDA_BF16, False, False, False)
    assert (bf16.bf16, bf16.fp16, bf16.use_cpu) == (True, False, False)
    fp16 = sft_config(RunConfig(), run, CUDA_FP16, False, False, False)
    assert (fp16.bf16, fp16.fp16) == (False, True)
    cpu = sft_config(RunConfig(), run, DevicePolicy("cpu", "bfloat16"), False, False, False)
    assert (cpu.bf16, cpu.fp16, cpu.use_cpu) == (False, False, True)  # bf16 weights, no autocast on CPU
    assert sft_config(RunConfig(), run, CUDA_BF16, False, False, False, padding_free=True).padding_free


def test_qlora_loads_a_4bit_nf4_base_computing_in_the_cards_dtype(monkeypatch):
    assert device_plan.quantization_config(RunConfig(method="lora"), CUDA_BF16) is None
    assert device_plan.quantization_config(RunConfig(method="full"), CUDA_BF16) is None
    q = device_plan.quantization_config(RunConfig(method="qlora"), CUDA_BF16)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert device_plan.quantization_config(RunConfig(method="qlora"), CUDA_FP16).bnb_4bit_compute_dtype == torch.float16
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    plan = device_plan.plan(RunConfig(method="qlora"), CUDA_BF16)
    kwargs = device_plan.load_kwargs(RunConfig(method="qlora"), CUDA_BF16, plan)
    assert plan.quantized and kwargs["device_map"] == {"": 0} and kwargs["quantization_config"].load_in_4bit
    assert "4-bit NF4" in plan.describe()
    assert device_plan.load_kwargs(RunConfig(), CPU, device_plan.plan(RunConfig(), CPU)) == {}


def test_qlora_is_refused_without_cuda_or_without_bitsandbytes(monkeypatch):
    with pytest.raises(TrainingError, match="QLoRA needs a CUDA GPU"):
        check_method(RunConfig(method="qlora"), CPU)
    import builtins

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("no bitsandbytes")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(TrainingError, match="pip install bitsandbytes"):
        check_method(RunConfig(method="qlora"), CUDA_BF16)
    check_method(RunConfig(method="lora"), CUDA_BF16)  # nothing needed


def test_checkpointing_auto_is_on_for_big_models_and_qlora_on_gpus_only():
    assert not use_gradient_checkpointing(RunConfig(), CUDA_BF16, 1_000_000_000)
    assert use_gradient_checkpointing(RunConfig(), CUDA_BF16, 7_000_000_000)
    assert use_gradient_checkpointing(RunConfig(method="qlora"), CUDA_BF16, 1_000_000_000)
    assert not use_gradient_checkpointing(RunConfig(), CPU, 7_000_000_000)
    assert use_gradient_checkpointing(RunConfig(gradient_checkpointing="on"), CPU, 1)


LLAMA = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)


@pytest.mark.parametrize("installed, policy, packing, want_attn, want_free", [
    (True, CUDA_BF16, False, "flash_attention_2", True),
    (True, CUDA_BF16, True, "flash_attention_2", False),  # TRL's packing is padding-free already
    (True, DevicePolicy("cuda", "float32"), False, None, False),  # FlashAttention runs in 16-bit only
    (False, CUDA_BF16, False, None, False),  # SDPA: padded batches, no tokens x tokens packed mask
    (True, CPU, False, None, False),  # the CPU's own packed attention lives in speedups
])
def test_padding_free_batches_only_with_flash_attention(monkeypatch, installed, policy, packing, want_attn,
                                                        want_free):
    monkeypatch.setattr(device_plan, "flash_attention_installed", lambda: installed)
    plan = device_plan.plan(RunConfig(packing=packing), policy, LLAMA)
    assert (plan.attn_implementation, plan.padding_free) == (want_attn, want_free)


def test_flash_attention_only_for_model_classes_that_declare_it(monkeypatch):
    from transformers import GPT2Config

    monkeypatch.setattr(device_plan, "flash_attention_installed", lambda: True)
    assert device_plan.model_class_supports_flash(LLAMA)
    assert device_plan.plan(RunConfig(), CUDA_BF16, None).attn_implementation is None  # config unknown: default
    declared = device_plan.model_class_supports_flash(GPT2Config(n_layer=1))
    from transformers import GPT2LMHeadModel

    assert declared == bool(getattr(GPT2LMHeadModel, "_supports_flash_attn", False))
