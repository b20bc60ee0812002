"""What the run queue and the process launcher cost: time to the first step and tokens/s of the Quick
demo preset started three ways, interleaved round by round, medians over the rounds.

    .venv/bin/python bench/bench_queue.py                       # bundled model, 20 steps, 3 rounds
    .venv/bin/python bench/bench_queue.py --tiny --steps 2 --rounds 1   # smoke test

* thread  — TrainingSlot.start: the app's training thread, as before the queue existed
* queue   — RunQueue.enqueue + dispatch: the Train button's path now (the run waits in queue.json,
            then the same thread trains it)
* process — RunQueue with launcher "process": the run trains in its own Python process, which
            outlives the app (training/launcher.py)

Time to first step = from the press (enqueue / start) to the first logged training step, so it
includes loading the model (and, for a process, starting Python and importing torch). Tokens/s =
the median of the per-log-step rates after the first. Each round uses a fresh runs folder. Prints
one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODES = ("thread", "queue", "process")


def config(model: str, steps: int):
    from finetune_core.config import PRESETS, RunConfig

    return RunConfig.from_dict({
        "model": model, "data_path": str(REPO / "sample_data" / "customer_intents.csv"),
        "data_format": "classification", "prompt_column": "text", "completion_column": "label",
    }).with_overrides({**PRESETS["Quick demo (CPU)"], "max_steps": steps, "save_steps": 0})


def one(mode: str, model: str, steps: int, root: Path) -> dict:
    """Train once in `mode` under a fresh runs folder; the figures of that run."""
    from finetune_core.training.queue import RunQueue
    from finetune_core.training.runner import TrainingSlot

    os.environ["STUDIO_RUNS_DIR"] = str(root)
    cfg = config(model, steps)
    slot = TrainingSlot()
    t0 = time.time()
    if mode == "thread":
        run = slot.start(cfg)
        slot.wait(3600)
    else:
        queue = RunQueue(slot, poll=0.2)
        run, _ = queue.enqueue(cfg.with_overrides({"launcher": "process" if mode == "process" else "thread"}))
        queue.wait_idle(3600)
    wall = time.time() - t0
    losses = [m for m in run.metrics() if "loss" in m]
    rates = [m["tokens_per_s"] for m in losses[1:] if m.get("tokens_per_s")]
    return {"mode": mode, "state": run.status()["state"], "first_step_s": round(losses[0]["time"] - t0, 2),
            "tokens_per_s": round(statistics.median(rates), 1) if rates else None, "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        model = "bundled"
        if args.tiny:
            sys.path.insert(0, str(REPO / "tests"))
            from conftest import save_tiny_model

            model = str(save_tiny_model(Path(tmp) / "tiny"))
        results = [one(mode, model, args.steps, Path(tmp) / f"runs-{r}-{mode}")
                   for r in range(args.rounds) for mode in modes]
    summary = {}
    for mode in modes:
        mine = [r for r in results if r["mode"] == mode]
        rates = [r["tokens_per_s"] for r in mine if r["tokens_per_s"]]
        summary[mode] = {"first_step_s": statistics.median(r["first_step_s"] for r in mine),
                         "tokens_per_s": statistics.median(rates) if rates else None,
                         "wall_s": statistics.median(r["wall_s"] for r in mine),
                         "states": sorted({r["state"] for r in mine})}
    base = summary.get("thread")
    if base and base["tokens_per_s"]:
        for mode, row in summary.items():
            if row["tokens_per_s"]:
                row["tokens_per_s_vs_thread"] = round(row["tokens_per_s"] / base["tokens_per_s"] - 1, 3)
            row["first_step_vs_thread_s"] = round(row["first_step_s"] - base["first_step_s"], 2)
    print(json.dumps({"steps": args.steps, "rounds": args.rounds, "model": "tiny" if args.tiny else "bundled",
                      "runs": results, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
