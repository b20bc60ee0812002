"""The memory estimate, its verdict, the settings it suggests, and the refusal before a run
(finetune_core/models/memory.py, finetune_core/models/catalogue.py, the CLI's --force). Hermetic: the
device is a fixed `memory.Device`, the Hub cache a temporary folder."""
from __future__ import annotations

import json

import pytest

from finetune_core.models import memory, memory_estimate
from finetune_core.models.catalogue import CATALOGUE, ENTRIES, ModelShape, entry
from finetune_core.config import RunConfig
from finetune_core.models.memory import GB, Device, WontFit, check_fits, estimate_for, verdict
from finetune_core.models.sources import ModelError

QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
SHAPE = entry(QWEN).shape
CPU = Device("cpu", available=16 * GB)


def est(dev: Device = CPU, shape: ModelShape = SHAPE, **overrides) -> memory.Estimate:
    return estimate_for(RunConfig(model=QWEN, **overrides), shape, dev)


@pytest.fixture()
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def cache_hub_model(hub: object, hub_id: str, config: dict) -> None:
    """Lay out a Hub model in the cache as huggingface_hub does (config and an empty weights file)."""
    repo = hub / f"models--{hub_id.replace('/', '--')}"
    snap = repo / "snapshots" / "0123456789abcdef"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    (snap / "config.json").write_text(json.dumps(config))
    (snap / "model.safetensors").write_bytes(b"")


# -- the catalogue ---------------------------------------------------------------
def test_every_catalogue_shape_adds_up_to_its_model_card_count():
    for e in ENTRIES:
        assert abs(e.shape.params() / 1e9 - e.params_b) / e.params_b < 0.02, e.hub_id
        assert e.gated == e.hub_id.startswith(("meta-llama/", "google/")), e.hub_id
        assert ("licence-gated" in e.label) == e.gated and e.architecture in e.label
    assert dict(CATALOGUE) == {e.hub_id: e.params_b for e in ENTRIES}
    with pytest.raises(TypeError):
        CATALOGUE["someone/else"] = 1.0  # read-only: no module-level state a request could change


def test_shape_from_a_config_reads_the_text_part_and_names_what_is_missing():
    from types import SimpleNamespace

    from transformers import Gemma3TextConfig

    g = ModelShape.from_config(Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=1, head_dim=32))
    assert (g.q_width, g.kv_width, g.num_key_value_heads) == (128, 32, 1)
    no_mlp = SimpleNamespace(hidden_size=64, num_hidden_layers=2, vocab_size=100, num_attention_heads=4)
    with pytest.raises(ValueError, match="intermediate_size"):
        ModelShape.from_config(no_mlp)


# -- the estimate ----------------------------------------------------------------
def test_estimate_grows_with_batch_and_length():
    small, batch, longer = est(batch_size=2, max_length=256), est(batch_size=8, max_length=256), est(
        batch_size=2, max_length=1024)
    assert batch.total > small.total and longer.total > small.total
    assert batch.detail["activations"] == pytest.approx(4 * small.detail["activations"])
    assert small.parts["weights"] == batch.parts["weights"] == SHAPE.params() * 4


def test_full_fine_tune_needs_more_than_lora():
    for dropout in (0.0, 0.05):
        lora, full = est(lora_dropout=dropout), est(method="full", lora_dropout=dropout)
        assert full.total > lora.total
        assert full.parts["optimizer states"] == 2 * SHAPE.params() * 4  # AdamW: two float32 values per weight
        assert lora.parts["optimizer states"] == 2 * memory_estimate.lora_params(SHAPE, 16) * 4


def test_checkpointing_lowers_activations_and_dora_raises_them():
    plain, ckpt = est(gradient_checkpointing="off"), est(gradient_checkpointing="on")
    assert ckpt.gradient_checkpointing and not plain.gradient_checkpointing
    assert ckpt.detail["activations"] < 0.6 * plain.detail["activations"]  # the heap keeps part (CHECKPOINT_RESIDUE)
    assert ckpt.total < plain.total
    assert est(use_dora=True).detail["activations"] > plain.detail["activations"]


