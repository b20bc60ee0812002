"""bench/bench_eval.py runs end to end on a tiny random model and prints one JSON object."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_eval_tiny_prints_json():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "bench/bench_eval.py", "--tiny", "--rows", "4", "--batch-size", "4",
         "--max-new-tokens", "8"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)  # the whole stdout is one JSON object
    assert result["mode"] == "tiny" and result["rows"] == 4 and result["max_new_tokens"] == 8
    assert result["batched_s"] > 0 and result["single_s"] > 0
    # The script divides unrounded times; the printed ones are rounded to 1 ms and the ratio to 0.01.
    single, batched, half_ms = result["single_s"], result["batched_s"], 0.0005
    low = (single - half_ms) / (batched + half_ms) - 0.005
    high = (single + half_ms) / max(batched - half_ms, 1e-9) + 0.005
    assert low <= result["speedup"] <= high
    assert 0.0 <= result["outputs_identical"] <= 1.0
    for key in ("device", "torch", "transformers", "date", "batched_rows_per_s", "single_rows_per_s"):
        assert key in result, key
