"""Evaluate tab: base vs tuned on a run's held-out rows, as numbers and examples.

Pick a trained run (the tab follows the run chosen in the Train tab), press
Evaluate, and `evaluation.run_eval.evaluate_run` generates for every held-out
prompt with the adapter off (base) and on (tuned), using the model the app
already holds for that run (`ctx.models`, shared with the Chat tab). The tab
then shows the summary (metric, base, tuned, delta), win/tie/loss counts, a
chart of the deltas, the confusion matrices for classification and the
per-example table, and offers results.json + examples.csv for download. A run
evaluated before (here or with `python -m evaluation`) shows its saved
results at once, read from runs/<id>/eval/.

The handlers below are plain functions (tests call them directly); `build`
lays out the widgets and wires them. Per-browser state is one gr.State
holding the cancel Event of the current evaluation.
"""
from __future__ import annotations

import secrets
import shutil
import threading
from typing import Callable, NamedTuple

import gradio as gr
import pandas as pd

from evaluation.compare import RESULTS_FILE, SCORE_COLUMNS, TEXT_COLUMNS, Comparison, copy_results, verdict
from evaluation.plots import confusion_heatmap, delta_chart
from evaluation.run_eval import evaluate_run, load_meta
from finetune_core.data.dataset import is_text_rows, read_jsonl
from finetune_core.limits import limits
from finetune_core.runs.ownership import Visitor
from finetune_core.runs.store import Run

from .access import require_user, visitor
from .context import GPU_QUEUE, AppContext, EvalParts, Shared
from .errors import page_error, shows_errors
from .widgets import open_run, pick_run
from .widgets import run_choices as adapter_runs


ORDERS = ("Biggest wins first", "Biggest losses first", "Original order")
SUMMARY_HEADERS = ["metric", "base", "tuned", "delta", "better when", "tuned vs base"]
EXAMPLE_HEADERS = ["row", "input", "reference", "base output", "tuned output", "base score", "tuned score",
                   "delta"]
# Inputs and model outputs go in "str" columns, which the browser shows as plain
# text: never "markdown" or "html", which would render what a model wrote.
EXAMPLE_TYPES = ["number", "str", "str", "str", "str", "number", "number", "number"]
NO_RUNS = "No trained run yet. **Train a run first** (Train tab); when it has finished, it appears here."
PICK_RUN = "**Pick a run** above to see its evaluation, or to evaluate it."
CANCELLED = "*Evaluation cancelled: nothing was saved.*"

Progress = Callable[[str, float], None]


class View(NamedTuple):
    """What the tab shows, in the order of the outputs wired in `build`."""

    status: str  # markdown: which run, when and how it was evaluated (server-made text only)
    summary: pd.DataFrame
    counts: str  # markdown: wins / ties / losses
    delta_plot: dict  # gr.update for the delta chart
    confusion: dict  # gr.update for the confusion heatmap (hidden unless classification)
    examples: pd.DataFrame
    downloads: dict  # gr.update clearing the files of a previous run


# -- runs ---------------------------------------------------------------------------
def run_choices(who: Visitor | None = None) -> list[tuple[str, str]]:
    """(label, run id) for the runs with a saved adapter that `who` may see, newest first,
    each saying whether it has been evaluated."""
    return adapter_runs(who, lambda run, _summary: "evaluated" if (run.eval_dir / RESULTS_FILE).is_file()
                        else "not evaluated yet")


def heldout_rows(run: Run) -> list[dict]:
    """The run's held-out rows (data/heldout.jsonl), or [] when it has none."""
    path = run.data_dir / "heldout.jsonl"
    return read_jsonl(path) if path.is_file() else []


def gpu_busy(ctx: AppContext) -> str:
    """Why evaluation cannot run now ("" when it can): a training job holds the GPU."""
    run = ctx.slot.gpu_run()
    if run is None:
        return ""
    return f"Training run {run.id} is using the GPU. Evaluate when it finishes or is stopped (Train tab)."


