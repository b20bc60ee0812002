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
    ap.add_argument("--precisions", default="float32,bfloat16",
                    help="(a): float32 (the weights as loaded) and/or bfloat16 (HFLM's bf16 autocast)")
    ap.add_argument("--rounds", type=int, default=1, help="(a): rounds over the settings; the best counts")
    ap.add_argument("--run", help="(b): an existing run of the bundled model (default: train one here)")
    ap.add_argument("--train-steps", type=int, default=60, help="(b): steps of the Quick demo run trained here")
    ap.add_argument("--run-items", type=int, default=500)
    ap.add_argument("--score-items", type=int, default=500, help="(c): first N items of each benchmark (0: all)")
    ap.add_argument("--batch-size", type=int, default=32, help="(b) and (c)")
    ap.add_argument("--score-precision", default="auto", choices=("auto", "float32", "bfloat16"),
                    help="(c): as a run's precision setting (auto: bf16 autocast on CPUs with fast bf16)")
    return ap.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def speed(model, folder: Path, items: int, batch_sizes: list[int], precisions: list[str], rounds: int = 1) -> dict:
    """(a) items/s of lm-eval's scoring at each precision and batch size on the same ARC-Easy items (base
    model), with the tokens it runs and the arithmetic rate they imply (2 x parameters per token, attention
    left out). Each round runs every setting once, in turn; the best round counts (other work on the
    machine only ever slows a round down), the median is reported beside it."""
    from statistics import median

    from evaluation.benchmark_tasks import prepare
    from evaluation.benchmarks import score_side

    tokens = scored_tokens(model.tokenizer, prepare("arc_easy", folder, limit=items).tasks[False])
    flops_per_token = 2 * sum(p.numel() for p in model.model.parameters())
    settings = [(p, b) for p in precisions for b in batch_sizes]
    for precision in precisions:  # warm-up: first calls allocate and pick kernels
        score_side(model, prepare("arc_easy", folder, limit=8), False, 8, autocast=_autocast(precision))
    runs: dict[tuple, list[dict]] = {s: [] for s in settings}
    picks = {}
    for round_ in range(rounds):
        for precision, size in settings:
            prepared = prepare("arc_easy", folder, limit=items)
            load = os.getloadavg()[0]
            start = time.perf_counter()
            scores = score_side(model, prepared, False, size, autocast=_autocast(precision))
            seconds = time.perf_counter() - start
            picks[(precision, size)] = [(s["acc"], s["acc_norm"]) for s in scores]
            runs[(precision, size)].append({"seconds": round(seconds, 2), "load_before": round(load, 2),
                                            "load_after": round(os.getloadavg()[0], 2)})
            log(f"(a) round {round_ + 1}, {precision}, batch {size}: {runs[(precision, size)][-1]}")
    out = {}
    for (precision, size), done in runs.items():
        best = min(r["seconds"] for r in done)
        mine = picks[(precision, size)]
        out[f"{precision}/{size}"] = {
            "best_seconds": best, "median_seconds": round(median(r["seconds"] for r in done), 2),
            "items_per_s": round(items / best, 2), "tokens_per_s": round(tokens / best),
            "gflop_per_s": round(tokens * flops_per_token / best / 1e9, 1),
            "acc": sum(p[0] for p in mine) / items, "acc_norm": sum(p[1] for p in mine) / items, "rounds": done}
    one = out.get("float32/1")
    ratios = {f"{k}_vs_float32/1": round(v["items_per_s"] / one["items_per_s"], 2)
              for k, v in out.items() if one and k != "float32/1"}
    differ = {f"{p}/{b}": sum(x != y for x, y in zip(picks[(p, b)], picks[settings[0]])) for p, b in settings}
    return {"items": items, "tokens": tokens, "rounds": rounds, "by_setting": out, "speedup": ratios,
            f"items_scored_differently_from_{settings[0][0]}/{settings[0][1]}": differ}


def _precision_name(precision: str, model) -> str | None:
    from evaluation.benchmarks import scoring_autocast

    if model is None:
        return None
    autocast = scoring_autocast(precision, model)
    return f"{autocast} autocast" if autocast else "float32"


def _autocast(precision: str) -> str | None:
    return None if precision == "float32" else precision


