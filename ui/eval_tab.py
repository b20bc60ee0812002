"""Evaluate tab: what changed with fine-tuning, on one page — held-out rows, general skills, a judge.

Pick a trained run (the tab follows the run chosen in the Train tab) and the two
sides to compare (ui/eval_sides.py; by default base vs the run, or its parent vs
the run), press Evaluate, and `evaluation.run_eval.evaluate_run` generates for
every held-out prompt with side A (base: adapter off) and side B (tuned: adapter
on), using the model the app already holds for that pair (`ctx.models`, shared
with the Chat tab). Held-out preference pairs are scored by both sides' reward
accuracy first. The tab
then shows the summary (metric, base, tuned, delta), win/tie/loss counts, a
chart of the deltas, the confusion matrices for classification, one card per
example (reference, base and tuned output side by side) and every example as a
table, and offers results.json + examples.csv for download. A run evaluated
before (here or with `python -m evaluation`) shows its saved results at once,
read from runs/<id>/eval/.

While an evaluation runs, every page watching that run says how far it is
("Evaluating <run name>: N of M held-out rows…"), whichever page or the guided
demo started it: the progress is kept on the app (`ctx.evaluations`,
ui/eval_progress.py) and a gr.Timer polls it; when it ends the page shows the
results and the run picker says "evaluated".

Below the held-out results, two checks of the same run: "General skills (did it
forget anything?)" (ui/eval_checks.py: base vs tuned on ARC, HellaSwag, MMLU, and
the items that flipped) and "Judge (pairwise)" (ui/eval_judge.py). Each metric
saved with a 95% interval says in words whether its change is distinguishable
from none.

The handlers below are plain functions (tests call them directly); what is
shown is built in ui/eval_views.py and ui/eval_cards.py; `build` lays out the
widgets and wires them. Per-browser state: the cancel Event of this page's
evaluation, and the evaluation in progress this page last saw.
"""
from __future__ import annotations

import secrets
import shutil
import threading
from typing import Callable

import gradio as gr
import pandas as pd

from evaluation.compare import RESULTS_FILE, Comparison, copy_results
from evaluation.run_eval import evaluate_on_gpu, evaluate_run, load_meta
from finetune_core.inference.sides import pair_key
from finetune_core.runs.ownership import Visitor

from . import eval_cards, eval_checks, eval_judge, eval_sides
from .access import require_user, visitor
from .context import GPU_QUEUE, AppContext, EvalParts, Shared
from .errors import page_error, shows_errors
# the Evaluate button arms and cancels like a check's Run button
from .eval_checks import arm_check as arm_cancel
from .eval_checks import cancel_check as cancel_evaluation
from .eval_checks import gpu_busy
from .eval_settings import extra_metrics, settings_inputs
from .eval_views import (CANCELLED, EXAMPLE_HEADERS, EXAMPLE_TYPES, EXAMPLE_WIDTHS, NO_RUNS, ORDERS, PICK_RUN,
                         WAITING, View, examples_frame, message_view, not_evaluated_text, progress_line,
                         results_view, run_title)
from .widgets import open_run, pick_run, run_name_md
from .widgets import run_choices as adapter_runs

Progress = Callable[[str, float], None]
POLL_S = 1.0  # how often a page asks how far an evaluation is


# -- runs ---------------------------------------------------------------------------
def run_choices(who: Visitor | None = None) -> list[tuple[str, str]]:
    """(label, run id) for the runs with a saved adapter that `who` may see, newest first,
    each saying whether it has been evaluated."""
    return adapter_runs(who, lambda run, _summary: "evaluated" if (run.eval_dir / RESULTS_FILE).is_file()
                        else "not evaluated yet")


def runs_dropdown(first: str | None, second: str | None, who: Visitor | None = None) -> gr.Dropdown:
    """A fresh list of evaluable runs (their labels say which are evaluated), selecting `first`,
    else `second`, else the newest."""
    choices = run_choices(who)
    return gr.Dropdown(choices=choices, value=pick_run(choices, first, second))


def fresh_labels(who: Visitor | None = None) -> dict:
    """An update of the picker's choices only (their labels say which runs are evaluated), keeping its
    value: the page does not reload the run it already shows."""
    return gr.update(choices=run_choices(who))


