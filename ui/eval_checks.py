"""The Evaluate tab's general-skill check, and how both checks beside the held-out rows run.

"General skills (did it forget anything?)": base (adapter off) and tuned (adapter
on) answer standard multiple-choice benchmarks (ARC-Easy, ARC-Challenge,
HellaSwag, MMLU) scored by log-likelihood (`evaluation.benchmarks.run_benchmarks`,
imported when a check starts), and the tab shows, per benchmark and metric, base,
tuned, the change, its 95% interval and the sentence saying whether the change is
distinguishable from none; then the items that went from right to wrong (what a
person must see first) and from wrong to right. A run checked before shows its
saved checks/benchmarks.json as soon as it is picked.

A check runs like the held-out evaluation (ui/eval_tab.py): in the GPU queue, on
the model the app already holds for the run (`ctx.models`), its progress kept on
the app (`ctx.checks`, keyed "<kind>:<run id>") so every page watching the run
says what it is doing, while the Evaluate tab's gr.Timer polls it. The judge
(ui/eval_judge.py) uses the same machinery: `checkable_run`, `run_check`,
`watch_check`, `poll_check`.
"""
from __future__ import annotations

import re
import threading
from typing import Callable, NamedTuple

import gradio as gr

from evaluation.report_checks import benchmarks_about, counted, flipped, saved_check
from finetune_core.runs.ownership import Visitor
from finetune_core.runs.store import Run

from .access import require_user, visitor
from .context import GPU_QUEUE, AppContext
from .errors import page_error, shows_errors
from .eval_cards import CSS, headline_html, metric_row, metric_table, safe_text
from .eval_progress import EvalProgress
from .widgets import open_run, run_name_md

KIND = "benchmarks"
# The contract's four (evaluation.benchmarks.BENCHMARKS), for the checkboxes when that module is absent.
LIMIT_DEFAULT, LIMIT_MAX = 100, 2000  # items per benchmark
FEWSHOT_MAX = 5
FLIP_LIMIT = 10  # flipped items shown per direction
QUESTION_CHARS = 500  # of a flipped item's question shown
CHECK_CANCELLED = "*Check cancelled: nothing was saved.*"
DOING = {"benchmarks": "Checking general skills of", "judge": "Judging"}


class CheckView(NamedTuple):
    """What a check's section shows, in the order of its outputs."""

    status: str  # markdown: which run, how the check was run, or what to do (server-made text only)
    results: str  # HTML: the check's tables and items (everything from a file or a model escaped)


# -- how a check runs (shared with ui/eval_judge.py) ------------------------------------------------
def check_key(kind: str, run_id: str | None) -> str:
    """The key of a run's check in `ctx.checks` ("benchmarks:<run id>")."""
    return f"{kind}:{run_id or ''}"


def gpu_busy(ctx: AppContext) -> str:
    """Why the model cannot run now ("" when it can): a training job holds the GPU."""
    run = ctx.queue.gpu_run()
    if run is None:
        return ""
    return f"Training run “{run.name}” is using the GPU. Evaluate when it finishes or is stopped (Train tab)."


def whole(value, name: str, low: int, high: int) -> int:
    """A number field's value as an int within [low, high], else a gr.Error naming the field."""
    try:
        number, exact = int(value), float(value)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"{name} must be a whole number.") from None
    if not low <= number <= high or number != exact:
        raise gr.Error(f"{name} must be a whole number from {low} to {high}.")
    return number


def checkable_run(ctx: AppContext, run_id: str | None, request: gr.Request | None, action: str) -> Run:
    """The run a check will replace the saved results of, when this visitor may (`action` names the
    check in the refusal), the GPU is free and the run has an adapter."""
    require_user(request)
    if not run_id:
        raise gr.Error("Pick a run first.")
    run = open_run(run_id, visitor=visitor(request), change=action)
    if not run.has_adapter():
        raise gr.Error(f"Run “{run.name}” has no saved adapter yet: let it finish training (Train tab).")
    busy = gpu_busy(ctx)
    if busy:
        raise gr.Error(busy)
    return run