# -- tables and text --------------------------------------------------------------------
def _number(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def summary_frame(summary: list[dict] | None) -> pd.DataFrame:
    """The summary as text cells; lower-is-better metrics (loss, perplexity) are marked,
    and the last column says whether tuned improved whichever way the metric points."""
    rows = []
    for entry in summary or []:
        rows.append([entry["metric"], _number(entry.get("base")), _number(entry.get("tuned")),
                     _number(entry.get("delta"), signed=True),
                     "higher ↑" if entry.get("higher_is_better", True) else "lower ↓ (lower is better)",
                     verdict(entry)])
    return pd.DataFrame(rows, columns=SUMMARY_HEADERS)


def examples_frame(examples: pd.DataFrame | None, order: str = ORDERS[0]) -> pd.DataFrame:
    """The per-example table in the chosen order, with the held-out row number as a column."""
    if examples is None or examples.empty:
        return pd.DataFrame(columns=EXAMPLE_HEADERS)
    if order == ORDERS[1]:
        table = examples.sort_values("delta", ascending=True, kind="stable")
    elif order == ORDERS[2]:
        table = examples.sort_index(kind="stable")
    else:
        table = examples.sort_values("delta", ascending=False, kind="stable")
    table = table.reset_index()[["row", *TEXT_COLUMNS, *SCORE_COLUMNS]]
    table.columns = EXAMPLE_HEADERS
    table[EXAMPLE_HEADERS[-3:]] = table[EXAMPLE_HEADERS[-3:]].round(4)
    return table


def counts_text(comparison: Comparison) -> str:
    """Markdown line of per-example wins, ties and losses, or a note that text rows are compared by loss only."""
    if comparison.examples.empty:
        return "These held-out rows are plain text: base and tuned are compared by held-out loss only."
    measure = "correct label" if comparison.task == "classification" else "ROUGE-L"
    return (f"**Per example, tuned vs base** ({comparison.rows} rows, scored by {measure}): "
            f"**{comparison.wins}** wins · **{comparison.ties}** ties · **{comparison.losses}** losses")


def status_text(run: Run, comparison: Comparison, meta: dict) -> str:
    """Markdown line describing the saved evaluation: run, task, rows and their source, settings, timings."""
    facts = [f"Results for run `{run.id}`", comparison.task.replace("_", " "), f"{comparison.rows} rows"]
    if meta.get("source") not in (None, "heldout"):
        facts[-1] += " from another data file"
    else:
        facts[-1] += " held out from training"
    if meta.get("max_new_tokens"):
        facts.append(f"max new tokens {meta['max_new_tokens']}")
    if meta.get("device"):
        facts.append(str(meta["device"]))
    seconds = meta.get("seconds") or {}
    if seconds:
        facts.append("took " + ", ".join(f"{side.replace('_', ' ')} {s:.1f}s" for side, s in seconds.items()))
    if meta.get("timestamp"):
        facts.append(f"evaluated {meta['timestamp']}")
    return " · ".join(facts)


def message_view(text: str) -> View:
    """An empty result area with one line saying what to do next."""
    return View(text, summary_frame(None), "", gr.update(value=None), gr.update(value=None, visible=False),
                examples_frame(None), gr.update(value=None))


def results_view(run: Run, comparison: Comparison, meta: dict, order: str, note: str = "") -> View:
    """The tab's View of a saved evaluation; `order` sorts the examples, `note` is appended to the status."""
    heatmap = confusion_heatmap(comparison)
    status = status_text(run, comparison, meta) + (f"\n\n{note}" if note else "")
    return View(status, summary_frame(comparison.summary), counts_text(comparison),
                gr.update(value=delta_chart(comparison)), gr.update(value=heatmap, visible=heatmap is not None),
                examples_frame(comparison.examples, order), gr.update(value=None))


def not_evaluated_text(run: Run) -> str:
    """What to do for a run not evaluated yet (or why it cannot be: no held-out rows), in Markdown."""
    rows = heldout_rows(run)
    if not rows:
        return (f"Run `{run.id}` has no held-out rows (it was trained with no held-out split), so there is "
                "nothing to evaluate it on. Train a run with a held-out fraction above 0.")
    loss_hint = " with **Also compute held-out loss** ticked (its rows are plain text)" if is_text_rows(rows) else ""
    return (f"Run `{run.id}` has not been evaluated yet. Press **Evaluate**{loss_hint} to score base and tuned "
            f"on its {len(rows)} held-out rows.")


# -- handlers -----------------------------------------------------------------------------
def show_run(run_id: str | None, order: str = ORDERS[0], who: Visitor | None = None) -> View:
    """The saved evaluation of a run (read from disk, nothing re-run), or what to do next."""
    if not run_id:
        return message_view(PICK_RUN if run_choices(who) else NO_RUNS)
    run = open_run(run_id, visitor=who)
    if not run.has_adapter():
        return message_view(f"Run `{run.id}` has no saved adapter yet: let it finish training (Train tab).")
    if not (run.eval_dir / RESULTS_FILE).is_file():
        return message_view(not_evaluated_text(run))
    try:
        comparison, meta = Comparison.load(run.eval_dir), load_meta(run)
    except (OSError, ValueError, KeyError):
        # Half-replaced by an evaluation finishing right now, or damaged: say so, don't crash.
        return message_view(f"The saved evaluation of run `{run.id}` could not be read. "
                            "Press **Evaluate** to run it again.")
    return results_view(run, comparison, meta, order)


def order_examples(run_id: str | None, order: str, who: Visitor | None = None) -> pd.DataFrame:
    """Re-sort the per-example table (read again from the run's eval folder)."""
    if not run_id:
        return examples_frame(None)
    run = open_run(run_id, visitor=who)
    try:
        return examples_frame(Comparison.load(run.eval_dir).examples, order)
    except (OSError, ValueError, KeyError):
        return examples_frame(None)


def runs_dropdown(first: str | None, second: str | None, who: Visitor | None = None) -> gr.Dropdown:
    """A fresh list of evaluable runs, selecting `first`, else `second`, else the newest."""
    choices = run_choices(who)
    return gr.Dropdown(choices=choices, value=pick_run(choices, first, second))


@shows_errors
def arm_cancel(_previous=None) -> tuple[threading.Event, dict]:
    """Click-time step of Evaluate: a fresh cancel Event for this evaluation (so
    Cancel works while it still waits in the queue) and the button disabled."""
    return threading.Event(), gr.update(interactive=False)


@shows_errors
def cancel_evaluation(cancel) -> None:
    """Cancel button (no concurrency limit): set this evaluation's cancel Event (from `arm_cancel`); the
    evaluation stops after its current batch."""
    if isinstance(cancel, threading.Event) and not cancel.is_set():
        cancel.set()
        gr.Info("Cancelling: the current batch finishes first.")


def _whole(value, name: str) -> int:
    """A number field's value as an int (the bounds are evaluate_run's to check)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"{name} must be a whole number.") from None


def evaluate(ctx: AppContext, run_id: str | None, limit=0, batch_size=64, max_new_tokens=0,
             with_loss: bool = False, cancel: threading.Event | None = None, order: str = ORDERS[0],
             request: gr.Request | None = None, progress: Progress | None = None) -> View:
    """Score base and tuned on the run's held-out rows, save to runs/<id>/eval/, show it.

    limit 0 = every held-out row; max_new_tokens 0 = sized from the references.
    A cancelled evaluation saves nothing and shows the previous results.
    """
    require_user(request)
    who = visitor(request)
    if not run_id:
        raise gr.Error("Pick a run first." if run_choices(who) else "Train a run first (Train tab).")
    run = open_run(run_id, visitor=who, change="evaluate")  # an evaluation replaces the saved one
    # 0 = every row / sized from the references; evaluate_run checks the settings and the
    # rows before it asks for the model
    limit, batch_size = _whole(limit, "Rows to evaluate"), _whole(batch_size, "Batch size")
    max_new_tokens = _whole(max_new_tokens, "Max new tokens")
    busy = gpu_busy(ctx)
    if busy:
        raise gr.Error(busy)
    cancel = cancel if isinstance(cancel, threading.Event) else threading.Event()
    say = progress or (lambda _text, _fraction: None)
    try:
        # The app's shared copy (also used by Chat): evaluation never loads a second one.
        comparison = evaluate_run(run, limit=limit or None, batch_size=batch_size,
                                  max_new_tokens=max_new_tokens or None, with_loss=bool(with_loss),
                                  progress=say, cancel=cancel,
                                  load_model=lambda: ctx.models.get(f"run:{run.id}",
                                                                    progress=lambda message: say(message, 0.0)))
    except InterruptedError:
        gr.Warning("Evaluation cancelled: nothing was saved.")
        view = show_run(run.id, order, who)
        return view._replace(status=f"{view.status}\n\n{CANCELLED}")
    except Exception as exc:  # noqa: BLE001 - a StudioError's words, or "Internal error" with the traceback logged
        raise page_error(exc, f"evaluation of run {run.id}") from None
    return results_view(run, comparison, load_meta(run), order)


def export_results(ctx: AppContext, run_id: str | None, request: gr.Request | None = None) -> list[str]:
    """Copy the run's results.json and examples.csv into a fresh, unguessable folder
    under the exports dir (the only folder the app serves files from) and return
    their paths. runs/ itself is never served."""
    require_user(request)
    if not run_id:
        raise gr.Error("Pick a run first.")
    run = open_run(run_id, visitor=visitor(request))
    if not (run.eval_dir / RESULTS_FILE).is_file():
        raise gr.Error("No results to download yet: press Evaluate first.")
    folder = ctx.settings.exports_dir / secrets.token_urlsafe(16)
    folder.mkdir(parents=True)
    try:  # run ids are server-made: safe as file names
        return [str(p) for p in copy_results(run.eval_dir, folder, run.id)]
    except FileNotFoundError:
        # An evaluation of this run was being saved at that moment (eval/ is swapped by rename).
        shutil.rmtree(folder, ignore_errors=True)
        raise gr.Error("The results changed while copying them: try again.") from None


# -- layout and wiring ------------------------------------------------------------------
def build(ctx: AppContext, shared: Shared) -> EvalParts:
    """Build the Evaluate tab inside the caller's `gr.Tab`; its picker follows and sets shared.run_state."""
    cancel_state = gr.State(None)  # threading.Event of this browser's evaluation (made per click)
    gr.Markdown("Score the base model (adapter off) and the tuned model (adapter on) on the run's held-out "
                "rows — rows it never trained on — and see where fine-tuning helped and where it hurt.")
    choices = run_choices()
    with gr.Row():
        # allow_custom_value: the server-side check of a pick is open_run(), and a run
        # trained after start-up must be usable by API clients that never loaded the page.
        run_dd = gr.Dropdown(choices=choices, value=pick_run(choices, shared.run_state.value),
                             label="Run to evaluate (runs with a trained adapter)", allow_custom_value=True,
                             scale=4, elem_id="eval-run")
        refresh = gr.Button("↻ Refresh runs", scale=1)
    with gr.Accordion("Settings", open=False):
        with gr.Row():
            limit = gr.Number(value=0, minimum=0, precision=0, label="Rows to evaluate",
                              info="0 = every held-out row; fewer rows finish sooner")
            batch_size = gr.Slider(1, 128, value=64, step=1, label="Batch size",
                                   info="most prompts generated together (batches also stay under 2 GiB of cache)")
            max_new = gr.Number(value=0, minimum=0, maximum=limits().max_new_tokens, precision=0,
                                label="Max new tokens",
                                info="0 = auto: longest label + 8, or longest reference + 16 (up to 256)")
            with_loss = gr.Checkbox(value=False, label="Also compute held-out loss",
                                    info="mean loss and perplexity on the answers (lower is better)")
    with gr.Row():
        evaluate_btn = gr.Button("Evaluate", variant="primary", elem_id="eval-button")
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="eval-cancel")
    status = gr.Markdown(PICK_RUN, elem_id="eval-status")
    with gr.Row():
        with gr.Column(scale=3):
            summary = gr.Dataframe(summary_frame(None), label="Summary", interactive=False, datatype="str",
                                   elem_id="eval-summary")
            counts = gr.Markdown()
        with gr.Column(scale=2):
            chart = gr.Plot(label="Change after fine-tuning", elem_id="eval-delta-chart")
    confusion = gr.Plot(label="Confusion matrices (rows: reference label, columns: predicted)", visible=False,
                        elem_id="eval-confusion")
    order = gr.Radio(list(ORDERS), value=ORDERS[0], label="Per-example order")
    examples = gr.Dataframe(examples_frame(None), label="Per example (click a header to sort)",
                            datatype=EXAMPLE_TYPES, interactive=False, wrap=True, max_chars=400,
                            show_search="search", elem_id="eval-examples")
    with gr.Row():
        export_btn = gr.Button("Get results files (results.json + examples.csv)", scale=1)
        downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, scale=3)

    @shows_errors
    def on_evaluate(run_id, limit_value, batch, max_tokens, loss, cancel, order_value, request: gr.Request,
                    progress=gr.Progress()):
        return evaluate(ctx, run_id, limit_value, batch, max_tokens, loss, cancel, order_value, request,
                        progress=lambda text, fraction: progress(fraction, desc=text))

    @shows_errors
    def on_export(run_id, request: gr.Request):
        return export_results(ctx, run_id, request)

    @shows_errors
    def on_follow(shared_run, current, request: gr.Request):
        return runs_dropdown(shared_run, current, visitor(request))

    @shows_errors
    def on_refresh(current, shared_run, request: gr.Request):
        return runs_dropdown(current, shared_run, visitor(request))

    @shows_errors
    def on_load(shared_run, current, request: gr.Request):
        who = visitor(request)
        choices = run_choices(who)
        value = pick_run(choices, shared_run, current)
        return gr.Dropdown(choices=choices, value=value), *show_run(value, ORDERS[0], who)

    @shows_errors
    def on_show(run_id, order_value, request: gr.Request):
        return show_run(run_id, order_value, visitor(request))

    @shows_errors
    def on_order(run_id, order_value, request: gr.Request):
        return order_examples(run_id, order_value, visitor(request))

    view = [status, summary, counts, chart, confusion, examples, downloads]
    private = {"api_visibility": "private"}  # UI plumbing, not part of the app's API
    run_state = shared.run_state
    evaluate_btn.click(arm_cancel, [cancel_state], [cancel_state, evaluate_btn], **private).then(
        on_evaluate, [run_dd, limit, batch_size, max_new, with_loss, cancel_state, order], view,
        concurrency_id=GPU_QUEUE, concurrency_limit=1, api_name="evaluate",
    ).then(lambda: gr.update(interactive=True), None, evaluate_btn, **private)
    cancel_btn.click(cancel_evaluation, [cancel_state], None, concurrency_limit=None, api_name="evaluate_cancel")
    run_dd.change(on_show, [run_dd, order], view, **private)
    # Picking a run here makes it the shared run (Chat follows); .input fires only
    # for the user's own pick, so following the shared run cannot loop back.
    run_dd.input(lambda run_id: run_id or "", run_dd, run_state, **private)
    order.change(on_order, [run_dd, order], examples, **private)
    refresh.click(on_refresh, [run_dd, run_state], run_dd, **private)
    export_btn.click(on_export, [run_dd], downloads, api_name="evaluate_download")
    run_state.change(on_follow, [run_state, run_dd], run_dd, **private)
    # fresh run list and results on each page load
    shared.blocks.load(on_load, [run_state, run_dd], [run_dd, *view], **private)
    return EvalParts(run=run_dd, view=view, examples=examples)


__all__ = ["build", "show_run", "evaluate", "export_results", "arm_cancel", "cancel_evaluation", "order_examples",
           "run_choices", "runs_dropdown", "summary_frame", "examples_frame", "View", "ORDERS"]