def test_the_libraries_own_paths_cost_more_rss_on_a_cpu_only(monkeypatch):
    monkeypatch.delenv("STUDIO_SPEEDUPS", raising=False)
    auto, off = est(speedups="auto"), est(speedups="off")
    assert off.detail["activations"] == pytest.approx(memory_estimate.SPEEDUPS_OFF_RSS * auto.detail["activations"])
    monkeypatch.setenv("STUDIO_SPEEDUPS", "off")  # the server-wide switch wins over the run's setting
    assert est(speedups="auto").total == off.total
    gpu = Device("cuda", available=24 * GB, lora_dtype="bfloat16", full_dtype="bfloat16")
    assert est(gpu, speedups="off").total == est(gpu, speedups="auto").total


def test_qlora_on_a_gpu_holds_4_bit_weights_and_lora_dtype_follows_the_device():
    gpu = Device("cuda", available=24 * GB, lora_dtype="bfloat16", full_dtype="bfloat16")
    lora, qlora = est(gpu, method="lora"), est(gpu, method="qlora")
    assert lora.dtype == "bfloat16" and lora.parts["weights"] == SHAPE.params() * 2
    assert qlora.parts["weights"] < lora.parts["weights"] / 2
    assert lora.parts["baseline"] == memory_estimate.CUDA_OVERHEAD  # VRAM: no process RSS in it


def test_baseline_is_what_the_training_process_already_holds_at_least_the_libraries():
    assert est().parts["baseline"] == memory_estimate.IMPORTS_RSS + memory_estimate.RUN_OVERHEAD
    busy_app = Device("cpu", available=16 * GB, process_rss=3 * GB)
    assert est(busy_app).parts["baseline"] == 3 * GB + memory_estimate.RUN_OVERHEAD


def test_lm_head_tiles_are_trls():
    """The LM head's working set is sized with TRL's tile shape: this fails when TRL changes it."""
    import trl.trainer.utils as trl_utils
    from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE

    assert (memory_estimate.TOKEN_TILE, memory_estimate.VOCAB_TILE) == (TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE)
    short, long = est(batch_size=1, max_length=1024), est(batch_size=8, max_length=1024)
    assert short.detail["LM head"] < long.detail["LM head"] < 2 * memory_estimate.LM_HEAD_TILES_CPU * 4096 * 32768 * 4


def test_verdict_thresholds():
    assert verdict(79, 100) == "fits"
    assert verdict(80, 100) == verdict(100, 100) == "tight"
    assert verdict(101, 100) == verdict(1, 0) == "will not fit"


def test_available_ram_adds_own_rss_and_obeys_a_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  4000000 kB\n")
    unlimited, limit = tmp_path / "unlimited", tmp_path / "limit"
    unlimited.write_text("max\n")
    limit.write_text(str(2 * 1024**3))
    assert memory.available_ram(str(meminfo), rss=1e9, cgroup_files=(str(unlimited),)) == 4000000 * 1024 + 1e9
    assert memory.available_ram(str(meminfo), rss=1e9, cgroup_files=(str(unlimited), str(limit))) == 2 * 1024**3


# -- settings that fit -----------------------------------------------------------
def test_suggestions_really_fit_and_keep_the_effective_batch():
    cfg = RunConfig(model=QWEN, method="full", batch_size=16, grad_accum=2, max_length=1024)
    dev = Device("cpu", available=20 * GB)
    a = memory.assess(cfg, memory.model_facts(QWEN), dev)
    assert a.verdict == "will not fit" and a.suggestions
    kinds = set()
    for s in a.suggestions:
        again = estimate_for(cfg.with_overrides(s.overrides), SHAPE, dev).total
        assert again == s.total and verdict(again, dev.available) == "fits", s
        changed = cfg.with_overrides(s.overrides)
        if "batch_size" in s.overrides and "max_length" not in s.overrides:
            assert changed.batch_size * changed.grad_accum >= 32, s  # same effective batch
        kinds.add(s.overrides.get("method"))
    assert "lora" in kinds  # a full fine-tune is offered LoRA


def test_qlora_is_suggested_on_a_gpu_only():
    cfg = RunConfig(model="microsoft/Phi-3.5-mini-instruct", batch_size=1, max_length=256)
    shape = entry(cfg.model).shape
    gpu = Device("cuda", available=8 * GB, lora_dtype="bfloat16", full_dtype="bfloat16")
    on_gpu = memory.suggestions(cfg, shape, gpu)
    assert [s.overrides.get("method") for s in on_gpu] == ["qlora"]
    cpu = Device("cpu", available=8 * GB)
    assert all(s.overrides.get("method") != "qlora" for s in memory.suggestions(cfg, shape, cpu))