# -- what a page shows ------------------------------------------------------------------
def show_run(run_id: str | None, order: str = ORDERS[0], who: Visitor | None = None, a=None, b=None) -> View:
    """The saved evaluation of a run (read from disk, nothing re-run) for sides `a` and `b` (default: the
    run's own pair), or what to do next."""
    if not run_id:
        return message_view(PICK_RUN if run_choices(who) else NO_RUNS)
    run = open_run(run_id, visitor=who)
    if not run.has_adapter():
        return message_view(f"Run {run_title(run)} has no saved adapter yet: let it finish training (Train tab).")
    home, pair, folder = eval_sides.results_home(run, eval_sides.picked_pair(run, a, b, who))
    if not (folder / RESULTS_FILE).is_file():
        if pair is None and home is run:
            return message_view(not_evaluated_text(run))
        return message_view(f"These two sides have not been compared yet. Press **Evaluate** to score them on "
                            f"the held-out rows of run {run_title(home)}.")
    try:
        comparison, meta = Comparison.load(folder), load_meta(home, pair)
    except (OSError, ValueError, KeyError):
        # Half-replaced by an evaluation finishing right now, or damaged: say so, don't crash.
        return message_view(f"The saved evaluation of run {run_title(run)} could not be read. "
                            "Press **Evaluate** to run it again.")
    return results_view(home, comparison, meta, order)  # the run whose held-out rows were scored


def watch_run(ctx: AppContext, run_id: str | None, order: str = ORDERS[0],
              who: Visitor | None = None, a=None, b=None) -> tuple[View, str, str | None]:
    """(View, progress line, token of the evaluation in progress or None) for a page showing the run:
    its saved results, and how far an evaluation of it is when one runs (then a run not evaluated
    before says its results will appear, rather than "press Evaluate")."""
    view = show_run(run_id, order, who, a, b)
    running = ctx.evaluations.get(run_id)
    if running is None:
        return view, "", None
    if not view.summary and not view.counts:
        view = view._replace(status=WAITING)
    return view, progress_line(running), running.token


def poll(ctx: AppContext, run_id: str | None, seen: str | None, order: str = ORDERS[0],
         who: Visitor | None = None, a=None, b=None) -> tuple:
    """The Timer's tick: (progress line, seen token, run picker, *View), gr.skip() for what has not changed.
    While the run is evaluated: the progress line (and, the first time this page sees that evaluation,
    the View). When the evaluation this page saw has ended: its results and the picker's fresh labels."""
    running = ctx.evaluations.get(run_id) if run_id else None
    keep = [gr.skip()] * len(View._fields)
    if running is not None:
        open_run(run_id, visitor=who)  # the run's name only to a visitor who may see the run
        if running.token == seen:
            return progress_line(running), gr.skip(), gr.skip(), *keep
        view, line, token = watch_run(ctx, run_id, order, who, a, b)
        return line, token, gr.skip(), *view
    if seen is None:
        return gr.skip(), gr.skip(), gr.skip(), *keep
    return "", None, fresh_labels(who), *show_run(run_id, order, who, a, b)


def order_examples(run_id: str | None, order: str, who: Visitor | None = None, a=None, b=None) -> pd.DataFrame:
    """Re-sort the per-example table (read again from the pair's eval folder)."""
    if not run_id:
        return examples_frame(None)
    run = open_run(run_id, visitor=who)
    _home, _pair, folder = eval_sides.results_home(run, eval_sides.picked_pair(run, a, b, who))
    try:
        return examples_frame(Comparison.load(folder).examples, order)
    except (OSError, ValueError, KeyError):
        return examples_frame(None)


def order_view(run_id: str | None, order: str, who: Visitor | None = None, a=None, b=None
               ) -> tuple[str, pd.DataFrame]:
    """(example cards, per-example table) in the chosen order, the sides named as the results name them."""
    table = order_examples(run_id, order, who, a, b)
    labels = ("base", "tuned")
    if run_id and not table.empty:
        run = open_run(run_id, visitor=who)
        home, pair, _folder = eval_sides.results_home(run, eval_sides.picked_pair(run, a, b, who))
        labels = eval_sides.side_words(load_meta(home, pair))
    return eval_cards.cards_html(table, order, labels), table


