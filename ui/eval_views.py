"""What the Evaluate tab shows for a run: the `View` of its saved evaluation, or a line saying what to do.

Plain functions of a run and its `Comparison` (no Gradio events here): the
summary as a table and as HTML, win/tie/loss counts, the status line naming the
run by its human name, the delta chart and confusion heatmaps, the example
cards and the per-example table. `eval_tab` wires them to the page.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import gradio as gr
import pandas as pd

from evaluation.compare import SCORE_COLUMNS, TEXT_COLUMNS, Comparison
from evaluation.plots import confusion_heatmap, delta_chart
from finetune_core.data.dataset import is_text_rows, read_jsonl
from finetune_core.runs.store import Run

from .eval_cards import cards_html, summary_html
from .eval_progress import EvalProgress
from .eval_sides import reward_lines, side_words
from .widgets import run_name_md

ORDERS = ("Biggest wins first", "Biggest losses first", "Original order")
EXAMPLE_HEADERS = ["row", "input", "reference", "base output", "tuned output", "base score", "tuned score",
                   "delta"]
# Inputs and model outputs go in "str" columns, which the browser shows as plain
# text: never "markdown" or "html", which would render what a model wrote.
EXAMPLE_TYPES = ["number", "str", "str", "str", "str", "number", "number", "number"]
# Fixed widths (of the table's width) with wrapped text: reference and both outputs always in view.
EXAMPLE_WIDTHS = ["6%", "25%", "14%", "17%", "17%", "7%", "7%", "7%"]
NO_RUNS = "No trained run yet. **Train a run first** (Train tab); when it has finished, it appears here."
PICK_RUN = "**Pick a run** above to see its evaluation, or to evaluate it."
CANCELLED = "*Evaluation cancelled: nothing was saved.*"
WAITING = "The results appear here when the evaluation finishes."
ROWS = re.compile(r"(\d+)/(\d+) rows")  # in evaluate_run's progress messages
SIDES = {"Base": "base model, adapter off", "Tuned": "tuned model, adapter on"}


class View(NamedTuple):
    """What the tab shows, in the order of the outputs wired in `eval_tab.build`."""

    status: str  # markdown: which run, when and how it was evaluated (server-made text only)
    summary: str  # HTML: the summary table (eval_cards.summary_html)
    counts: str  # markdown: wins / ties / losses
    delta_plot: dict  # gr.update for the delta chart
    confusion: dict  # gr.update for the confusion heatmap (hidden unless classification)
    cards: str  # HTML: one card per example, reference / base / tuned side by side
    examples: pd.DataFrame  # every example as a table (search, sort)
    downloads: dict  # gr.update clearing (and hiding) the files of a previous run


def run_title(run: Run) -> str:
    """The run as a person knows it, for Markdown: its name (with the id's time and tail), bold."""
    return f"**{run_name_md(run.label())}**"


def heldout_rows(run: Run) -> list[dict]:
    """The run's held-out rows (data/heldout.jsonl), or [] when it has none."""
    path = run.data_dir / "heldout.jsonl"
    return read_jsonl(path) if path.is_file() else []


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


def counts_text(comparison: Comparison, labels: tuple[str, str] = ("base", "tuned")) -> str:
    """Markdown line of per-example wins, ties and losses, or a note that text rows are compared by loss
    only; `labels` name the sides (A, B)."""
    a, b = (run_name_md(x) for x in labels)
    if comparison.examples.empty:
        return f"These held-out rows are plain text: {a} and {b} are compared by held-out loss only."
    measure = "correct label" if comparison.task == "classification" else "ROUGE-L"
    rows = len(comparison.examples)
    if comparison.task == "preference":
        measure = "ROUGE-L against the chosen answer"
    return (f"**Per example, {b} vs {a}** ({rows} rows, scored by {measure}): "
            f"**{comparison.wins}** wins · **{comparison.ties}** ties · **{comparison.losses}** losses")


def status_text(run: Run, comparison: Comparison, meta: dict) -> str:
    """Markdown line describing the saved evaluation: run, task, rows and their source, settings, timings."""
    facts = [f"Results for run {run_title(run)}", comparison.task.replace("_", " "), f"{comparison.rows} rows"]
    if meta.get("source") not in (None, "heldout"):
        facts[-1] += " from another data file"
    else:
        facts[-1] += " held out from training"
    if meta.get("generated_rows") is not None:
        facts.append(f"answers generated for the first {meta['generated_rows']}")
    labels = meta.get("labels") or {}
    if labels and side_words(meta) != ("base", "tuned"):
        facts.insert(1, f"side A: **{run_name_md(labels['a'])}**, side B: **{run_name_md(labels['b'])}**")
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
    return View(text, "", "", gr.update(value=None, visible=False), gr.update(value=None, visible=False), "",
                examples_frame(None), gr.update(value=None, visible=False))


def results_view(run: Run, comparison: Comparison, meta: dict, order: str, note: str = "") -> View:
    """The tab's View of a saved evaluation; `order` sorts the examples, `note` is appended to the status."""
    heatmap = confusion_heatmap(comparison)
    status = status_text(run, comparison, meta) + (f"\n\n{note}" if note else "")
    table = examples_frame(comparison.examples, order)
    labels = side_words(meta)
    counts = "  \n".join(t for t in (reward_lines(meta), counts_text(comparison, labels)) if t)
    return View(status, summary_html(comparison.summary, comparison.task, labels), counts,
                gr.update(value=delta_chart(comparison), visible=True),
                gr.update(value=heatmap, visible=heatmap is not None),
                cards_html(table, order, labels), table, gr.update(value=None, visible=False))


def not_evaluated_text(run: Run) -> str:
    """What to do for a run not evaluated yet (or why it cannot be: no held-out rows), in Markdown."""
    rows = heldout_rows(run)
    if not rows:
        return (f"Run {run_title(run)} has no held-out rows (it was trained with no held-out split), so there is "
                "nothing to evaluate it on. Train a run with a held-out fraction above 0.")
    loss_hint = " with **Also compute held-out loss** ticked (its rows are plain text)" if is_text_rows(rows) else ""
    return (f"Run {run_title(run)} has not been evaluated yet. Press **Evaluate**{loss_hint} to score base and "
            f"tuned on its {len(rows)} held-out rows.")


def progress_line(entry: EvalProgress | None) -> str:
    """Markdown saying how far the evaluation is, naming the run: rows done of all when the
    message counts rows, else what it is doing (loading the model, saving); "" for None."""
    if entry is None:
        return ""
    name = run_name_md(entry.name)
    counted = ROWS.search(entry.text)
    percent = f"{round(100 * entry.fraction)} % done"
    if counted:
        side = next((words for start, words in SIDES.items() if entry.text.startswith(start)), "")
        phase = "held-out loss, " if "loss" in entry.text else ""
        return (f"Evaluating **{name}**: {counted[1]} of {counted[2]} held-out rows… "
                f"({phase}{side} · {percent})")
    if entry.text.startswith("Done"):
        return f"Evaluating **{name}**: saving the results…"
    if entry.text:  # the model cache's messages: loading, loaded
        return f"Evaluating **{name}**: loading the model…"
    return f"Evaluating **{name}**: starting…"


__all__ = ["View", "ORDERS", "EXAMPLE_HEADERS", "EXAMPLE_TYPES", "EXAMPLE_WIDTHS", "NO_RUNS",
           "PICK_RUN", "CANCELLED", "WAITING", "run_title", "heldout_rows", "examples_frame",
           "counts_text", "status_text", "message_view", "results_view", "not_evaluated_text",
           "progress_line"]
