"""What the Train tab shows: the run being watched (title, progress bar, loss curve,
log tail), the runs table and the "Open run" choices, each limited to what the visitor
may see (finetune_core/runs/ownership.py); the device line, the model picker's choices
and the memory note beside it. A person sees a run's human name
(`Run.name`); the id stays the picker's value.

The tab's timer calls `tick` every second. It compares the file stamps of the watched
run and of the runs folder with what the page last got, and rebuilds only the view
that changed: an idle page with many runs costs a few stat calls a second, and the
plot does not redraw.

The loss plot gets a new `colors_in_legend` whenever the series it holds change (`tick`):
Gradio 6's LinePlot builds its chart, colour scale included, from the data it holds when
such a setting changes, and later values only swap the data; a series absent when the
chart was built would get no colour, and so never show.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from finetune_core.errors import StudioError
from finetune_core.models import memory
from finetune_core.models.catalogue import BUNDLED_HUB_ID, ENTRIES
from finetune_core.models.sources import BUNDLED, BUNDLED_LABEL, allowed_hub_ids, max_params_b
from finetune_core.runs.ownership import Visitor, can_view, visible_runs
from finetune_core.runs.store import RUN_ID_RE, Run, RunError, get_run, list_runs, runs_root

from .context import AppContext
from .widgets import config_from_values, progress_html, run_name_md

# the settings the memory estimate reads: the note under the model picker follows them
ESTIMATE_FIELDS = ("model", "method", "lora_r", "lora_dropout", "use_dora", "target_modules", "batch_size",
                   "grad_accum", "max_length", "gradient_checkpointing", "device", "precision")
RUN_COLUMNS = ["name", "state", "steps", "model", "method", "data", "reason"]
# shares of the table's width: every header fits on one line at 1366 px; long cells wrap
COLUMN_WIDTHS = ["20%", "16%", "9%", "14%", "10%", "13%", "18%"]
UPLOAD_NAME_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{12}\.[a-z]+$")  # save_upload's copies
SERIES = ("train", "held-out")  # the loss plot's series, in legend order
NO_RUN = "No run yet. Pick a dataset in the Data tab, choose a preset and press **Train**."
# Gradio 6.31's Textbox `autoscroll` scrolls only once (its effect does not follow the value), so
# the log's change event scrolls it to the newest line, unless a person scrolled up to read.
FOLLOW_LOG_JS = """() => {
  const attach = (tries) => {  // a tab's content is laid out a moment after the tab is selected
    const box = document.querySelector('#run-log textarea');
    if (!box) { if (tries > 0) setTimeout(() => attach(tries - 1), 200); return; }
    const atEnd = () => box.scrollTop + box.clientHeight >= box.scrollHeight - 24;
    const follow = () => { if (box.dataset.follow !== 'no') box.scrollTop = box.scrollHeight; };
    if (!box.dataset.follow) {
      box.dataset.follow = 'yes';
      for (const kind of ['wheel', 'touchend', 'keyup', 'mouseup'])
        box.addEventListener(kind, () => setTimeout(() => { box.dataset.follow = atEnd() ? 'yes' : 'no'; }, 60));
      new ResizeObserver(follow).observe(box);  // filled while its tab was hidden, then shown
    }
    for (const ms of [0, 100, 400, 1000]) setTimeout(follow, ms);  // after the new text is laid out
  };
  attach(10);
}"""


def loss_frame(metrics: list[dict]) -> pd.DataFrame:
    """The loss plot's data from a run's metrics: (step, loss, series) rows, series "train" or "held-out"."""
    rows = [{"step": m["step"], "loss": m["loss"], "series": "train"} for m in metrics if m.get("loss") is not None]
    rows += [{"step": m["step"], "loss": m["eval_loss"], "series": "held-out"} for m in metrics if m.get("eval_loss") is not None]
    frame = pd.DataFrame(rows or [], columns=["step", "loss", "series"])
    # explicit dtypes: an object column would make the plot treat loss values as categories
    return frame.astype({"step": "int64", "loss": "float64", "series": "str"})


def loss_series(frame: pd.DataFrame) -> list[str]:
    """The series present in a loss frame, in legend order (SERIES)."""
    present = set(frame["series"])
    return [s for s in SERIES if s in present]


def short_model(model: str | None) -> str:
    """A model as the runs table shows it: the bundled one by name, a Hub id or folder by its last part.

    >>> short_model("HuggingFaceTB/SmolLM2-360M-Instruct"), short_model("bundled")
    ('SmolLM2-360M-Instruct', 'SmolLM2-135M (bundled)')
    """
    if not model:
        return "?"
    return "SmolLM2-135M (bundled)" if model == BUNDLED else Path(model.rstrip("/")).name or model


def data_label(run: Run, data_file: str) -> str:
    """The dataset as the runs table shows it: the file's name, or for an upload (kept under a
    server-made name, see ui/data_uploads.py) the name it was uploaded with, as the run's id keeps it.

    >>> data_label(Run(Path("20260101-101010-colours-abc123")), "20260101-101009-0123456789ab.jsonl")
    'colours'
    """
    if not UPLOAD_NAME_RE.match(data_file or ""):
        return data_file
    return "-".join(run.id.split("-")[2:-1]) or data_file


def runs_table(who: Visitor | None = None, nobody: bool = False) -> pd.DataFrame:
    """The runs table: one row (RUN_COLUMNS) per run this visitor may see, newest first
    (`nobody`: the table with no rows, as a page starts before it knows its visitor)."""
    rows = []
    for run in [] if nobody else visible_runs(who or Visitor()):
        s = run.summary()
        rows.append({"name": s["name"], "state": s["state"], "steps": f"{s['step'] or 0}/{s['total_steps'] or '?'}",
                     "model": short_model(s["model"]), "method": s["method"] or "?",
                     "data": data_label(run, s["data"]), "reason": s["reason"]})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_picks(who: Visitor | None = None) -> list[tuple[str, str]]:
    """The "Open run" choices: (the run's name and time, its id) for each run this visitor may see, newest first."""
    return [(run.label(), run.id) for run in visible_runs(who or Visitor())]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


RUN_FILES = ("run.yaml", "status.json", "metrics.jsonl", "log.txt", "name.json")


def run_stamp(run_id: str | None) -> tuple:
    """Changes whenever run_view(run_id) could: the run's status, metrics, log or name changed."""
    if not run_id or not RUN_ID_RE.match(run_id):
        return (run_id,)
    folder = runs_root() / run_id
    return (run_id, *(_stamp(folder / name) for name in RUN_FILES))


def runs_stamp() -> tuple:
    """Changes whenever runs_table() could: a run appeared, went, or changed its status or name."""
    root = runs_root()
    if not root.is_dir():
        return ()
    return tuple(sorted((p.name, *(_stamp(p / f) for f in ("run.yaml", "status.json", "name.json")))
                        for p in root.iterdir()))


def plot_stamp(run_id: str | None) -> tuple:
    """Changes whenever the loss frame of run_view(run_id) could: another run, or its metrics changed."""
    if not run_id or not RUN_ID_RE.match(run_id):
        return (run_id,)
    return (run_id, _stamp(runs_root() / run_id / "metrics.jsonl"))


def tick(run_id: str | None, seen: dict | None, who: Visitor | None = None
         ) -> tuple[tuple | None, pd.DataFrame | None, dict]:
    """(run view or None, runs table or None, stamps): None where nothing changed since `seen`; in
    the view (title, bar, plot, log) a part that did not change is gr.skip().

    The plot's chart is rebuilt, with `colors_in_legend`, when the page holds series its legend does
    not list yet; that update carries no value, and the value waits for the next tick. Sent together,
    the page built the chart from its previous data: a new series got no colour and was never drawn."""
    seen = seen or {}
    now = {"run": run_stamp(run_id), "runs": runs_stamp(), **{k: seen.get(k) for k in ("plot", "data", "legend")}}
    table = runs_table(who) if now["runs"] != seen.get("runs") else None
    new_view, new_plot = now["run"] != seen.get("run"), plot_stamp(run_id) != seen.get("plot")
    rebuild = now["data"] != now["legend"]  # the series of the data the page holds, and of its legend
    if not (new_view or new_plot or rebuild):
        return None, table, now
    title, bar, frame, log = run_view(run_id, who) if new_view or new_plot else (None,) * 4
    plot = gr.skip()
    if rebuild:
        plot, now["legend"] = gr.update(colors_in_legend=now["data"]), now["data"]
    elif new_plot:
        plot, now["plot"], now["data"] = gr.update(value=frame), plot_stamp(run_id), loss_series(frame)
    if not new_view:
        return (gr.skip(), gr.skip(), plot, gr.skip()), table, now
    return (title, bar, plot, log), table, now


def _visible(run_id: str | None, who: Visitor) -> bool:
    try:
        return isinstance(run_id, str) and can_view(get_run(run_id).path, who)
    except RunError:
        return False


def watched_run_id(ctx: AppContext, selected: str | None, who: Visitor | None = None,
                   session: str | None = None) -> str | None:
    """The run the Train tab shows: the running job when this visitor may see it, else the run
    they picked, else the session's run (`session`: set by Train or the guided demo), else the
    latest run they may see; None when they may see none."""
    who = who or Visitor()
    job = ctx.slot.active()
    if job is not None and can_view(job.run.path, who):
        return job.run.id
    if isinstance(selected, str) and selected:
        return selected  # run_view says "gone" for a run that is missing or not theirs
    if _visible(session, who):
        return session
    # newest first, stopping at the first this visitor may see (owner files are read only as needed)
    return next((run.id for run in list_runs() if can_view(run.path, who)), None)


def run_title(run: Run, st: dict, last: dict) -> str:
    """The title above the curve: the run's name, where it stands ("stopped at step 3 of 60"),
    why it ended (unless that says the same) and the last speed."""
    state, step, total = st.get("state") or "?", int(st.get("step") or 0), st.get("total_steps") or "?"
    where = {"queued": "queued, starting", "running": f"running, step {step} of {total}",
             "completed": f"completed ({step} of {total} steps)"}.get(state, f"{state} at step {step} of {total}")
    if state in ("failed", "interrupted") and not step:
        where = f"{state} before its first step"
    facts = [f"**{run_name_md(run.name)}** — {where}"]
    reason = st.get("reason") or ""
    if reason and not reason.startswith(("stopped at step", "completed")):
        facts.append(run_name_md(reason))
    if last.get("tokens_per_s"):
        facts.append(f"{last['tokens_per_s']:.0f} tokens/s")
    return " · ".join(facts)


def run_view(run_id: str | None, who: Visitor | None = None) -> tuple[str, str, pd.DataFrame, str]:
    """(title markdown, progress html, loss frame, log tail) of a run."""
    if not run_id:
        return NO_RUN, progress_html(0, 0, "idle", None), loss_frame([]), ""
    try:
        run = get_run(run_id)
        if not can_view(run.path, who or Visitor()):
            raise RunError("hidden")
    except RunError:  # missing or someone else's: the same words, so ids are not confirmed
        return "That run is gone.", progress_html(0, 0, "missing", None), loss_frame([]), ""
    st = run.status()
    metrics = run.metrics()
    last = next((m for m in reversed(metrics) if "loss" in m), {})
    bar = progress_html(int(st.get("step") or 0), int(st.get("total_steps") or 0), st.get("state", "?"), st.get("eta_s"))
    return run_title(run, st, last), bar, loss_frame(metrics), run.log_tail(30)


def device_note(policy) -> str:
    """Where and in which number precision training runs here, in plain words (the tab's first line)."""
    if policy.device == "cuda":
        where = "on this machine's GPU"
    elif policy.device == "mps":
        where = "on this Mac's GPU"
    else:
        where = "on this machine's CPU"
    if policy.dtype == "float32":
        how = "in full precision (float32)"
        why = (": this CPU has no fast half-precision maths, so full precision is the quicker choice"
               if policy.device == "cpu" else "")
    elif policy.device == "cpu":
        how = "with the model's fixed weights in half precision (bfloat16)"
        why = (": this CPU does half-precision maths quickly, and the small part being trained "
               "stays in full precision (float32)")
    else:
        how = f"in half precision ({policy.dtype})"
        why = ": faster and lighter on memory; the Precision setting can switch to full precision (float32)"
    return f"Training runs {where} {how}{why}."


def model_choices() -> list[tuple[str, str]]:
    """(label, value) of the picker: the bundled model, then the catalogue models this
    deployment allows (its allow-list and parameter ceiling)."""
    bundled = next(e for e in ENTRIES if e.hub_id == BUNDLED_HUB_ID)
    choices = [(bundled.label.replace(bundled.name, BUNDLED_LABEL) + " · offline", BUNDLED)]
    allow, ceiling = allowed_hub_ids(), max_params_b()
    choices += [(e.label, e.hub_id) for e in ENTRIES
                if (allow is None or e.hub_id in allow) and (ceiling is None or e.params_b <= ceiling)]
    return choices


def model_facts_line(facts: memory.ModelFacts) -> str:
    """The note's first line: the catalogue's label of the model, or its size, context and architecture."""
    if facts.entry is not None:
        name = BUNDLED_LABEL if facts.source == BUNDLED else facts.entry.hub_id
        line = facts.entry.label.replace(facts.entry.name, f"**{name}**", 1)
        return line + (" (accept its licence on the Hub first)" if facts.entry.gated else "")
    context = f" · {facts.context // 1024}k context" if facts.context >= 1024 else ""
    return (f"**{facts.source}** · {facts.params_b:.2f}B params{context} · {facts.architecture or '?'} "
            f"(from its {facts.origin})")


def memory_markdown(values: dict[str, Any]) -> str:
    """The note beside the picker: the model's facts, the estimate and, unless it fits,
    settings that would (re-estimated). Problems are shown, never raised: it follows every edit."""
    try:
        cfg = config_from_values({k: v for k, v in values.items() if k in ESTIMATE_FIELDS})
        a = memory.assess(cfg)
    except (gr.Error, StudioError) as exc:  # a bug is not a note: it reaches the page as an internal error
        return f"⚠ {getattr(exc, 'message', None) or exc}"
    e = a.estimate
    lines = [model_facts_line(a.facts), f"Estimated peak {e.memory_kind} {e.total / memory.GB:.1f} GB of "
             f"{a.available / memory.GB:.1f} GB available: **{a.verdict}** ({a.breakdown()})."]
    if a.facts.problem:
        lines.append(f"⚠ {a.facts.problem}")
    if a.suggestions:
        lines.append("Settings that would fit:\n" + "\n".join(f"- {t.text}: {t.total / memory.GB:.1f} GB"
                                                             for t in a.suggestions))
    return "\n\n".join(lines)
