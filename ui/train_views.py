"""What the Train tab shows: the run being watched (title, progress bar, loss curve,
log tail), the runs table and the "Open run" choices, each limited to what the visitor
may see (finetune_core/runs/ownership.py); the device line, the model picker's choices
and the memory note beside it. A person sees a run's human name
(`Run.name`); the id stays the picker's value.

The tab's timer calls `tick` every second. It compares the file stamps of the watched
run and of the runs folder with what the page last got, and rebuilds only the view
that changed: an idle page with many runs costs a few stat calls a second, and the
plot does not redraw.

A preference run (DPO, KTO, ORPO) also fills the rewards plot beside the loss: TRL's rewards of the
chosen and rejected answers, their margin and the reward accuracy (`reward_frame`); it is hidden for
SFT runs. The runs table shows each run's objective and the run it started from, and "Start from run"
lists the visitor's own completed runs with an adapter (`parent_choices`).

Each plot gets a new `colors_in_legend` whenever the series it holds change (`tick`):
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

from finetune_core.data.hub import describe
from finetune_core.errors import StudioError
from finetune_core.models import memory
from finetune_core.models.catalogue import BUNDLED_HUB_ID, ENTRIES
from finetune_core.models.sources import BUNDLED, BUNDLED_LABEL, allowed_hub_ids, max_params_b
from finetune_core.runs.ownership import Visitor, can_change, can_view, visible_runs
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
# the rewards plot's series (metrics.jsonl keys, as TRL logs them -> legend), in legend order
REWARD_SERIES = {"rewards/chosen": "chosen", "rewards/rejected": "rejected", "rewards/margins": "margin",
                 "rewards/accuracies": "reward accuracy"}
# per plot, the keys of the page's stamps: its metrics stamp, the series of the data it holds, its legend
PLOTS = (("plot", "data", "legend"), ("rplot", "rdata", "rlegend"))
NO_PARENT = "None: start from the model itself"
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


def reward_frame(metrics: list[dict]) -> pd.DataFrame:
    """The rewards plot's data from a run's metrics: (step, reward, series) rows for each REWARD_SERIES
    key a training step logged (none for an SFT run)."""
    rows = [{"step": m["step"], "reward": m[key], "series": label}
            for m in metrics if m.get("loss") is not None
            for key, label in REWARD_SERIES.items() if m.get(key) is not None]
    frame = pd.DataFrame(rows or [], columns=["step", "reward", "series"])
    return frame.astype({"step": "int64", "reward": "float64", "series": "str"})


def loss_series(frame: pd.DataFrame) -> list[str]:
    """The series present in a loss or rewards frame, in legend order (SERIES, then REWARD_SERIES)."""
    present = set(frame["series"])
    return [s for s in (*SERIES, *REWARD_SERIES.values()) if s in present]


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


def parent_label(parent_id: str) -> str:
    """How the runs table names the run a run started from: "from <its name>" ("" without one)."""
    if not parent_id:
        return ""
    try:
        return f"from {get_run(parent_id).name}"
    except RunError:
        return f"from run {parent_id} (deleted)"


def runs_table(who: Visitor | None = None, nobody: bool = False) -> pd.DataFrame:
    """The runs table: one row (RUN_COLUMNS) per run this visitor may see, newest first
    (`nobody`: the table with no rows, as a page starts before it knows its visitor). The method
    says the objective of a preference run ("dpo · lora"), the model the run it started from."""
    rows = []
    for run in [] if nobody else visible_runs(who or Visitor()):
        s = run.summary()
        method = s["method"] or "?"
        model = " · ".join(p for p in (short_model(s["model"]), parent_label(s["parent"])) if p)
        rows.append({"name": s["name"], "state": s["state"], "steps": f"{s['step'] or 0}/{s['total_steps'] or '?'}",
                     "model": model, "method": method if s["objective"] == "sft" else f"{s['objective']} · {method}",
                     "data": describe(s["hub_source"]) if s["hub_source"] else data_label(run, s["data"]),
                     "reason": s["reason"]})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def parent_choices(who: Visitor | None = None) -> list[tuple[str, str]]:
    """The "Start from run" choices: starting from the model itself (""), then each completed run with a
    saved adapter this visitor may change (their own; every run on a local app), newest first."""
    who = who or Visitor()
    choices = [(NO_PARENT, "")]
    for run in visible_runs(who):
        if run.status().get("state") == "completed" and run.has_adapter() and can_change(run.path, who):
            s = run.summary()
            choices.append((f"{run.label()} · {s['objective']} · {short_model(s['model'])}", run.id))
    return choices


def parent_model(run_id: str | None, who: Visitor | None = None) -> str | None:
    """The model a chosen "Start from run" run was trained on (the Model field follows it); None for
    no run, or one this visitor may not start from."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        return None
    try:
        run = get_run(run_id)
        return run.config().model if can_change(run.path, who or Visitor()) else None
    except (RunError, OSError, ValueError):
        return None


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


