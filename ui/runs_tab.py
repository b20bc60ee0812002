"""Runs tab: the run queue, sweeps, and several runs compared side by side.

* **Queue**: the run training now and the runs waiting, in order (another
  visitor's run shows as such, without its name, where the visitor may not see
  it), refreshed by a gr.Timer; "Cancel selected" takes one of the visitor's
  waiting runs off the queue (finetune_core/training/queue.py, `RunQueue.cancel`).
* **Sweep**: up to three rows of (field, values) over the Train tab's current
  settings and the Data tab's data; grid (every combination) or list (values
  zipped); the metric that ranks the runs; evaluate each run after training.
  "Queue sweep" puts its runs on the queue (finetune_core/training/sweep.py) and
  says their positions. A sweep picker shows the ranked table, the best row
  highlighted; it follows the runs as they finish.
* **Compare runs**: 2 to 8 of the visitor's runs: their training and held-out
  losses overlaid, the metrics table (the best of each row named) and the
  settings that differ (evaluation/run_compare.py).

The handlers below are plain functions (tests call them); `build` lays out the
widgets and wires them. The queue is the app's (`ctx.queue`); per page, the
sweep on screen (its id, metric and run ids) and the queue table last sent.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from evaluation.run_compare import MAX_RUNS as MAX_COMPARED
from evaluation.run_compare import check_runs, config_diff, loss_curves, metrics_table
from finetune_core.config import RunConfig
from finetune_core.errors import StudioError
from finetune_core.runs.ownership import AccessError, Visitor, can_change, can_view, is_owner, read_owner, visible_runs
from finetune_core.runs.store import Run, RunError, get_run
from finetune_core.training.sweep import (BEST, MAX_FIELDS, METRICS, MODES, SWEEPABLE, expand, list_sweeps,
                                      queue_sweep, sweep_runs, sweep_table, sweep_tag)
from finetune_core.training.preference import check_objective

from .access import require_user, visitor
from .context import AppContext, RunsParts, Shared, TrainParts
from .errors import shows_errors
from .train_checks import check_memory, check_model, check_preference
from .train_tab import build_config
from .widgets import label_for, named_values, open_run

POLL_S = 2.0  # how often a page refreshes the queue and the sweep on screen
QUEUE_COLUMNS = ["position", "name", "owner", "sweep", "state"]
HIDDEN_RUN = "(another visitor's run)"
NO_FIELD = "—"
BEST_STYLE = "background-color: #dcfce7; font-weight: 600"


def run_queue(ctx: AppContext):
    """The app's run queue; a gr.Error when this app has none."""
    queue = getattr(ctx, "queue", None)
    if queue is None:
        raise gr.Error("This app has no run queue.")
    return queue


# -- queue ------------------------------------------------------------------------------------------
def _queue_row(run: Run, position: str, who: Visitor) -> dict:
    if not can_view(run.path, who):
        return {"position": position, "name": HIDDEN_RUN, "owner": "", "sweep": "", "state": ""}
    tag = sweep_tag(run) or {}
    mine = is_owner(read_owner(run.path), who)
    return {"position": position, "name": run.name, "owner": "you" if mine else "", "sweep": str(tag.get("name") or ""),
            "state": str(run.status().get("state", "?"))}


def queue_frame(queue, who: Visitor | None = None) -> pd.DataFrame:
    """The queue as the visitor may see it: the running run ("now"), then the waiting runs by position."""
    who = who or Visitor()
    rows = []
    running = queue.running()
    if running is not None:
        rows.append(_queue_row(running, "now", who))
    for item in queue.items():
        try:
            rows.append(_queue_row(get_run(str(item.get("run"))), str(item.get("position", "?")), who))
        except RunError:
            continue  # deleted while waiting: the queue drops it at dispatch
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def cancel_choices(queue, who: Visitor | None = None) -> list[tuple[str, str]]:
    """(position and name, run id) of each waiting run this visitor may cancel (their own; admins all)."""
    who = who or Visitor()
    choices = []
    for item in queue.items():
        try:
            run = get_run(str(item.get("run")))
        except RunError:
            continue
        if can_change(run.path, who):
            choices.append((f"{item.get('position', '?')}. {run.name}", run.id))
    return choices


def cancel_queued(queue, run_id: str | None, who: Visitor | None = None) -> str:
    """Take a waiting run off the queue (its owner or an admin); returns what the page says."""
    run = open_run(run_id, "Pick a waiting run to cancel.", visitor=who, change="cancel")
    try:
        queue.cancel(run.id, who or Visitor())
    except (StudioError, AccessError) as exc:
        raise gr.Error(str(exc)) from None
    return f'Cancelled "{run.name}": it left the queue.'


