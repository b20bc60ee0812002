"""What the Train tab shows of runs: the run being watched (title, progress bar, loss
curve, log tail), the runs table and the "Open run" choices, each limited to what the
visitor may see (finetune_core/runs/ownership.py).

The tab's timer calls `tick` every second. It compares the file stamps of the watched
run and of the runs folder with what the page last got, and rebuilds only the view
that changed: an idle page with many runs costs a few stat calls a second, and the
plot does not redraw.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from finetune_core.runs.ownership import Visitor, can_view, visible_runs
from finetune_core.runs.store import RUN_ID_RE, RunError, get_run, runs_root

from .context import AppContext
from .widgets import progress_html

RUN_COLUMNS = ["id", "state", "step", "total_steps", "model", "method", "data", "reason"]


def loss_frame(metrics: list[dict]) -> pd.DataFrame:
    """The loss plot's data from a run's metrics: (step, loss, series) rows, series "train" or "held-out"."""
    rows = [{"step": m["step"], "loss": m["loss"], "series": "train"} for m in metrics if m.get("loss") is not None]
    rows += [{"step": m["step"], "loss": m["eval_loss"], "series": "held-out"} for m in metrics if m.get("eval_loss") is not None]
    frame = pd.DataFrame(rows or [], columns=["step", "loss", "series"])
    # explicit dtypes: an object column would make the plot treat loss values as categories
    return frame.astype({"step": "int64", "loss": "float64", "series": "str"})


def runs_table(who: Visitor | None = None) -> pd.DataFrame:
    """The runs table: one row (RUN_COLUMNS) per run this visitor may see, newest first."""
    return pd.DataFrame([r.summary() for r in visible_runs(who or Visitor())], columns=RUN_COLUMNS)


def run_ids(who: Visitor | None = None) -> list[str]:
    """Ids for the "Open run" picker: the runs this visitor may see, newest first."""
    return [run.id for run in visible_runs(who or Visitor())]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def run_stamp(run_id: str | None) -> tuple:
    """Changes whenever run_view(run_id) could: the run's status, metrics or log file changed."""
    if not run_id or not RUN_ID_RE.match(run_id):
        return (run_id,)
    folder = runs_root() / run_id
    return (run_id, *(_stamp(folder / name) for name in ("run.yaml", "status.json", "metrics.jsonl", "log.txt")))


def runs_stamp() -> tuple:
    """Changes whenever runs_table() could: a run appeared, went or changed its status."""
    root = runs_root()
    if not root.is_dir():
        return ()
    return tuple(sorted((p.name, _stamp(p / "run.yaml"), _stamp(p / "status.json")) for p in root.iterdir()))


def tick(run_id: str | None, seen: dict | None, who: Visitor | None = None
         ) -> tuple[tuple | None, pd.DataFrame | None, dict]:
    """(run view or None, runs table or None, stamps): None where nothing changed since `seen`."""
    seen = seen or {}
    now = {"run": run_stamp(run_id), "runs": runs_stamp()}
    view = run_view(run_id, who) if now["run"] != seen.get("run") else None
    table = runs_table(who) if now["runs"] != seen.get("runs") else None
    return view, table, now


def watched_run_id(ctx: AppContext, selected: str | None, who: Visitor | None = None) -> str | None:
    """The running job when this visitor may see it, else the run they picked."""
    job = ctx.slot.active()
    if job is not None and can_view(job.run.path, who or Visitor()):
        return job.run.id
    return selected if isinstance(selected, str) and selected else None


def run_view(run_id: str | None, who: Visitor | None = None) -> tuple[str, str, pd.DataFrame, str]:
    """(title markdown, progress html, loss frame, log tail) of a run."""
    if not run_id:
        return ("No run yet. Pick a dataset in the Data tab, choose a preset and press **Train**.",
                progress_html(0, 0, "idle", None), loss_frame([]), "")
    try:
        run = get_run(run_id)
        if not can_view(run.path, who or Visitor()):
            raise RunError("hidden")
    except RunError:  # missing or someone else's: the same words, so ids are not confirmed
        return ("That run is gone.", progress_html(0, 0, "missing", None), loss_frame([]), "")
    st = run.status()
    metrics = run.metrics()
    last = next((m for m in reversed(metrics) if "loss" in m), {})
    facts = [f"**{run.id}** — {st.get('state')}"]
    if st.get("reason"):
        facts.append(st["reason"])
    if last.get("tokens_per_s"):
        facts.append(f"{last['tokens_per_s']:.0f} tokens/s")
    title = " · ".join(facts)
    bar = progress_html(int(st.get("step") or 0), int(st.get("total_steps") or 0), st.get("state", "?"), st.get("eta_s"))
    return title, bar, loss_frame(metrics), run.log_tail(30)
