"""Smoke test: bench/bench_chat.py --tiny runs end to end and prints one JSON object."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_chat_tiny_prints_json():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_chat.py"), "--tiny", "--max-new-tokens", "8", "--repeats", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)  # stdout holds nothing but the JSON object
    for mode in ("base", "tuned", "both"):
        assert result[mode]["ttft_s"] > 0
        assert result[mode]["steps"] >= 1
    mem = result["memory"]
    assert mem["rss_base_adapter_mb"] >= mem["rss_base_mb"] > 0
    assert mem["goal_ratio_le_1_1"] is True  # the adapter adds no second copy of the weights
    assert isinstance(result["goal_ttft_lt_0_5s"], bool)