def _plot_update(frame: pd.DataFrame, now: dict, keys: tuple[str, str, str], stamp: tuple, hide_empty: bool):
    """One plot's part of a tick (see `tick`): a chart rebuild for the series it holds, else its new
    data, else gr.skip(). `now` (the page's stamps) is updated; `hide_empty`: shown only with data."""
    stamp_key, data_key, legend_key = keys
    if now[data_key] != now[legend_key]:
        now[legend_key] = now[data_key]
        return gr.update(colors_in_legend=now[data_key])
    if now[stamp_key] != stamp:
        now[stamp_key], now[data_key] = stamp, loss_series(frame)
        return gr.update(value=frame, visible=not frame.empty) if hide_empty else gr.update(value=frame)
    return gr.skip()


def tick(run_id: str | None, seen: dict | None, who: Visitor | None = None
         ) -> tuple[tuple | None, pd.DataFrame | None, dict]:
    """(run view or None, runs table or None, stamps): None where nothing changed since `seen`; in
    the view (title, bar, loss plot, log, rewards plot) a part that did not change is gr.skip().

    A plot's chart is rebuilt, with `colors_in_legend`, when the page holds series its legend does
    not list yet; that update carries no value, and the value waits for the next tick. Sent together,
    the page built the chart from its previous data: a new series got no colour and was never drawn."""
    seen = seen or {}
    now = {"run": run_stamp(run_id), "runs": runs_stamp(), **{k: seen.get(k) for keys in PLOTS for k in keys}}
    table = runs_table(who) if now["runs"] != seen.get("runs") else None
    stamp = plot_stamp(run_id)
    new_view, new_plot = now["run"] != seen.get("run"), any(now[keys[0]] != stamp for keys in PLOTS)
    if not (new_view or new_plot or any(now[data] != now[legend] for _, data, legend in PLOTS)):
        return None, table, now
    title, bar, metrics, log = run_parts(run_id, who) if new_view or new_plot else (None, None, [], None)
    plot = _plot_update(loss_frame(metrics), now, PLOTS[0], stamp, hide_empty=False)
    rewards = _plot_update(reward_frame(metrics), now, PLOTS[1], stamp, hide_empty=True)
    if not new_view:
        return (gr.skip(), gr.skip(), plot, gr.skip(), rewards), table, now
    return (title, bar, plot, log, rewards), table, now


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
    running = ctx.queue.running()
    if running is not None and can_view(running.path, who):
        return running.id
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
             "waiting": "waiting in the queue", "cancelled": "cancelled before it started",
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


def run_parts(run_id: str | None, who: Visitor | None = None) -> tuple[str, str, list[dict], str]:
    """(title markdown, progress html, metrics events, log tail) of a run."""
    if not run_id:
        return NO_RUN, progress_html(0, 0, "idle", None), [], ""
    try:
        run = get_run(run_id)
        if not can_view(run.path, who or Visitor()):
            raise RunError("hidden")
    except RunError:  # missing or someone else's: the same words, so ids are not confirmed
        return "That run is gone.", progress_html(0, 0, "missing", None), [], ""
    st = run.status()
    metrics = run.metrics()
    last = next((m for m in reversed(metrics) if "loss" in m), {})
    bar = progress_html(int(st.get("step") or 0), int(st.get("total_steps") or 0), st.get("state", "?"), st.get("eta_s"))
    return run_title(run, st, last), bar, metrics, run.log_tail(30)


def run_view(run_id: str | None, who: Visitor | None = None) -> tuple[str, str, pd.DataFrame, str]:
    """(title markdown, progress html, loss frame, log tail) of a run."""
    title, bar, metrics, log = run_parts(run_id, who)
    return title, bar, loss_frame(metrics), log


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