# -- sweep ------------------------------------------------------------------------------------------
def field_choices() -> list[tuple[str, str]]:
    """The sweep's field pickers: no field, then each sweepable field by its widget label."""
    return [(NO_FIELD, "")] + [(f"{label_for(name)} ({name})", name) for name in SWEEPABLE]


def metric_choices() -> list[tuple[str, str]]:
    """The metric picker: each metric with what it is."""
    return [(f"{name}: {about}", name) for name, about in METRICS.items()]


def axes_from_rows(rows: list[tuple[Any, Any]]) -> dict[str, str]:
    """The sweep rows (field, values text) as axes; rows without a field are skipped. gr.Error for values
    typed without a field, or a field picked twice."""
    axes: dict[str, str] = {}
    for i, (field, text) in enumerate(rows, 1):
        field = field if isinstance(field, str) else ""
        text = text if isinstance(text, str) else ""
        if not field:
            if text.strip():
                raise gr.Error(f"Sweep row {i}: pick the field these values are for.")
            continue
        if field in axes:
            raise gr.Error(f"Sweep row {i}: {field} is already swept in another row; put all its values in one.")
        axes[field] = text
    if not axes:
        raise gr.Error("Pick a field to sweep and type its values (e.g. learning rate: 1e-4, 2e-4).")
    return axes


def start_sweep(queue, base: RunConfig, rows: list[tuple[Any, Any]], mode: str = "grid", metric: str = "eval_loss",
                evaluate: bool = False, name: str = "", who: Visitor | None = None,
                force: bool = False, label: str = "") -> tuple[list[Run], str]:
    """Queue a sweep over `base` (the Train tab's settings and the Data tab's data); returns its runs and
    what the page says ("Queued 4 runs of sweep "lr": positions 2 to 5."). The model, the data and each
    run's memory estimate are checked first (as Train does); a bad field or value is a gr.Error naming it."""
    who = who or Visitor()
    axes = axes_from_rows(rows)
    base = base.with_overrides({"evaluate_after": bool(evaluate)})
    check_model(base.model)
    check_preference(base, who)
    try:
        for cfg, _values in expand(base, axes, mode):
            check_objective(cfg)
            check_memory(cfg, force)
        runs = queue_sweep(queue, base, axes, mode, metric, owner=who.owner_record(), name=name, who=who,
                           label=label)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    positions = {str(item.get("run")): item.get("position") for item in queue.items()}
    where = [positions[r.id] for r in runs if r.id in positions]
    said = f"positions {where[0]} to {where[-1]}" if len(where) == len(runs) and where else "on the queue"
    tag = sweep_tag(runs[0]) or {}
    return runs, f'Queued {len(runs)} runs of sweep "{tag.get("name", "")}": {said}.'


def sweep_choices(who: Visitor | None = None) -> list[tuple[str, str]]:
    """(name · runs · metric, sweep id) of each sweep with a run this visitor may see, newest first."""
    return [(f"{e['name']} · {len(e['runs'])} runs · by {e['metric']}", e["id"]) for e in list_sweeps(who)]


def styled(table: pd.DataFrame):
    """The sweep table with its best row highlighted (a pandas Styler: Gradio's Dataframe shows its styles)."""
    def mark(row: pd.Series) -> list[str]:
        return [BEST_STYLE if row.get("best") == BEST else "" for _ in row]

    numbers = [c for c in table.columns if pd.api.types.is_float_dtype(table[c])]
    return table.style.apply(mark, axis=1).format(precision=4, subset=numbers, na_rep="—").hide(axis="index")


def sweep_view(sweep_id: str | None, who: Visitor | None = None, picked: dict | None = None):
    """(the styled ranked table, what the page keeps about the sweep on screen: id, metric, run ids).
    `picked` (kept from before) skips looking the sweep up again; (None, None) when none is picked."""
    if not sweep_id:
        return None, None
    if not picked or picked.get("id") != sweep_id:
        try:
            entry, runs = sweep_runs(sweep_id, who)
        except RunError as exc:
            raise gr.Error(str(exc)) from None
        picked = {"id": sweep_id, "metric": entry["metric"], "runs": [r.id for r in runs]}
    runs = []
    for run_id in picked["runs"]:
        try:
            runs.append(get_run(run_id))
        except RunError:
            continue  # deleted since: the table goes on without it
    return styled(sweep_table(sweep_id, picked["metric"], who, runs=runs)), picked