def run_check(ctx: AppContext, kind: str, run: Run, work: Callable, progress: Callable | None = None,
              redact: tuple[str, ...] = ()) -> dict | None:
    """`work(say, load_model)` with its progress kept in `ctx.checks` (and passed to `progress`), on the
    model the app holds for the run; its result, or None when it was cancelled. `redact`: secrets that
    must not reach the page or the log if the check fails."""
    running = ctx.checks.start(check_key(kind, run.id), run.name)
    if running is None:
        raise gr.Error(f"Run “{run.name}” is being checked already (from another page): its results appear "
                       "here when that check finishes.")

    def say(text: str, fraction: float = 0.0) -> None:
        ctx.checks.update(running, text, fraction)
        if progress is not None:
            progress(text, fraction)

    def load_model():
        # The app's shared copy (also used by Chat and the held-out evaluation): never a second one.
        return ctx.models.get(f"run:{run.id}", progress=lambda message: say(message, 0.0))

    try:
        return work(say, load_model)
    except InterruptedError:
        gr.Warning("Check cancelled: nothing was saved.")
        return None
    except Exception as exc:  # noqa: BLE001 - a StudioError's words, or "Internal error" with the traceback logged
        raise page_error(exc, f"{kind} check of run {run.id}", redact) from None
    finally:
        ctx.checks.finish(running)


def check_line(kind: str, entry: EvalProgress | None) -> str:
    """Markdown saying what a check in progress is doing, naming the run; "" for None."""
    if entry is None:
        return ""
    doing = f"{DOING[kind]} **{run_name_md(entry.name)}**"
    if not entry.text:
        return f"{doing}: starting…"
    return f"{doing}: {run_name_md(entry.text)} ({round(100 * entry.fraction)} % done)"


def watch_check(ctx: AppContext, kind: str, run_id: str | None, show: Callable, who: Visitor | None = None) -> tuple:
    """(progress line, token of the check in progress or None, *CheckView) for a page showing the run."""
    view = show(run_id, who)
    running = ctx.checks.get(check_key(kind, run_id)) if run_id else None
    return check_line(kind, running), (running.token if running else None), *view


def poll_check(ctx: AppContext, kind: str, run_id: str | None, seen: str | None, show: Callable,
               who: Visitor | None = None) -> tuple:
    """The Timer's tick for a check: (progress line, seen token, *CheckView), gr.skip() for what has not
    changed. While the run is checked, the line; once the check this page saw has ended, its results."""
    running = ctx.checks.get(check_key(kind, run_id)) if run_id else None
    keep = (gr.skip(),) * len(CheckView._fields)
    if running is not None:
        open_run(run_id, visitor=who)  # the run's name only to a visitor who may see the run
        return check_line(kind, running), (gr.skip() if running.token == seen else running.token), *keep
    if seen is None:
        return gr.skip(), gr.skip(), *keep
    return "", None, *show(run_id, who)


@shows_errors
def arm_check(_previous=None) -> tuple[threading.Event, dict]:
    """Click-time step of a check's Run button: a fresh cancel Event (so Cancel works while the check
    still waits in the queue) and the button disabled."""
    return threading.Event(), gr.update(interactive=False)


@shows_errors
def cancel_check(cancel) -> None:
    """A check's Cancel button: set its cancel Event; the check stops after its current batch."""
    if isinstance(cancel, threading.Event) and not cancel.is_set():
        cancel.set()
        gr.Info("Cancelling: the current batch finishes first.")


# -- the general-skill check ---------------------------------------------------------------------------
def benchmark_choices() -> list[tuple[str, str]]:
    """(title, name) of the benchmarks the check offers, from evaluation.benchmarks.BENCHMARKS."""
    from evaluation.benchmarks import BENCHMARKS

    return [(title, name) for name, title in BENCHMARKS.items()]


def _flip(item: dict) -> str:
    question = str(item.get("question", ""))
    if len(question) > QUESTION_CHARS:
        question = question[:QUESTION_CHARS].rstrip() + "…"
    return (f'<div class="ev-side ev-flip"><div class="ev-k">{safe_text(item["benchmark"])} · item '
            f'{safe_text(item.get("doc_id", "?"))}</div><div class="ev-text">{safe_text(question)}</div>'
            f'<div class="ev-picks">Right answer: <b>{safe_text(item.get("answer", ""))}</b> · base picked '
            f'{safe_text(item.get("base_choice", ""))} · tuned picked <b>{safe_text(item.get("tuned_choice", ""))}'
            f'</b></div></div>')


