"""Evaluations in progress, so every page watching a run shows how far its evaluation is.

An evaluation can start from the Evaluate tab of one page, from another page,
or from the guided demo's own event; each page's Evaluate tab polls with a
gr.Timer. So the progress lives on the app (`AppContext.evaluations`, one
`Evaluations` per app), keyed by run id: `eval_tab.evaluate` starts an entry,
feeds it `evaluation.run_eval.evaluate_run`'s progress messages ("Base (adapter
off): generating 4/8 rows", fraction of the whole) and removes it when done,
failed or cancelled; `eval_views.progress_line` says it in words. One
evaluation per run at a time: a second one would save over the first.

    >>> now = Evaluations()
    >>> entry = now.start("20260101-000000-x-abcdef", "colours")
    >>> now.start("20260101-000000-x-abcdef", "colours") is None  # already running
    True
    >>> now.update(entry, "Base (adapter off): generating 4/8 rows", 0.25)
    >>> now.get("20260101-000000-x-abcdef").fraction
    0.25
    >>> now.finish(entry); now.get("20260101-000000-x-abcdef") is None
    True
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class EvalProgress:
    """One evaluation in progress: its run, and its last progress message and fraction (0..1)."""

    run_id: str
    name: str  # the run's human name
    token: str  # tells this evaluation from a later one of the same run
    started: float
    text: str = ""
    fraction: float = 0.0


class Evaluations:
    """The evaluations in progress on this app, by run id; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, EvalProgress] = {}

    def start(self, run_id: str, name: str) -> EvalProgress | None:
        """Record an evaluation of the run starting; None when one of that run is running already."""
        with self._lock:
            if run_id in self._running:
                return None
            entry = EvalProgress(run_id, name, secrets.token_hex(8), time.time())
            self._running[run_id] = entry
            return entry

    def update(self, entry: EvalProgress, text: str, fraction: float) -> None:
        """The evaluation's latest progress message (from evaluate_run's progress callback)."""
        with self._lock:
            if self._running.get(entry.run_id, entry).token == entry.token:
                self._running[entry.run_id] = replace(entry, text=str(text), fraction=float(fraction))

    def finish(self, entry: EvalProgress) -> None:
        """The evaluation ended (saved, failed or cancelled): it is no longer in progress."""
        with self._lock:
            current = self._running.get(entry.run_id)
            if current is not None and current.token == entry.token:
                del self._running[entry.run_id]

    def get(self, run_id: str | None) -> EvalProgress | None:
        """The run's evaluation in progress (a snapshot), or None."""
        with self._lock:
            return self._running.get(run_id or "")


__all__ = ["EvalProgress", "Evaluations"]
