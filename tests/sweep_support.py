"""Helpers for the sweep and comparison tests: run folders written as training and evaluation leave them
(no training), and a stand-in for the run queue with the contract's methods."""
from __future__ import annotations

import json
import time

from finetune_core.config import RunConfig
from finetune_core.runs.ownership import AccessError, Visitor, can_change
from finetune_core.runs.store import Run, create_run, get_run


def fake_run(name: str, losses=(2.0, 1.5, 1.2), held=(1.4,), state: str = "completed", evaluation: dict | None = None,
             owner: dict | None = None, sweep: dict | None = None, seconds: float = 30.0, **cfg) -> Run:
    """A finished run: metrics.jsonl with one training loss per step (then the held-out losses at the
    last step), its status, and when `evaluation` ({metric: (tuned, higher_is_better)}) eval/results.json."""
    config = RunConfig(**cfg).with_overrides({"data_path": "/srv/data/emotions.jsonl"})
    run = create_run(config, owner=owner, name=name, extra={"sweep": sweep} if sweep else None)
    for step, loss in enumerate(losses, 1):
        run.append_metric({"event": "metrics", "step": step, "loss": loss, "tokens_per_s": 100.0 * step})
    for loss in held:
        run.append_metric({"event": "metrics", "step": len(losses), "eval_loss": loss})
    now = time.time()
    run.set_status(state=state, step=len(losses), total_steps=len(losses), started=now - seconds, finished=now)
    if evaluation:
        run.eval_dir.mkdir(parents=True, exist_ok=True)
        summary = [{"metric": m, "base": 0.1, "tuned": v, "delta": v - 0.1, "higher_is_better": up}
                   for m, (v, up) in evaluation.items()]
        (run.eval_dir / "results.json").write_text(json.dumps({"task": "generation", "rows": 10, "summary": summary}))
    return run


class FakeQueue:
    """The RunQueue's contract (finetune_core/training/queue.py) over run folders, nothing trained:
    enqueue makes a waiting run tagged with its sweep; `refuse_after` n refuses an enqueue_many that would
    make more than n waiting (and an enqueue past n)."""

    def __init__(self, refuse_after: int | None = None):
        self.waiting: list[str] = []
        self.refuse_after = refuse_after
        self.now: Run | None = None

    def enqueue(self, cfg, owner=None, name="", label="", sweep=None, who=None):
        if self.refuse_after is not None and len(self.waiting) >= self.refuse_after:
            raise AccessError("You have too many runs waiting.")
        run = create_run(cfg, label=label, owner=owner, name=name, extra={"sweep": sweep} if sweep else None)
        run.set_status(state="waiting")
        self.waiting.append(run.id)
        return run, len(self.waiting)

    def enqueue_many(self, entries, owner=None, who=None):
        if self.refuse_after is not None and len(self.waiting) + len(entries) > self.refuse_after:
            raise AccessError("You have too many runs waiting.")
        return [self.enqueue(e["cfg"], owner, e.get("name", ""), e.get("label", ""), e.get("sweep"), who)
                for e in entries]

    def cancel(self, run_id, visitor):
        run = get_run(run_id)
        if not can_change(run.path, visitor or Visitor()):
            raise AccessError("Only the person who queued it can cancel it.")
        self.waiting.remove(run_id)
        run.set_status(state="cancelled")
        return run

    def items(self):
        return [{"run": rid, "position": i} for i, rid in enumerate(self.waiting, 1)]

    def running(self):
        return self.now