def flips_html(data: dict) -> str:
    """The flipped items, right → wrong first (what tuned forgot), then wrong → right."""
    parts = []
    for direction, title, elem in (("right_to_wrong", "Right → wrong (base right, tuned wrong)", "bench-lost"),
                                   ("wrong_to_right", "Wrong → right (base wrong, tuned right)", "bench-gained")):
        items = flipped(data, direction)
        shown = f", the first {FLIP_LIMIT} shown" if len(items) > FLIP_LIMIT else ""
        body = "".join(_flip(i) for i in items[:FLIP_LIMIT]) or '<p class="ev-empty">None.</p>'
        parts.append(f'<section class="ev-flips" id="{elem}"><h4>{title}: {counted(len(items), "item")}{shown}</h4>'
                     f'{body}</section>')
    return f'<div class="ev-flip-lists">{"".join(parts)}</div>'


def benchmarks_html(data: dict | None) -> str:
    """A saved general-skill check as HTML: each benchmark's main sentence, the table of every benchmark
    and metric (base, tuned, change, 95% CI, sentence), then the flipped items; "" for None."""
    if not data:
        return ""
    leads, rows = [], []
    for bench in data.get("benchmarks") or []:
        title = str(bench.get("title") or bench.get("name"))
        for entry in bench.get("metrics") or []:
            rows.append(metric_row(f"{safe_text(title)} · {safe_text(entry.get('metric'))}", entry))
            if entry.get("metric") == bench.get("primary") and entry.get("verdict_text"):
                element = "bench-" + re.sub(r"[^a-z0-9_]", "-", str(bench.get("name")).lower())  # an id, whatever the file says
                leads.append(headline_html({**entry, "metric": f"{title} ({entry['metric']})"}, element))
    table = metric_table(rows, "benchmark · metric", "General skills, tuned vs base", "bench-table")
    return f'<div class="ev-checks" id="bench-results">{"".join(leads)}{table}{flips_html(data)}</div>'


def benchmarks_status(run: Run, data: dict | None) -> str:
    """Markdown: how the saved check was run, or what to do when the run has none."""
    if not data:
        return (f"General skills of run **{run_name_md(run.label())}** not checked yet: choose benchmarks and "
                "press **Check general skills** to score base and tuned on them.")
    when = f" · took {data['seconds']:.0f} s" if isinstance(data.get("seconds"), (int, float)) else ""
    when += f" · checked {data['timestamp']}" if data.get("timestamp") else ""
    return f"General skills of run **{run_name_md(run.label())}**. {run_name_md(benchmarks_about(data))}{when}"


def show_benchmarks(run_id: str | None, who: Visitor | None = None) -> CheckView:
    """The run's saved general-skill check (read from disk, nothing re-run), or what to do."""
    if not run_id:
        return CheckView("", "")
    run = open_run(run_id, visitor=who)
    data = saved_check(run, KIND)
    return CheckView(benchmarks_status(run, data), benchmarks_html(data))


def run_benchmarks_check(ctx: AppContext, run_id: str | None, names=("arc_easy",), limit=LIMIT_DEFAULT,
                         fewshot=0, cancel: threading.Event | None = None, request: gr.Request | None = None,
                         progress: Callable | None = None) -> CheckView:
    """Score base and tuned on the chosen benchmarks (`limit` items each, `fewshot` examples in each
    prompt), save checks/benchmarks.json in the run (replacing the previous check) and show it. A
    cancelled check saves nothing and shows the previous one."""
    run = checkable_run(ctx, run_id, request, "run the general-skill check on")
    offered = {name for _title, name in benchmark_choices()}
    chosen = [n for n in (names or []) if n in offered]
    if not chosen or len(chosen) != len(names or []):
        raise gr.Error("Benchmarks: choose at least one of " + ", ".join(sorted(offered)) + ".")
    settings = {"limit": whole(limit, "Items per benchmark", 1, LIMIT_MAX),
                "num_fewshot": whole(fewshot, "Few-shot examples", 0, FEWSHOT_MAX)}
    from evaluation.benchmarks import run_benchmarks  # the check's backend, loaded when a check starts

    cancel = cancel if isinstance(cancel, threading.Event) else threading.Event()
    data = run_check(ctx, KIND, run, lambda say, load_model: run_benchmarks(
        run, names=tuple(chosen), **settings, progress=say, cancel=cancel, load_model=load_model), progress)
    if data is None:
        view = show_benchmarks(run.id, visitor(request))
        return view._replace(status=f"{view.status}\n\n{CHECK_CANCELLED}")
    return CheckView(benchmarks_status(run, data), benchmarks_html(data))


