"""Benchmark: the general-skill check (evaluation/benchmarks.py) on the bundled model, on this machine.

Three measurements, each optional (--parts), printed as ONE JSON object on stdout (progress and
library messages go to stderr):

(a) speed: lm-eval's log-likelihood scoring of the first N ARC-Easy items by the bundled base model,
    items/s at each --batch-sizes (the same items, the same lm-eval code; only HFLM's batch size
    differs), with a short warm-up first and a check that every batch size scored the same choices.
(b) run: the wall time of run_benchmarks (base + tuned) on the first N ARC-Easy items for a run of the
    bundled model: --run RUN_DIR, or a run trained here first with the "Quick demo (CPU)" preset on
    sample_data/customer_intents.csv (--train-steps overrides its 60 steps), in a temporary runs folder.
(c) scores: the bundled base model's zero-shot acc / acc_norm on the first N items of each of the four
    benchmarks (ARC-Easy reuses (b)'s base side when (b) ran on as many items), beside the figures
    SmolLM2's authors publish for SmolLM2-135M-Instruct (model card; lighteval, zero-shot).

    .venv/bin/python bench/bench_benchmarks.py                       # all three, ../shared/datasets
    .venv/bin/python bench/bench_benchmarks.py --parts speed --speed-items 40 --batch-sizes 1,32

Heavy: on two cores it holds both for 15 to 20 minutes with the defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import the project's packages

DATA = REPO.parent / "shared" / "datasets"
TRAIN_DATA = REPO / "sample_data" / "customer_intents.csv"
# SmolLM2-135M-Instruct's model card, "Instruction model" table (lighteval, zero-shot), in percent
PUBLISHED = {"HellaSwag": 40.9, "ARC (Average)": 37.3, "MMLU (cloze)": 29.3, "PIQA": 66.3}


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="General-skill check: scoring speed, base+tuned wall time, scores.")
    ap.add_argument("--parts", default="speed,run,scores", help="any of speed, run, scores (comma-separated)")
    ap.add_argument("--data-dir", default=str(DATA), help="folder with the four benchmark files")
    ap.add_argument("--speed-items", type=int, default=100)
    ap.add_argument("--batch-sizes", default="1,8,32,64")
    ap.add_argument("--run", help="(b): an existing run of the bundled model (default: train one here)")
    ap.add_argument("--train-steps", type=int, default=60, help="(b): steps of the Quick demo run trained here")
    ap.add_argument("--run-items", type=int, default=500)
    ap.add_argument("--score-items", type=int, default=500, help="(c): first N items of each benchmark (0: all)")
    ap.add_argument("--batch-size", type=int, default=32, help="(b) and (c)")
    return ap.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def speed(model, folder: Path, items: int, batch_sizes: list[int]) -> dict:
    """(a) items/s of lm-eval's scoring at each batch size on the same ARC-Easy items (base model)."""
    from evaluation.benchmark_tasks import prepare
    from evaluation.benchmarks import score_side

    score_side(model, prepare("arc_easy", folder, limit=8), False, 8)  # warm-up: first calls allocate
    out, picks = {}, {}
    for size in batch_sizes:
        prepared = prepare("arc_easy", folder, limit=items)
        start = time.perf_counter()
        scores = score_side(model, prepared, False, size)
        seconds = time.perf_counter() - start
        picks[size] = [(s["acc"], s["acc_norm"]) for s in scores]
        out[str(size)] = {"seconds": round(seconds, 2), "items_per_s": round(items / seconds, 2),
                          "acc": sum(p[0] for p in picks[size]) / items,
                          "acc_norm": sum(p[1] for p in picks[size]) / items}
        log(f"(a) batch {size}: {out[str(size)]}")
    one = out.get("1")
    ratios = {f"batch_{b}_vs_1": round(v["items_per_s"] / one["items_per_s"], 2)
              for b, v in out.items() if one and b != "1"}
    same = len({tuple(p) for p in picks.values()}) == 1
    return {"items": items, "by_batch_size": out, "speedup": ratios, "same_scores_at_every_batch_size": same}