def test_when_no_setting_fits_smaller_catalogue_models_are_offered():
    cfg = RunConfig(model="microsoft/Phi-3.5-mini-instruct", batch_size=1, max_length=64)
    dev = Device("cpu", available=8 * GB)
    found = memory.suggestions(cfg, entry(cfg.model).shape, dev)
    assert found and all(s.overrides["model"] in CATALOGUE for s in found)
    assert all(s.total < 0.8 * dev.available for s in found)


# -- refusing a run ----------------------------------------------------------------
def test_check_fits_refuses_with_the_settings_that_would_fit_and_force_passes():
    cfg = RunConfig(model="bundled", batch_size=32, max_length=2048)
    dev = Device("cpu", available=12 * GB)
    with pytest.raises(WontFit) as caught:
        check_fits(cfg, dev=dev)
    text = str(caught.value)
    assert "will not fit" in text and "GB of 12.0 GB available" in text
    tips = memory.assess(cfg, dev=dev).suggestions
    assert tips and all(s.text in text for s in tips)
    assert check_fits(cfg, force=True, dev=dev).verdict == "will not fit"
    assert check_fits(cfg.with_overrides(tips[0].overrides), dev=dev).verdict == "fits"


def test_offline_uncached_hub_model_fails_fast_but_the_catalogue_still_estimates(empty_hub_cache):
    facts = memory.model_facts(QWEN)
    assert facts.origin == "catalogue" and "offline" in facts.problem and QWEN in facts.problem
    assert memory.assess(RunConfig(model=QWEN), facts, CPU).estimate.total > 0
    with pytest.raises(ModelError, match="not downloaded on this machine"):
        check_fits(RunConfig(model=QWEN), force=True, dev=CPU)  # not a question of the estimate: force is no help
    with pytest.raises(ModelError, match="not in the catalogue"):
        memory.model_facts("someone/unknown-model")


def test_a_cached_hub_model_is_estimated_from_its_config(empty_hub_cache):
    cache_hub_model(empty_hub_cache, "someone/cached-model", {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 2048})
    facts = memory.model_facts("someone/cached-model")
    assert (facts.origin, facts.problem, facts.architecture, facts.context) == ("cached config", "", "llama", 2048)
    assert facts.shape.num_hidden_layers == 3 and facts.entry is None
    assert check_fits(RunConfig(model="someone/cached-model"), dev=CPU).verdict == "fits"


def test_local_folder_and_bad_ids(tiny_model_dir):
    facts = memory.model_facts(str(tiny_model_dir))
    assert facts.origin == "local config" and facts.shape.hidden_size == 32 and facts.architecture == "llama"
    assert memory.model_facts("bundled").entry.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ModelError, match="not a Hub model id"):
        memory.model_facts("not a model")


def test_public_deployment_estimates_only_allowed_models(monkeypatch):
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    monkeypatch.delenv("STUDIO_MODEL_ALLOWLIST", raising=False)
    with pytest.raises(ModelError, match="allow-list"):
        memory.model_facts("someone/cached-model")
    with pytest.raises(ModelError, match="disabled"):
        memory.model_facts("/etc")


# -- the command line ----------------------------------------------------------------
def test_cli_refuses_a_run_that_will_not_fit_and_force_trains_anyway(monkeypatch, runs_root, capsys):
    from finetune_core import cli
    from finetune_core.training import runner

    monkeypatch.setattr(memory, "probe_device", lambda cfg: Device("cpu", available=4 * GB))
    trained = []
    monkeypatch.setattr(runner, "run_job", lambda run, *a, **k: trained.append(run) or {"state": "completed"})
    argv = ["train", "--quiet", "--set", "model=bundled", "--set", "batch_size=16", "--set", "max_length=1024"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "will not fit" in err and "Settings that would fit" in err and "--force" in err
    assert not trained and not (runs_root.exists() and any(runs_root.iterdir()))
    assert cli.main([*argv, "--force"]) == 0
    assert len(trained) == 1 and "training anyway (--force)" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_memory_measures_a_tiny_run_against_its_estimate():
    """bench/bench_memory.py end to end on its smallest configuration (one step, ~1 minute)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "bench/bench_memory.py", "--only", "tiny-lora-b1-L64", "--steps", "1"],
                          cwd=repo, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    (row,) = result["results"]
    assert row["config"] == "tiny-lora-b1-L64" and len(row["measured"]["step_peaks_mb"]) == 1
    assert row["measured"]["peak_mb"] > row["measured"]["after_imports_mb"] > 100
    assert abs(row["error"]) <= 0.25 and result["within_25_percent"]