def build_check_controls(kind: str, label: str) -> tuple:
    """The Run and Cancel buttons and the progress line of a check's section."""
    with gr.Row():
        run_btn = gr.Button(label, variant="primary", elem_id=f"{kind}-button")
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id=f"{kind}-cancel")
    progress_md = gr.Markdown("", elem_id=f"{kind}-progress")
    return run_btn, cancel_btn, progress_md


def build_check_results(kind: str) -> list:
    """The section's CheckView outputs: the status line and the results HTML."""
    status = gr.Markdown("", elem_id=f"{kind}-status")
    results = gr.HTML("", css_template=CSS, js_on_load=None, apply_default_css=False, elem_id=f"{kind}-results")
    return [status, results]


def wire_check(ctx: AppContext, kind: str, run_dd, timer, controls: tuple, inputs: list, view: list,
               start: Callable, show: Callable) -> None:
    """Wire a check's section: Run (click-time arm, then `start` in the GPU queue, then the button back),
    Cancel, the run picker and the Timer (`show(run_id, who)` gives the section's CheckView)."""
    run_btn, cancel_btn, progress_md = controls
    cancel_state, seen_state = gr.State(None), gr.State(None)
    quiet = {"api_visibility": "private", "show_progress": "hidden"}

    @shows_errors
    def on_start(previous, run_id, request: gr.Request):
        name = open_run(run_id, visitor=visitor(request)).name if run_id else ""
        return (*arm_check(previous), f"{DOING[kind]} **{run_name_md(name)}**: waiting to start…" if name else "")

    @shows_errors
    def on_watch(run_id, request: gr.Request):
        return watch_check(ctx, kind, run_id, show, visitor(request))

    @shows_errors
    def on_tick(run_id, seen, request: gr.Request):
        return poll_check(ctx, kind, run_id, seen, show, visitor(request))

    run_btn.click(on_start, [cancel_state, run_dd], [cancel_state, run_btn, progress_md], **quiet).then(
        start, [run_dd, *inputs, cancel_state], view, concurrency_id=GPU_QUEUE, concurrency_limit=1,
        api_name=f"check_{kind}", show_progress="hidden",
    ).then(lambda: (gr.update(interactive=True), "", None), None, [run_btn, progress_md, seen_state], **quiet)
    cancel_btn.click(cancel_check, [cancel_state], None, concurrency_limit=None, api_name=f"check_{kind}_cancel")
    run_dd.change(on_watch, [run_dd], [progress_md, seen_state, *view], api_visibility="private",
                  show_progress="minimal")
    timer.tick(on_tick, [run_dd, seen_state], [progress_md, seen_state, *view], queue=False, **quiet)


def build_benchmarks(ctx: AppContext, run_dd, timer) -> list:
    """The "General skills" section inside the Evaluate tab; returns its CheckView outputs."""
    gr.Markdown("### General skills (did it forget anything?)\nBase and tuned answer standard multiple-choice "
                "questions, scored by log-likelihood as lm-evaluation-harness does: a drop here means "
                "fine-tuning cost the model something it could do before.", elem_id="bench-intro")
    with gr.Row():
        names = gr.CheckboxGroup(benchmark_choices(), value=["arc_easy"], label="Benchmarks", elem_id="bench-names")
        limit = gr.Number(value=LIMIT_DEFAULT, minimum=1, maximum=LIMIT_MAX, precision=0,
                          label="Items per benchmark", info="the same items for base and tuned; fewer finish sooner",
                          elem_id="bench-limit")
        fewshot = gr.Number(value=0, minimum=0, maximum=FEWSHOT_MAX, precision=0, label="Few-shot examples",
                            info="solved examples before each question (0 = zero-shot)", elem_id="bench-fewshot")
    controls = build_check_controls(KIND, "Check general skills")
    view = build_check_results(KIND)

    @shows_errors
    def on_run(run_id, chosen, items, shots, cancel, request: gr.Request):
        return run_benchmarks_check(ctx, run_id, chosen, items, shots, cancel, request)

    wire_check(ctx, KIND, run_dd, timer, controls, [names, limit, fewshot], view, on_run, show_benchmarks)
    return view


__all__ = ["CheckView", "KIND", "check_key", "gpu_busy", "whole", "checkable_run", "run_check", "check_line",
           "watch_check", "poll_check", "arm_check", "cancel_check", "benchmark_choices", "flips_html",
           "benchmarks_html", "benchmarks_status", "show_benchmarks", "run_benchmarks_check",
           "build_check_controls", "build_check_results", "wire_check", "build_benchmarks"]
