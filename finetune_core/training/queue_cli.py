"""The run queue and process launches from the command line: `train --queue`, `train` with launcher
process/torchrun/accelerate, and `queue list | cancel RUN_ID | work` (the same queue file a running app
works through, training/queue.py)."""
from __future__ import annotations

import argparse
import sys
import time

from finetune_core.config import RunConfig


def queue_run(cfg: RunConfig, name: str) -> int:
    """`train --queue`: the run waits in the persisted queue; prints its id and position."""
    from finetune_core.training.queue import RunQueue
    from finetune_core.training.runner import TrainingSlot

    run, position = RunQueue(TrainingSlot()).enqueue(cfg, name=name)
    print(f"run {run.id}: waiting at position {position}  {run.path}")
    return 0


def launch_run(cfg: RunConfig, name: str, detach: bool, quiet: bool) -> int:
    """A run whose launcher is process/torchrun/accelerate: made here, trained by its own process(es)
    (training/launcher.py). Unless `detach`, follow it until it ends, printing its log as it grows."""
    from finetune_core.training.launcher import spawn
    from finetune_core.runs.store import FINAL_STATES, create_run

    run = create_run(cfg, name=name)
    proc = spawn(run, cfg)
    run.set_status(pid=proc.pid)
    print(f"run {run.id}: started ({cfg.launcher}, pid {proc.pid})  {run.path}", flush=True)
    if detach:
        return 0
    shown = 0
    while True:
        ended = proc.poll() is not None
        lines = run.log_tail(100_000).splitlines()
        if not quiet:
            for line in lines[shown:]:
                print(line, flush=True)
        shown = len(lines)
        if ended:
            break
        time.sleep(1.0)
    status = run.status()
    if status.get("state") not in FINAL_STATES:
        status = run.set_status(state="failed", reason=f"its process exited with code {proc.returncode}; "
                                                       "see process.log")
    print(f"run {run.id}: {status['state']} ({status.get('reason', '')})  {run.path}")
    return 0 if status["state"] == "completed" else 1


def add_queue_arguments(q: argparse.ArgumentParser) -> None:
    """The `queue` command's flags."""
    q.add_argument("action", choices=("list", "cancel", "work"),
                   help="list the waiting runs; cancel one; work: start them one after another until none is left.")
    q.add_argument("run_id", nargs="?", help="The run to cancel.")
    q.add_argument("--timeout", type=float, default=24 * 3600, help="work: give up after this many seconds.")


def cmd_queue(args) -> int:
    """The run queue from the command line (the same file a running app works through)."""
    from finetune_core.training.queue import RunQueue
    from finetune_core.runs.store import get_run
    from finetune_core.training.runner import TrainingSlot

    queue = RunQueue(TrainingSlot())
    if args.action == "cancel":
        if not args.run_id:
            print("error: queue cancel needs a run id", file=sys.stderr)
            return 2
        print(f"cancelled {queue.cancel(args.run_id).id}")
        return 0
    if args.action == "work":
        return 0 if queue.wait_idle(args.timeout) else 1
    running = queue.running()
    if running is not None:
        print(f"running   {running.id}  {running.name!r}")
    for item in queue.items():
        print(f"{item['position']:>3}.  {item['run']}  {get_run(item['run']).name!r}"
              f"{'  (resumes)' if item.get('resume') else ''}")
    return 0
