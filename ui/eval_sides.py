"""The Evaluate tab's two sides: what the picked run is compared with, and where that pair's results live.

Side A fills the results' "base" columns and side B the "tuned" ones. Both
pickers offer the base model, the run, its parent(s) and the other runs on the
same base model that this visitor may see (finetune_core/inference/sides.py),
and default to the run's own pair: its parent vs the run when it has one, else
base vs the run. A pair is evaluated on the newer run's held-out rows and its
results are saved with that run (evaluation/pair_eval.py: eval/ for that run's
default pair, eval/pairs/<pair>/ for any other), so every page finds them there.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from evaluation.pair_eval import result_dir
from finetune_core.inference.sides import default_sides, newer_run, side_choices
from finetune_core.runs.ownership import Visitor, visible_runs
from finetune_core.runs.store import Run, RunError

from .widgets import open_run, run_name_md


def choices_for(run: Run, who: Visitor | None = None) -> list[tuple[str, str]]:
    """(label, side key) the visitor may pick for `run` (see the module docstring)."""
    return side_choices(run, visible_runs(who or Visitor()))


def pickers(run_id: str | None, who: Visitor | None = None) -> tuple[dict, dict]:
    """Updates of the side A and side B pickers for a newly picked run: its choices, its default pair
    selected (hidden while no run is picked)."""
    if not run_id:
        hidden = gr.update(choices=[], value=None, visible=False)
        return hidden, hidden
    run = open_run(run_id, visitor=who)
    choices, (a, b) = choices_for(run, who), default_sides(run)
    return (gr.update(choices=choices, value=a, visible=True), gr.update(choices=choices, value=b, visible=True))


def picked_pair(run: Run, a, b, who: Visitor | None = None) -> tuple[str, str] | None:
    """The pair the pickers ask for, checked against what this visitor may pick for `run` (gr.Error
    otherwise); None for the run's default pair or when a picker is empty."""
    if not a or not b:
        return None
    offered = {key for _, key in choices_for(run, who)}
    if a not in offered or b not in offered:
        raise gr.Error("Pick both sides from the lists.")
    if a == b:
        raise gr.Error("Side A and side B are the same model: pick two different ones.")
    return None if (a, b) == default_sides(run) else (a, b)


def results_home(run: Run, sides: tuple[str, str] | None) -> tuple[Run, tuple[str, str] | None, Path]:
    """(the run that holds the pair's results, the pair as that run sees it (None: its default), their
    folder): the newer run of the pair, else `run` itself."""
    if sides is None:
        return run, None, result_dir(run)
    try:
        home = newer_run(*sides, known={run.id: run}) or run
    except RunError as exc:
        raise gr.Error(str(exc)) from None
    pair = None if tuple(sides) == default_sides(home) else tuple(sides)
    return home, pair, result_dir(home, pair)


def side_words(meta: dict) -> tuple[str, str]:
    """How a saved evaluation names its sides on the page: base / tuned for a pair with the base model
    (or results saved before sides), else the two runs' labels."""
    labels, sides = meta.get("labels") or {}, meta.get("sides") or {}
    if not labels or sides.get("a") == "base":
        return "base", "tuned"
    return str(labels.get("a", "side A")), str(labels.get("b", "side B"))


def reward_lines(meta: dict) -> str:
    """Markdown: each side's reward accuracy in words (held-out preference pairs), or ""."""
    found = meta.get("reward_accuracy") or {}
    lines = [found[s]["sentence"] for s in ("a", "b") if isinstance(found.get(s), dict) and found[s].get("sentence")]
    return ("**Reward accuracy** (does the model give the chosen answer a higher log-likelihood than the "
            "rejected one?)  \n" + "  \n".join(run_name_md(line) for line in lines)) if lines else ""
