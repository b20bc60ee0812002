"""Benchmark: the CPU quick demo of preference training (DPO) and its held-out reward accuracy.

Trains a DPO run with the "Quick demo DPO (CPU)" preset on the training part of
a preference file, then scores the held-out pairs with both sides of the run:
the start model (adapter off) and the DPO run (adapter on). Reward accuracy is
the share of pairs whose chosen answer gets a higher summed log-probability
than the rejected one, given the prompt. Prints ONE JSON object on stdout
(progress and library messages go to stderr).

    python bench/bench_preference.py                              # bundled model, ../shared/datasets/lf_dpo_en_demo.json
    python bench/bench_preference.py --data my_pairs.jsonl --steps 60
    python bench/bench_preference.py --steps 96 --set loss_type=sigmoid+sft --set learning_rate=5e-4
    python bench/bench_preference.py --tiny --steps 2             # tiny random model, seconds anywhere
    python bench/bench_preference.py --score-run runs/<id>        # score a finished run's held-out pairs only
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import the project's packages

LF_DPO = REPO.parent / "shared" / "datasets" / "lf_dpo_en_demo.json"
PRESET = "Quick demo DPO (CPU)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="DPO quick demo: training time and held-out reward accuracy.")
    ap.add_argument("--data", default=str(LF_DPO), help="a preference file (any format the Data tab reads)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model and a generated pairs file")
    ap.add_argument("--steps", type=int, help="max_steps (default: the preset's)")
    ap.add_argument("--eval-fraction", type=float, default=0.2, help="share of pairs held out")
    ap.add_argument("--set", action="append", default=[], help="extra config key=value")
    ap.add_argument("--score-run", help="only score the held-out pairs of this finished run directory")
    return ap.parse_args(argv)


def tiny_pairs(path: Path, n: int = 24) -> Path:
    """A generated pairs file in TRL's explicit format (short prompts, a right and a wrong answer)."""
    rows = [{"prompt": f"Is {i} an even number?", "chosen": "yes" if i % 2 == 0 else "no",
             "rejected": "no" if i % 2 == 0 else "yes"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_model(workdir: Path) -> str:
    """A tiny random Llama with the bundled tokenizer."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import save_tiny_model

    return str(save_tiny_model(workdir / "tiny-model"))


def train(args, workdir: Path):
    """Create and train the DPO run; returns (run, final status, wall seconds)."""
    from finetune_core.config import RunConfig, preset
    from finetune_core.runs.store import create_run
    from finetune_core.training.runner import run_job

    os.environ["STUDIO_RUNS_DIR"] = str(workdir / "runs")  # this process only: keep the run in the temp dir
    data = str(tiny_pairs(workdir / "pairs.jsonl")) if args.tiny else args.data
    base = RunConfig.from_dict({"model": tiny_model(workdir) if args.tiny else "bundled", "data_path": data,
                                "eval_fraction": args.eval_fraction})
    cfg = preset(PRESET, base).with_sets(args.set)
    if args.steps:
        cfg = cfg.with_overrides({"max_steps": args.steps})
    run = create_run(cfg, label="bench-dpo")
    start = time.perf_counter()
    status = run_job(run, threading.Event())
    return run, status, time.perf_counter() - start


def score(run) -> dict:
    """Held-out reward accuracy of both sides, with counts, intervals and the paired test."""
    from evaluation.reward_accuracy import reward_accuracy
    from evaluation.significance import paired_delta
    from finetune_core.data.dataset import read_jsonl
    from finetune_core.inference.generation import InferenceModel

    rows = read_jsonl(run.data_dir / "heldout.jsonl")
    model = InferenceModel.from_run(run)
    start = time.perf_counter()
    # as training and the Evaluate tab score them: at the run's max_length (a pair whose prompt fills it is skipped)
    length = run.config().max_length
    before = reward_accuracy(model, rows, tuned=False, max_length=length)
    after = reward_accuracy(model, rows, tuned=True, max_length=length)
    seconds = time.perf_counter() - start
    both = [(x, y) for x, y in zip(before["margins"], after["margins"]) if x is not None and y is not None]
    a = [1.0 if x > 0 else 0.0 for x, _ in both]
    b = [1.0 if y > 0 else 0.0 for _, y in both]
    out = {"pairs": len(rows), "scoring_seconds": round(seconds, 1)}
    for name, result in (("before", before), ("after", after)):
        out[name] = {k: result[k] for k in ("correct", "total", "accuracy", "skipped")}
        out[name]["per_token"] = {k: result["per_token"][k] for k in ("correct", "total", "accuracy")}
        out[name]["interval"] = result["interval"].to_dict() if hasattr(result["interval"], "to_dict") else result["interval"]
    change = paired_delta(a, b)
    out["change"] = change.to_dict() if hasattr(change, "to_dict") else change
    shifts = sorted(y - x for x, y in both)  # how far each pair's margin (chosen minus rejected, nats) moved
    out["margin_shift"] = {"median": round(shifts[len(shifts) // 2], 2) if shifts else None,
                           "moved_towards_chosen": sum(1 for d in shifts if d > 0), "pairs": len(shifts),
                           "wrong_to_right": sum(1 for x, y in both if x <= 0 < y),
                           "right_to_wrong": sum(1 for x, y in both if y <= 0 < x)}
    return out


def main() -> None:
    args = parse_args(sys.argv[1:])
    if args.score_run:
        from finetune_core.runs.store import run_from_dir

        print(json.dumps({"benchmark": "preference_reward_accuracy", "run": Path(args.score_run).name,
                          "reward_accuracy": score(run_from_dir(args.score_run))}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run, status, seconds = train(args, Path(tmp))
        cfg = run.config()
        result = {"benchmark": "preference_quick_demo", "preset": PRESET, "tiny": args.tiny,
                  "data": Path(cfg.data.data_path).name, "objective": cfg.objective, "steps": status.get("step"),
                  "state": status.get("state"), "reason": status.get("reason"), "train_seconds": round(seconds, 1),
                  "seconds_per_step": round(seconds / max(1, status.get("step") or 1), 2),
                  "train_rows": json.loads((run.data_dir / "report.json").read_text()).get("train_rows"),
                  "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
        if status.get("state") == "completed":
            held = [m for m in run.metrics() if "eval_rewards/accuracies" in m]  # TRL's relative measure
            result["trl_eval_accuracy"] = round(held[-1]["eval_rewards/accuracies"], 3) if held else None
            result["reward_accuracy"] = score(run)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
