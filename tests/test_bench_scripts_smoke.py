"""Each benchmark script runs end to end on a tiny configuration and prints one JSON object."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


def _run(args: list[str], timeout: int = 900) -> dict:
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bench_train_tiny(tmp_path):
    result = _run(["bench/bench_train.py", "--tiny", "--steps", "1", "--warmup", "1", "--rounds", "1",
                   "--rows", "64", "--variants", "ours,plain_tuned,plain_default,plain_nockpt_b32"])
    variants = result["results"]  # (ours_sdpa is ours with another attention kernel: left to the benchmark)
    assert set(variants) == {"ours", "plain_tuned", "plain_default", "plain_nockpt_b32"}
    for variant in variants.values():
        assert variant["tokens_per_s"] > 0 and 0 <= variant["padding_share"] < 1 and variant["mfu"] > 0
    assert [variants[v]["batch_size"] for v in ("ours", "plain_tuned", "plain_nockpt_b32")] == [8, 8, 32]
    # four times the rows per step: far more tokens in the one timed step
    assert variants["plain_nockpt_b32"]["runs"][0]["tokens"] > 2 * variants["plain_tuned"]["runs"][0]["tokens"]
    assert set(result["ratios"]) == {"ours_vs_plain_tuned", "ours_vs_plain_default", "ours_vs_plain_nockpt_b32"}
    assert result["device"].startswith("cpu")
    dtypes = {v["compute_dtype"] for v in variants.values()}
    assert "bfloat16" in dtypes  # TRL's defaults autocast to bf16
    assert set(result["peak_flops"]) == dtypes and all(p["flops"] > 0 for p in result["peak_flops"].values())
    # a saved result summarises again to the same figures
    saved = tmp_path / "train.json"
    saved.write_text(json.dumps(result))
    again = _run(["bench/bench_train.py", "--summarize", str(saved)])
    assert {v: r["tokens_per_s"] for v, r in again["results"].items()} == \
        {v: r["tokens_per_s"] for v, r in variants.items()}
    assert again["ratios"] == result["ratios"] and again["rows"] == 64


@pytest.mark.slow
def test_bench_startup_model_loads(tmp_path):
    result = _run(["bench/bench_startup.py", "--skip-app", "--repeats", "1"])
    assert result["gguf_convert_s"] > result["cached_load_s"] > 0


@pytest.mark.slow
def test_load_chat_tiny():
    result = _run(["bench/load_chat.py", "--tiny", "--clients", "3", "--max-new-tokens", "4", "--timeout", "120"])
    assert result["answered"] == 3 and result["errors"] == []
    assert result["rss_mb"]["peak"] > 0


@pytest.mark.slow
def test_bench_public_load_tiny():
    result = _run(["bench/bench_public_load.py", "--tiny", "--visitors", "2", "--abuse-rounds", "1",
                   "--time-cap-s", "240"], timeout=400)
    for case in ("quiet", "stressed"):
        assert result[case]["answered"] == 2 and result[case]["errors"] == []
        assert result[case]["ttft_s"]["p95"] > 0
    abuse = result["stressed"]["abusive_visitor"]
    assert all(a["tries"] == a["refused"] == 1 for a in abuse.values()), abuse
    assert "STUDIO_LIMIT_CHAT_MESSAGE_TOKENS" in abuse["message_1mb"]["message"]
    assert result["rss_gb"]["peak"] > 0 and result["timed_out"] is False
    assert result["training"]["step_at_start"] >= 1


def test_bench_attention_tiny():
    result = _run(["bench/bench_attention.py", "--lengths", "16,40", "--repeats", "2"])
    rows = result["results"]
    assert [(r["dtype"], r["length"]) for r in rows] == [("bfloat16", 16), ("bfloat16", 40), ("float32", 16),
                                                         ("float32", 40)]
    for r in rows:
        assert r["sdpa_ms"] > 0 and r["grouped_ms"] > 0
        assert r["max_abs_diff"] < (0.05 if r["dtype"] == "bfloat16" else 1e-5)  # the same attention


@pytest.mark.slow
def test_bench_gpu_runs_its_checks_on_a_tiny_model_on_cpu():
    """The script a session with a GPU runs: here on CPU, so it is known to work when one is lent."""
    result = _run(["bench/bench_gpu.py", "--device", "cpu", "--tiny", "--steps", "2", "--rows", "3",
                   "--methods", "lora,full"])
    lora, full = result["methods"]["lora"], result["methods"]["full"]
    assert lora["train"]["state"] == full["train"]["state"] == "completed"
    assert lora["same_loss"]["abs_diff"] < 1e-4 and full["same_loss"]["abs_diff"] < 1e-4
    assert lora["batched_vs_single"]["share"] == 1.0
    assert lora["merged_vs_adapter"]["max_abs_diff"] < 1e-4 and full["merged_vs_adapter"] is None
    assert "packed_attention" in lora["train"]["speedups_applied"]  # on CPU the speed-ups are in the loop


def test_bench_preference_tiny():
    result = _run(["bench/bench_preference.py", "--tiny", "--steps", "1"], timeout=600)
    assert result["state"] == "completed" and result["objective"] == "dpo" and result["steps"] == 1
    scores = result["reward_accuracy"]
    for side in ("before", "after"):
        assert scores[side]["total"] + scores[side]["skipped"] == scores["pairs"] > 0
        assert scores[side]["interval"]["low"] <= scores[side]["accuracy"] <= scores[side]["interval"]["high"]
    assert "p_value" in scores["change"]


@pytest.mark.slow
def test_bench_export_parity_tiny():
    result = _run(["bench/bench_export_parity.py", "--tiny", "--targets", "merged,gguf-f16", "--prompts", "4"],
                  timeout=600)
    merged, gguf = result["targets"]["merged"], result["targets"]["gguf-f16"]
    assert merged["prompts"] == 4 and merged["identical"] == 4 and merged["passed"] is True
    assert merged["export_seconds"] > 0 and merged["size_mb"] > gguf["size_mb"] > 0
    assert "identical in llama.cpp" in gguf["verdict"] or "llama.cpp is not installed" in gguf["verdict"]