# -- compare ---------------------------------------------------------------------------------------
def styled_metrics(table: pd.DataFrame):
    """The metrics table for the page: numbers to 4 significant digits, the best run's cell of each row
    highlighted."""
    def mark(row: pd.Series) -> list[str]:
        return [BEST_STYLE if row.get("best") and column == row["best"] else "" for column in row.index]

    def number(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "—"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return table.style.apply(mark, axis=1).format(number).hide(axis="index")


def compare_choices(who: Visitor | None = None) -> list[tuple[str, str]]:
    """(the run's name and time · state, run id) of each run this visitor may see, newest first."""
    return [(f"{run.label()} · {run.status().get('state', '?')}", run.id) for run in visible_runs(who or Visitor())]


def compare_view(run_ids: list[str] | None, who: Visitor | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(the loss curves, the metrics table, the settings that differ, the plot's series) of the picked runs."""
    ids = [i for i in (run_ids or []) if i]
    runs = [open_run(i, visitor=who) for i in ids]
    try:
        runs = check_runs(runs)
    except StudioError as exc:  # "Compare 2 to 8 runs; got 1."
        raise gr.Error(str(exc)) from None
    curves = loss_curves(runs)
    return curves, metrics_table(runs), config_diff(runs), list(dict.fromkeys(curves["series"]))


# -- layout and wiring --------------------------------------------------------------------------------
def build(ctx: AppContext, shared: Shared, train: TrainParts) -> RunsParts:
    """Build the Runs tab inside the caller's `gr.Tab`: the sweep starts from `train.widgets` and
    shared.data_state."""
    gr.Markdown("### Queue\nRuns wait here while another trains; they start in order, one at a time.")
    queue_table = gr.Dataframe(pd.DataFrame(columns=QUEUE_COLUMNS), interactive=False, wrap=True,
                               elem_id="runs-queue")
    with gr.Row():
        cancel_pick = gr.Dropdown(label="Waiting run", choices=[], scale=3, allow_custom_value=True,
                                  elem_id="queue-pick")
        cancel_btn = gr.Button("Cancel selected", variant="stop", scale=1, elem_id="queue-cancel")

    gr.Markdown(f"### Sweep\nVary up to {MAX_FIELDS} settings over the Train tab's current settings and the Data "
                "tab's data; each combination becomes a queued run.")
    fields, values = [], []
    for i in range(1, MAX_FIELDS + 1):
        with gr.Row():
            fields.append(gr.Dropdown(field_choices(), value="", label=f"Field {i}", scale=2,
                                      elem_id=f"sweep-field-{i}"))
            values.append(gr.Textbox(label="Values (comma separated)", scale=3,
                                     placeholder="e.g. 1e-4, 2e-4 (target_modules: split by ;)",
                                     max_lines=1, elem_id=f"sweep-values-{i}"))
    with gr.Row():
        mode = gr.Radio(list(MODES), value="grid", label="Runs", elem_id="sweep-mode",
                        info="grid: every combination; list: the values paired in order")
        metric = gr.Dropdown(metric_choices(), value="eval_loss", label="Rank by", allow_custom_value=True,
                             elem_id="sweep-metric")
    with gr.Row():
        evaluate = gr.Checkbox(False, label="Evaluate each run after training (needed to rank by an evaluation "
                               "metric)", elem_id="sweep-evaluate")
        name = gr.Textbox(label="Sweep name", placeholder="sweep learning_rate × lora_r", max_length=60,
                          max_lines=1, elem_id="sweep-name")
    queue_btn = gr.Button("Queue sweep", variant="primary", elem_id="sweep-queue")
    with gr.Row():
        sweep_pick = gr.Dropdown(label="Sweep", choices=[], scale=4, elem_id="sweep-pick")
        sweep_refresh = gr.Button("↻ Refresh", scale=1, elem_id="sweep-refresh")
    sweep_frame = gr.Dataframe(pd.DataFrame(columns=["rank", "best", "name", "metric", "state", "run"]),
                               interactive=False, wrap=True, label="Ranked runs (best highlighted)",
                               elem_id="sweep-table")

    gr.Markdown("### Compare runs")
    with gr.Row():
        compare_pick = gr.Dropdown(label=f"Runs (2 to {MAX_COMPARED})", choices=[], multiselect=True,
                                   max_choices=MAX_COMPARED, scale=4, elem_id="compare-runs")
        compare_btn = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-button")
    compare_plot = gr.LinePlot(None, x="step", y="loss", color="series", title="Loss (train and held-out)",
                               x_title="step", height=300, elem_id="compare-plot")
    # empty tables say what they will hold (not Gradio's placeholder columns 1, 2, 3)
    compare_metrics = gr.Dataframe(pd.DataFrame(columns=["metric", "better", "best"]), interactive=False, wrap=True,
                                   label="Metrics", elem_id="compare-metrics")
    compare_diff = gr.Dataframe(pd.DataFrame(columns=["field"]), interactive=False, wrap=True,
                                label="Settings that differ", elem_id="compare-config")

    timer = gr.Timer(POLL_S)
    last_queue = gr.State(None)  # per page: the queue table last sent (as JSON)
    picked = gr.State(None)  # per page: the sweep on screen {"id", "metric", "runs"}
    series = gr.State([])  # per page: the compare plot's series, for its legend
    sweep_inputs = set(train.widgets.values()) | {shared.data_state, mode, metric, evaluate, name, *fields, *values}

    @shows_errors
    def on_tick(last, on_screen, request: gr.Request):
        # only what changed since this page's last tick is sent: a table re-sent redraws (and loses the scroll)
        who = visitor(request)
        last = last if isinstance(last, dict) and last.get("who") == who.key else {"who": who.key}
        queue = getattr(ctx, "queue", None)
        frame = queue_frame(queue, who) if queue is not None else pd.DataFrame(columns=QUEUE_COLUMNS)
        table = sweep_view(on_screen["id"], who, on_screen)[0] if on_screen else None
        now = {"who": who.key, "queue": frame.to_json(), "sweep": None if table is None else table.data.to_json()}
        queue_parts = (gr.skip(), gr.skip(), gr.skip())
        if now["queue"] != last.get("queue"):  # a run started or ended: the compare list's states follow
            queue_parts = (frame, gr.update(choices=cancel_choices(queue, who) if queue is not None else []),
                           gr.update(choices=compare_choices(who)))
        sweep_part = table if table is not None and now["sweep"] != last.get("sweep") else gr.skip()
        return (*queue_parts, sweep_part, now)

    @shows_errors
    def on_cancel(run_id, request: gr.Request):
        require_user(request)
        gr.Info(cancel_queued(run_queue(ctx), run_id, visitor(request)))
        return gr.update(value=None)

    @shows_errors
    def on_queue_sweep(raw: dict, request: gr.Request):
        require_user(request)
        who = visitor(request)
        base = build_config(named_values(train.widgets, raw), raw[shared.data_state])
        rows = [(raw[f], raw[v]) for f, v in zip(fields, values)]
        runs, said = start_sweep(run_queue(ctx), base, rows, raw[mode], raw[metric], raw[evaluate], raw[name], who,
                                 label=(raw[shared.data_state] or {}).get("name", ""))
        gr.Info(said)
        sweep_id = (sweep_tag(runs[0]) or {}).get("id")
        table, on_screen = sweep_view(sweep_id, who)
        return gr.update(choices=sweep_choices(who), value=sweep_id), table, on_screen

    @shows_errors
    def on_sweep_pick(sweep_id, request: gr.Request):
        table, on_screen = sweep_view(sweep_id, visitor(request))
        return table, on_screen

    @shows_errors
    def on_lists(current_sweep, request: gr.Request):
        who = visitor(request)
        choices = sweep_choices(who)
        keep = current_sweep if current_sweep in [c[1] for c in choices] else None
        return gr.update(choices=choices, value=keep), gr.update(choices=compare_choices(who))

    @shows_errors
    def on_compare(run_ids, request: gr.Request):
        curves, metrics, diff, names = compare_view(run_ids, visitor(request))
        return gr.update(value=curves), styled_metrics(metrics), diff, names

    @shows_errors
    def on_legend(names):
        # after the data: Gradio 6 builds the chart's colour scale from the data it holds (ui/train_views.py)
        return gr.update(colors_in_legend=names or None)

    private = {"api_visibility": "private", "queue": False}
    timer.tick(on_tick, [last_queue, picked], [queue_table, cancel_pick, compare_pick, sweep_frame, last_queue],
               show_progress="hidden", **private)
    shared.blocks.load(on_tick, [last_queue, picked], [queue_table, cancel_pick, compare_pick, sweep_frame, last_queue],
                       show_progress="hidden", **private)
    shared.blocks.load(on_lists, [sweep_pick], [sweep_pick, compare_pick], **private)
    sweep_refresh.click(on_lists, [sweep_pick], [sweep_pick, compare_pick], **private)
    cancel_btn.click(on_cancel, [cancel_pick], [cancel_pick], api_name="queue_cancel")
    queue_btn.click(on_queue_sweep, sweep_inputs, [sweep_pick, sweep_frame, picked], api_name="sweep_queue")
    sweep_pick.input(on_sweep_pick, [sweep_pick], [sweep_frame, picked], api_name="sweep_table")
    compare_btn.click(on_compare, [compare_pick], [compare_plot, compare_metrics, compare_diff, series],
                      api_name="compare_runs").then(on_legend, [series], [compare_plot], **private)
    return RunsParts(queue=queue_table, cancel_pick=cancel_pick, sweep_pick=sweep_pick, sweep_table=sweep_frame,
                     compare_pick=compare_pick, compare_plot=compare_plot)


__all__ = ["build", "cancel_choices", "cancel_queued", "compare_choices", "compare_view", "field_choices",
           "metric_choices", "queue_frame", "start_sweep", "styled", "styled_metrics", "sweep_choices", "sweep_view"]