def train_demo_run(steps: int):
    """A run of the bundled model: the Quick demo preset on the customer-intents sample, `steps` steps."""
    from finetune_core.config import PRESETS, DataMapping, RunConfig
    from finetune_core.runs.store import create_run
    from finetune_core.training.runner import run_job

    cfg = RunConfig(model="bundled", data=DataMapping(data_path=str(TRAIN_DATA))).with_overrides(
        {**PRESETS["Quick demo (CPU)"], "max_steps": steps})
    run = create_run(cfg, name=f"bench: Quick demo, {steps} steps")
    start = time.perf_counter()
    status = run_job(run, threading.Event())
    if status["state"] != "completed":
        raise SystemExit(f"error: the demo run ended {status['state']}: {status.get('reason')}")
    return run, round(time.perf_counter() - start, 1)


def base_plus_tuned(run_dir: str | None, steps: int, folder: Path, items: int, batch_size: int) -> dict:
    """(b) wall time of run_benchmarks on the first `items` ARC-Easy items, model load included."""
    from evaluation.benchmarks import run_benchmarks
    from finetune_core.runs.store import run_from_dir

    trained_s = None
    if run_dir:
        run = run_from_dir(run_dir)
    else:
        run, trained_s = train_demo_run(steps)
    marks = []
    start = time.perf_counter()
    result = run_benchmarks(run, names=["arc_easy"], limit=items, data_dir=str(folder), batch_size=batch_size,
                            progress=lambda text, fraction: marks.append((time.perf_counter() - start, text)))
    wall = time.perf_counter() - start
    scoring_from = next(t for t, text in marks if "base model" in text)
    (bench,) = result["benchmarks"]
    return {"run": run.id, "trained_here": run_dir is None, "train_steps": None if run_dir else steps,
            "train_seconds": trained_s, "items": bench["items"], "batch_size": batch_size,
            "wall_seconds": round(wall, 1), "scoring_seconds": round(wall - scoring_from, 1),
            "metrics": {m["metric"]: {k: m[k] for k in ("base", "tuned", "delta", "verdict_text")}
                        for m in bench["metrics"]},
            "flips": {k: len(v) for k, v in bench["flips"].items()}}


def scores(model, folder: Path, items: int | None, batch_size: int, arc_easy_base: dict | None) -> dict:
    """(c) the base model's zero-shot scores on each benchmark (first `items`), with seconds per benchmark."""
    from evaluation.benchmark_tasks import BENCHMARKS, prepare
    from evaluation.benchmarks import score_side

    out = {}
    for name in BENCHMARKS:
        if name == "arc_easy" and arc_easy_base is not None:
            out[name] = arc_easy_base
            continue
        prepared = prepare(name, folder, limit=items)
        start = time.perf_counter()
        per_item = score_side(model, prepared, False, batch_size)
        out[name] = {"items": len(per_item), "seconds": round(time.perf_counter() - start, 1),
                     **{m: sum(s[m] for s in per_item) / len(per_item) for m in prepared.metrics}}
        log(f"(c) {name}: {out[name]}")
    arc = [out[n]["acc_norm"] for n in ("arc_easy", "arc_challenge")]
    return {"ours": out, "ours_arc_average_acc_norm": sum(arc) / 2, "published_instruct_percent": PUBLISHED,
            "published_source": "huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct model card, "
                                "'Instruction model' table (lighteval, zero-shot)"}


def main(argv: list[str] | None = None) -> dict:
    import torch

    args = parse_args(sys.argv[1:] if argv is None else argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    folder = Path(args.data_dir)
    os.environ.setdefault("STUDIO_RUNS_DIR", tempfile.mkdtemp(prefix="bench-benchmarks-runs-"))
    result = {"bench": "benchmarks", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "data_dir": str(folder)}
    base = None
    if parts & {"speed", "scores"}:
        from finetune_core.inference.generation import InferenceModel

        base = InferenceModel.base_only("bundled", progress=log)
    if "speed" in parts:
        result["speed"] = speed(base, folder, args.speed_items, [int(b) for b in args.batch_sizes.split(",")])
    arc_easy_base = None
    if "run" in parts:
        result["run"] = base_plus_tuned(args.run, args.train_steps, folder, args.run_items, args.batch_size)
        if args.run_items == args.score_items:
            m = result["run"]["metrics"]
            arc_easy_base = {"items": result["run"]["items"], "acc": m["acc"]["base"], "acc_norm": m["acc_norm"]["base"],
                             "from": "(b)'s base side"}
    if "scores" in parts:
        result["scores"] = scores(base, folder, args.score_items or None, args.batch_size, arc_easy_base)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