# -- evaluating ---------------------------------------------------------------------------
def _whole(value, name: str) -> int:
    """A number field's value as an int (the bounds are evaluate_run's to check)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"{name} must be a whole number.") from None


def evaluate(ctx: AppContext, run_id: str | None, limit=0, batch_size=64, max_new_tokens=0,
             with_loss: bool = False, cancel: threading.Event | None = None, order: str = ORDERS[0],
             request: gr.Request | None = None, progress: Progress | None = None,
             metrics: list[str] | str | None = None, a=None, b=None) -> View:
    """Score sides `a` and `b` (default: the run's own pair, base or its parent vs the run) on the
    held-out rows of the newer run of the two, save with that run (eval_sides.results_home), show it.

    limit 0 = every held-out row; max_new_tokens 0 = sized from the references; `metrics`: extra
    metrics besides the task's own (shipped names, or Hub names where the owner allows them).
    A cancelled evaluation saves nothing and shows the previous results. While it runs,
    `ctx.evaluations` has its progress (every page watching the run shows it).
    """
    require_user(request)
    who = visitor(request)
    if not run_id:
        raise gr.Error("Pick a run first." if run_choices(who) else "Train a run first (Train tab).")
    run = open_run(run_id, visitor=who, change="evaluate")  # an evaluation replaces the saved one
    sides = eval_sides.picked_pair(run, a, b, who)
    home, pair, _folder = eval_sides.results_home(run, sides)
    if home is not run:  # the results are saved with the newer run: its owner's to change
        home = open_run(home.id, visitor=who, change="evaluate")
    # 0 = every row / sized from the references; evaluate_run checks the settings and the
    # rows before it asks for the model
    settings = {"limit": _whole(limit, "Rows to evaluate") or None,
                "batch_size": _whole(batch_size, "Batch size"),
                "max_new_tokens": _whole(max_new_tokens, "Max new tokens") or None, "with_loss": bool(with_loss),
                "metrics": extra_metrics(metrics)}
    busy = gpu_busy(ctx)
    if busy:
        raise gr.Error(busy)
    running = ctx.evaluations.start(run.id, run.name)
    if running is None:
        raise gr.Error(f"Run “{run.name}” is being evaluated already (from another page or the guided demo): "
                       "its results appear here when that evaluation finishes.")
    cancel = cancel if isinstance(cancel, threading.Event) else threading.Event()

    def say(text: str, fraction: float) -> None:
        ctx.evaluations.update(running, text, fraction)
        if progress is not None:
            progress(text, fraction)

    try:
        key = f"run:{home.id}" if pair is None else pair_key(*pair)  # the app's copy, also Chat's: never a second
        comparison = evaluate_on_gpu(home, settings, pair) or evaluate_run(  # on ZeroGPU: one GPU call (run_eval)
            home, **settings, progress=say, cancel=cancel, sides=pair,
            load_model=lambda: ctx.models.get(key, progress=lambda message: say(message, 0.0)))
    except InterruptedError:
        gr.Warning("Evaluation cancelled: nothing was saved.")
        view = show_run(run.id, order, who, a, b)
        return view._replace(status=f"{view.status}\n\n{CANCELLED}")
    except Exception as exc:  # noqa: BLE001 - a StudioError's words, or "Internal error" with the traceback logged
        raise page_error(exc, f"evaluation of run {run.id}") from None
    finally:
        ctx.evaluations.finish(running)
    return results_view(home, comparison, load_meta(home, pair), order)


def export_results(ctx: AppContext, run_id: str | None, request: gr.Request | None = None, a=None,
                   b=None) -> list[str]:
    """Copy the run's results.json and examples.csv into a fresh, unguessable folder
    under the exports dir (the only folder the app serves files from) and return
    their paths. runs/ itself is never served."""
    require_user(request)
    if not run_id:
        raise gr.Error("Pick a run first.")
    who = visitor(request)
    run = open_run(run_id, visitor=who)
    _home, _pair, results = eval_sides.results_home(run, eval_sides.picked_pair(run, a, b, who))
    if not (results / RESULTS_FILE).is_file():
        raise gr.Error("No results to download yet: press Evaluate first.")
    folder = ctx.settings.exports_dir / secrets.token_urlsafe(16)
    folder.mkdir(parents=True)
    try:  # run ids are server-made: safe as file names
        return [str(p) for p in copy_results(results, folder, run.id)]
    except FileNotFoundError:
        # An evaluation of this run was being saved at that moment (eval/ is swapped by rename).
        shutil.rmtree(folder, ignore_errors=True)
        raise gr.Error("The results changed while copying them: try again.") from None


# -- layout and wiring ------------------------------------------------------------------
def _results() -> list:
    """The result area, in View order: status, summary, counts, chart, confusion, cards, table, downloads
    (the order radio and the download button are made in between and returned after the View's parts)."""
    status = gr.Markdown(PICK_RUN, elem_id="eval-status")
    with gr.Row():
        with gr.Column(scale=3, min_width=300):
            summary = gr.HTML("", css_template=eval_cards.CSS, js_on_load=None, apply_default_css=False,
                              elem_id="eval-summary")
            counts = gr.Markdown(elem_id="eval-counts")
        with gr.Column(scale=2, min_width=300):
            # The figure carries its own title: a block label would sit on top of it.
            chart = gr.Plot(label="Change after fine-tuning", show_label=False, visible=False,
                            elem_id="eval-delta-chart")
    confusion = gr.Plot(label="Confusion matrices", show_label=False, visible=False, elem_id="eval-confusion")
    order = gr.Radio(list(ORDERS), value=ORDERS[0], label="Order of the examples", elem_id="eval-order")
    cards = gr.HTML("", css_template=eval_cards.CSS, js_on_load=None, apply_default_css=False, elem_id="eval-cards")
    with gr.Accordion("All examples as a table", open=False):
        examples = gr.Dataframe(examples_frame(None), show_label=False, datatype=EXAMPLE_TYPES,
                                interactive=False, wrap=True, max_chars=400, column_widths=EXAMPLE_WIDTHS,
                                show_search="search", elem_id="eval-examples")
    with gr.Row():
        export_btn = gr.Button("Get results files (results.json + examples.csv)", scale=1)
        downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, visible=False, scale=3,
                            elem_id="eval-downloads")
    return [status, summary, counts, chart, confusion, cards, examples, downloads, order, export_btn]


def build(ctx: AppContext, shared: Shared) -> EvalParts:
    """Build the Evaluate tab inside the caller's `gr.Tab`; its picker follows and sets shared.run_state."""
    cancel_state = gr.State(None)  # threading.Event of this browser's evaluation (made per click)
    seen_state = gr.State(None)  # token of the evaluation in progress this page shows, or None
    gr.Markdown("What changed with fine-tuning: the base model (adapter off) against the tuned model (adapter "
                "on) on the run's held-out rows — rows it never trained on —, on general skills, and in a "
                "judge's eyes. Each change says whether it is distinguishable from no change. A run started "
                "from another run is compared with its parent; pick any two sides below (held-out rows).")
    with gr.Row():
        # Filled on page load (the newest run this visitor may see). allow_custom_value: the server-side
        # check of a pick is open_run(), and a run trained after start-up must be usable by API clients
        # that never loaded the page.
        run_dd = gr.Dropdown(choices=[], value=None, label="Run to evaluate (runs with a trained adapter)",
                             allow_custom_value=True, scale=4, elem_id="eval-run")
        refresh = gr.Button("↻ Refresh runs", scale=1)
    with gr.Row():  # filled with the run, its default pair selected; a pick is checked in eval_sides
        side_a = gr.Dropdown(choices=[], value=None, visible=False, label="Side A (the “base” columns)",
                             allow_custom_value=True, elem_id="eval-side-a")
        side_b = gr.Dropdown(choices=[], value=None, visible=False, label="Side B (the “tuned” columns)",
                             allow_custom_value=True, elem_id="eval-side-b")
    sides = [side_a, side_b]
    gr.Markdown("### Held-out rows", elem_id="eval-heldout-intro")
    settings = settings_inputs()
    with gr.Row():
        evaluate_btn = gr.Button("Evaluate", variant="primary", elem_id="eval-button")
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="eval-cancel")
    progress_md = gr.Markdown("", elem_id="eval-progress")
    *view, order, export_btn = _results()
    timer = gr.Timer(POLL_S)
    checks = eval_checks.build_benchmarks(ctx, run_dd, timer) + eval_judge.build_judge(ctx, run_dd, timer)

    @shows_errors
    def on_evaluate(run_id, limit_value, batch, max_tokens, loss, picked, hub, cancel, order_value, a, b,
                    request: gr.Request):
        return evaluate(ctx, run_id, limit_value, batch, max_tokens, loss, cancel, order_value, request,
                        metrics=extra_metrics(picked, hub), a=a, b=b)

    @shows_errors
    def on_start(previous, run_id, request: gr.Request):
        # said at once, also while the evaluation waits in the GPU queue; the Timer takes over
        name = open_run(run_id, visitor=visitor(request)).name if run_id else ""
        waiting = f"Evaluating **{run_name_md(name)}**: waiting to start…" if name else ""
        return (*arm_cancel(previous), waiting)

    @shows_errors
    def on_done(request: gr.Request):
        # the picker's labels now say "evaluated"; the Timer has nothing more to show for this page
        return gr.update(interactive=True), "", None, fresh_labels(visitor(request))

    @shows_errors
    def on_export(run_id, a, b, request: gr.Request):
        return gr.update(value=export_results(ctx, run_id, request, a, b), visible=True)

    @shows_errors
    def on_sides(run_id, request: gr.Request):
        return eval_sides.pickers(run_id, visitor(request))

    @shows_errors
    def on_pick(first, second, request: gr.Request):
        return runs_dropdown(first, second, visitor(request))

    @shows_errors
    def on_load(shared_run, _built, request: gr.Request):
        # a fresh page: the session's run, else the newest run this visitor may see; never the
        # picker's value as built (`_built`), which is no one's pick
        who = visitor(request)
        choices = run_choices(who)
        value = pick_run(choices, shared_run)
        view, line, token = watch_run(ctx, value, ORDERS[0], who)
        return gr.Dropdown(choices=choices, value=value), *eval_sides.pickers(value, who), line, token, *view

    @shows_errors
    def on_show(run_id, order_value, a, b, request: gr.Request):
        view, line, token = watch_run(ctx, run_id, order_value, visitor(request), a, b)
        return line, token, *view

    @shows_errors
    def on_order(run_id, order_value, a, b, request: gr.Request):
        return order_view(run_id, order_value, visitor(request), a, b)

    @shows_errors
    def on_tick(run_id, seen, order_value, a, b, request: gr.Request):
        return poll(ctx, run_id, seen, order_value, visitor(request), a, b)

    private = {"api_visibility": "private"}  # UI plumbing, not part of the app's API
    quiet = {**private, "show_progress": "hidden"}
    run_state, watched = shared.run_state, [progress_md, seen_state]
    evaluate_btn.click(on_start, [cancel_state, run_dd], [cancel_state, evaluate_btn, progress_md], **quiet).then(
        on_evaluate, [run_dd, *settings, cancel_state, order, *sides], view, concurrency_id=GPU_QUEUE,
        concurrency_limit=1,
        api_name="evaluate", show_progress="hidden",
    ).then(on_done, None, [evaluate_btn, progress_md, seen_state, run_dd], **quiet)
    cancel_btn.click(cancel_evaluation, [cancel_state], None, concurrency_limit=None, api_name="evaluate_cancel")
    # a new run: its default pair in the side pickers, then its saved results for that pair
    run_dd.change(on_sides, [run_dd], sides, **quiet).then(on_show, [run_dd, order, *sides], [*watched, *view],
                                                           **private, show_progress="minimal")
    for picker in sides:  # the visitor's own pick of a side: that pair's saved results
        picker.input(on_show, [run_dd, order, *sides], [*watched, *view], **private, show_progress="minimal")
    # Picking a run here makes it the shared run (Chat follows); .input fires only
    # for the user's own pick, so following the shared run cannot loop back.
    run_dd.input(lambda run_id: run_id or "", run_dd, run_state, **private)
    order.change(on_order, [run_dd, order, *sides], view[5:7], **private, show_progress="minimal")
    refresh.click(on_pick, [run_dd, run_state], run_dd, **private)
    export_btn.click(on_export, [run_dd, *sides], view[-1], api_name="evaluate_download")
    run_state.change(on_pick, [run_state, run_dd], run_dd, **private)
    # Unqueued: a tick is a dictionary look-up, and ticks of many open pages must not fill the queue.
    timer.tick(on_tick, [run_dd, seen_state, order, *sides], [*watched, run_dd, *view], queue=False, **quiet)
    # fresh run list and results on each page load
    shared.blocks.load(on_load, [run_state, run_dd], [run_dd, *sides, *watched, *view], **private)
    return EvalParts(run=run_dd, view=view, examples=view[6], cards=view[5], progress=progress_md, checks=checks)


__all__ = ["build", "show_run", "watch_run", "poll", "evaluate", "export_results", "arm_cancel",
           "cancel_evaluation", "order_examples", "order_view", "run_choices", "runs_dropdown", "fresh_labels",
           "examples_frame", "View", "ORDERS", "EXAMPLE_HEADERS", "CANCELLED"]
