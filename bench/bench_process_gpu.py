"""Process-mode runs on a machine with GPUs: the run queue starts torchrun (or accelerate) with one
process per GPU, the app's Stop reaches every rank, and Resume continues. For a device machine; on a
CPU it runs the same checks with two gloo processes (--cpu).

    .venv/bin/python bench/bench_process_gpu.py                 # every visible GPU, bundled model
    .venv/bin/python bench/bench_process_gpu.py --cpu --tiny    # the same path on two CPU processes

Checks, each a line of the JSON printed:
* completes — a queued torchrun run of the Quick demo preset (--steps steps) completes, rank 0 alone
              writes metrics, world_size is recorded; time to first step and tokens/s
* stop      — a long run stopped through the stop file ends "stopped" on every rank with a checkpoint,
              and resuming it through the queue completes
* accelerate — the same run under accelerate launch (--launcher accelerate also)
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


def config(model: str, steps: int, launcher: str, nproc: int, cpu: bool):
    from finetune_core.config import PRESETS, RunConfig

    return RunConfig.from_dict({
        "model": model, "data_path": str(REPO / "sample_data" / "customer_intents.csv"),
        "data_format": "classification", "prompt_column": "text", "completion_column": "label",
    }).with_overrides({**PRESETS["Quick demo (CPU)"], "max_steps": steps, "save_steps": 5, "launcher": launcher,
                       "num_processes": nproc, "device": "cpu" if cpu else "auto"})


def figures(run, t0: float) -> dict:
    losses = [m for m in run.metrics() if "loss" in m]
    rates = [m["tokens_per_s"] for m in losses[1:] if m.get("tokens_per_s")]
    st = run.status()
    return {"state": st.get("state"), "step": st.get("step"), "reason": st.get("reason"),
            "world_size": run.run_yaml().get("world_size"),
            "first_step_s": round(losses[0]["time"] - t0, 1) if losses else None,
            "tokens_per_s": statistics.median(rates) if rates else None,
            "metric_steps_unique": len({m["step"] for m in losses}) == len(losses)}


def check_complete(queue, cfg) -> dict:
    t0 = time.time()
    run, _ = queue.enqueue(cfg)
    queue.wait_idle(3600)
    return {"check": f"completes ({cfg.launcher})", **figures(run, t0)}


def check_stop(queue, cfg) -> dict:
    from finetune_core.runs.ownership import Visitor

    run, _ = queue.enqueue(cfg.with_overrides({"max_steps": 10_000}))
    queue.dispatch_once()
    deadline = time.time() + 900
    while run.status().get("step", 0) < 6 and time.time() < deadline:
        time.sleep(1)
    queue.stop_running(Visitor())
    queue.wait_idle(600)
    stopped = run.status()
    ckpt = (run.checkpoints_dir / f"checkpoint-{stopped.get('step')}").is_dir()
    text = (run.path / "run.yaml").read_text().replace("max_steps: 10000", f"max_steps: {stopped.get('step', 0) + 4}")
    (run.path / "run.yaml").write_text(text)
    queue.resume(run)
    queue.wait_idle(900)
    return {"check": "stop and resume", "stopped_state": stopped.get("state"), "stopped_step": stopped.get("step"),
            "checkpoint_at_stop": ckpt, "after_resume": run.status().get("state"), "final_step": run.status().get("step")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpu", action="store_true", help="two gloo processes on the CPU instead of GPUs")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model instead of the bundled one")
    args = parser.parse_args()
    import torch

    nproc = 2 if args.cpu else max(1, torch.cuda.device_count())
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["STUDIO_RUNS_DIR"] = str(Path(tmp) / "runs")
        model = "bundled"
        if args.tiny:
            sys.path.insert(0, str(REPO / "tests"))
            from conftest import save_tiny_model

            model = str(save_tiny_model(Path(tmp) / "tiny"))
        from finetune_core.training.queue import RunQueue
        from finetune_core.training.runner import TrainingSlot

        queue = RunQueue(TrainingSlot(), poll=0.5)
        cfg = config(model, args.steps, "torchrun", nproc, args.cpu)
        results = [check_complete(queue, cfg), check_stop(queue, cfg),
                   # accelerate launch runs one process on a CPU (launcher.check_launch refuses more)
                   check_complete(queue, cfg.with_overrides({"launcher": "accelerate",
                                                             "num_processes": 1 if args.cpu else nproc}))]
    print(json.dumps({"processes": nproc, "device": "cpu" if args.cpu else torch.cuda.get_device_name(0)
                      if torch.cuda.is_available() else "none", "model": model if args.tiny else "bundled",
                      "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