def scored_tokens(tokenizer, task) -> int:
    """Tokens lm-eval feeds the model for these items: context + choice, less the last token, per choice."""
    total = 0
    for doc in task.eval_docs:
        context = task.fewshot_context(doc, 0)
        for choice in task.doc_to_choice(doc):
            ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
            cont = tokenizer(task.config.target_delimiter + choice, add_special_tokens=False)["input_ids"]
            total += len(ctx) + len(cont) - 1
    return total


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
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = run_benchmarks(run, names=["arc_easy"], limit=items, data_dir=str(folder), batch_size=batch_size,
                            progress=lambda text, fraction: marks.append((time.perf_counter() - start, text)))
    wall = time.perf_counter() - start
    scoring_from = next(t for t, text in marks if "base model" in text)
    (bench,) = result["benchmarks"]
    return {"run": run.id, "trained_here": run_dir is None, "train_steps": None if run_dir else steps,
            "train_seconds": trained_s, "items": bench["items"], "batch_size": batch_size,
            "wall_seconds": round(wall, 1), "scoring_seconds": round(wall - scoring_from, 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "precision": result["precision"],
            "metrics": {m["metric"]: {k: m[k] for k in ("base", "tuned", "delta", "verdict_text")}
                        for m in bench["metrics"]},
            "flips": {k: len(v) for k, v in bench["flips"].items()}}


def scores(model, folder: Path, items: int | None, batch_size: int, precision: str,
           arc_easy_base: dict | None) -> dict:
    """(c) the base model's zero-shot scores on each benchmark (first `items`), with seconds per benchmark,
    in the precision the studio picks for a run whose precision is `precision` (scoring_autocast)."""
    from evaluation.benchmark_tasks import BENCHMARKS, prepare
    from evaluation.benchmarks import score_side, scoring_autocast

    autocast = scoring_autocast(precision, model)
    out = {}
    for name in BENCHMARKS:
        if name == "arc_easy" and arc_easy_base is not None:
            out[name] = arc_easy_base
            continue
        prepared = prepare(name, folder, limit=items)
        start = time.perf_counter()
        per_item = score_side(model, prepared, False, batch_size, autocast=autocast)
        out[name] = {"items": len(per_item), "seconds": round(time.perf_counter() - start, 1),
                     "load_after": round(os.getloadavg()[0], 2),
                     **{m: sum(s[m] for s in per_item) / len(per_item) for m in prepared.metrics}}
        log(f"(c) {name}: {out[name]}")
    arc = [out[n]["acc_norm"] for n in ("arc_easy", "arc_challenge")]
    return {"precision": f"{autocast} autocast" if autocast else "float32", "ours": out,
            "ours_arc_average_acc_norm": sum(arc) / 2, "published_instruct_percent": PUBLISHED,
            "published_source": "huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct model card, "
                                "'Instruction model' table (lighteval, zero-shot)"}


def main(argv: list[str] | None = None) -> dict:
    import torch

    args = parse_args(sys.argv[1:] if argv is None else argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    folder = Path(args.data_dir)
    os.environ.setdefault("STUDIO_RUNS_DIR", tempfile.mkdtemp(prefix="bench-benchmarks-runs-"))
    result = {"bench": "benchmarks", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "data_dir": str(folder),
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    base = None
    if parts & {"speed", "scores"}:
        from finetune_core.inference.generation import InferenceModel

        base = InferenceModel.base_only("bundled", progress=log)
    if "speed" in parts:
        result["speed"] = speed(base, folder, args.speed_items, [int(b) for b in args.batch_sizes.split(",")],
                                args.precisions.split(","), args.rounds)
    arc_easy_base = None
    if "run" in parts:
        result["run"] = base_plus_tuned(args.run, args.train_steps, folder, args.run_items, args.batch_size)
        if args.run_items == args.score_items and result["run"]["precision"] == _precision_name(
                args.score_precision, base):
            m = result["run"]["metrics"]
            arc_easy_base = {"items": result["run"]["items"], "acc": m["acc"]["base"], "acc_norm": m["acc_norm"]["base"],
                             "from": "(b)'s base side"}
    if "scores" in parts:
        result["scores"] = scores(base, folder, args.score_items or None, args.batch_size, args.score_precision,
                                  arc_easy_base)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
