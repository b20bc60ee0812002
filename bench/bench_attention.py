"""Causal attention of one packed row on this CPU: torch's SDPA kernel vs the
grouped attention of finetune_core.speedups.packed_attention, forward and backward.

    .venv/bin/python bench/bench_attention.py                       # SmolLM2-135M shape, bf16 and float32
    .venv/bin/python bench/bench_attention.py --lengths 16 --repeats 2   # smoke test

Heads as the bundled model (9 query heads over 3 key/value heads of 64).
Each figure is the best of 3 timings of `--repeats` forward+backward passes
(with a dense random upstream gradient);
`max_abs_diff` compares the two outputs. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_ms(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t) / repeats)
    return round(best * 1000, 3)


def measure(length: int, dtype, heads: int, kv_heads: int, dim: int, repeats: int) -> dict:
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    from finetune_core.speedups.packed_attention import grouped_causal_attention

    torch.manual_seed(length)
    q = torch.randn(1, heads, length, dim, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(1, kv_heads, length, dim, dtype=dtype, requires_grad=True) for _ in range(2))
    scale = dim ** -0.5

    def kernel():
        return scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)

    def grouped():
        return grouped_causal_attention(q, k, v, scale)

    with torch.no_grad():
        diff = float((kernel().float() - grouped().float()).abs().max())
    # a dense upstream gradient, as in training (sum()'s is a stride-0 tensor that takes other paths)
    upstream = torch.randn(q.shape, dtype=dtype)
    def step(attention):
        q.grad = k.grad = v.grad = None  # fresh gradients each pass, as for training's activations
        attention().backward(upstream)

    sdpa = best_ms(lambda: step(kernel), repeats)
    ours = best_ms(lambda: step(grouped), repeats)
    return {"length": length, "dtype": str(dtype).replace("torch.", ""), "sdpa_ms": sdpa, "grouped_ms": ours,
            "grouped_speedup": round(sdpa / ours, 2), "max_abs_diff": round(diff, 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="64,150,300,500,800,1024")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--repeats", type=int, default=8)
    args = p.parse_args()
    import torch

    rows = [measure(int(n), getattr(torch, d), 9, 3, 64, args.repeats)
            for d in args.dtypes.split(",") for n in args.lengths.split(",")]
    print(json.dumps({"benchmark": "attention_row", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "heads": [9, 3, 64],
                      "results": rows}))


if __name__ == "__main__":
    main()
