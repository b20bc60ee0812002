"""Which models a visitor may chat with: the Chat tab's model choices and the side it is compared with.

A choice is a key: ``run:<run id>`` (base + that run's adapter) or
``base:<model source>`` (the deployment's base model alone). A run answers in
the right pane (side B); the left pane (side A) answers as the side picked in
"Compare with": the base model, the run's parent (the default for a run that
has one), an ancestor, or another run on the same base model
(finetune_core/inference/sides.py). A pair other than the run's default is
loaded under the model key ``sides:<a>|<b>`` (`chat_key`). Only runs the
visitor may see (finetune_core/runs/ownership.py, showcase runs included) and the
deployment's own base model are offered, and a key sent by a client is checked
again before any model is loaded: anything else would be a model load of the
visitor's choosing.
"""
from __future__ import annotations

import gradio as gr

from finetune_core.inference.sides import default_sides, pair_key, side_choices
from finetune_core.runs.ownership import Visitor, can_view, visible_runs
from finetune_core.runs.store import RUN_ID_RE, Run, RunError, get_run

from .context import AppContext
from .widgets import run_choices as adapter_runs

BASE_PREFIX = "base:"
RUN_PREFIX = "run:"


def run_choices(default_model: str, who: Visitor | None = None) -> list[tuple[str, str]]:
    """Dropdown choices: runs with a saved adapter that `who` may see (newest first), then
    the base model alone."""
    choices = adapter_runs(who, lambda _run, summary: summary.get("state"), key=lambda run: RUN_PREFIX + run.id)
    choices.append((f"Base model only ({default_model})", BASE_PREFIX + default_model))
    return choices


def default_choice(choices: list[tuple[str, str]], run_id: str | None, picked: str | None = None,
                   current: str | None = None) -> str:
    """What the picker selects: the visitor's own pick while it is offered, else the shared run
    (the one the session trained or picked in another tab), else `current` when it is a run still
    offered (passed only when whether the visitor picked is unknown), else the newest run: the
    base model only when there is no run.

    >>> runs = [("new", "run:b"), ("old", "run:a"), ("Base model only", "base:m")]
    >>> default_choice(runs, None), default_choice(runs, "a"), default_choice(runs, "a", "base:m")
    ('run:b', 'run:a', 'base:m')
    >>> default_choice(runs, "", current="base:m"), default_choice(runs, "", current="run:a")
    ('run:b', 'run:a')
    """
    values = [v for _, v in choices]
    kept = current if isinstance(current, str) and current.startswith(RUN_PREFIX) else None
    for want in (picked, RUN_PREFIX + run_id if isinstance(run_id, str) and run_id else None, kept):
        if want in values:
            return want
    return values[0]


def check_model_key(ctx: AppContext, key, who: Visitor | None = None) -> str:
    """The model a chat request names, if this visitor may use it: a run they may see
    (showcase runs included), or the deployment's base model. Raises gr.Error."""
    if not isinstance(key, str):
        raise gr.Error("Pick a run or the base model first.")
    if key.startswith(RUN_PREFIX):
        run_id = key[len(RUN_PREFIX):]
        try:
            if RUN_ID_RE.match(run_id) and can_view(get_run(run_id).path, who or Visitor()):
                return key
        except RunError:
            pass
        raise gr.Error("That run does not exist: pick a run from the list.")
    if key == BASE_PREFIX + ctx.settings.default_model:
        return key
    # any other base model would be a model load of the visitor's choosing
    raise gr.Error("Pick a run or the base model from the list.")


def key_run(key, who: Visitor | None = None) -> Run | None:
    """The run a model key names (None for the base model or a run that is gone); with
    `who`, only a run that visitor may see (keys from the page are checked again)."""
    if not isinstance(key, str) or not key.startswith(RUN_PREFIX):
        return None
    try:
        run = get_run(key[len(RUN_PREFIX):])
    except RunError:
        return None
    return run if who is None or can_view(run.path, who) else None


# -- side A (the left pane) -------------------------------------------------------------------
def side_a_choices(key, who: Visitor | None = None) -> list[tuple[str, str]]:
    """What the run behind `key` may be compared with (the run itself left out: it is side B), among
    the runs `who` may see; [] for the base model alone or a run that is gone."""
    run = key_run(key, who or Visitor())
    if run is None:
        return []
    own = RUN_PREFIX + run.id
    return [(label, side) for label, side in side_choices(run, visible_runs(who or Visitor())) if side != own]


def side_a_default(key, choices: list[tuple[str, str]], picked=None) -> str | None:
    """The side A to select: the visitor's pick while it is offered, else the run's default side A."""
    values = [v for _, v in choices]
    if picked in values:
        return picked
    run = key_run(key)
    default = default_sides(run)[0] if run is not None else None
    return default if default in values else (values[0] if values else None)


def side_a_picker(key, who: Visitor | None = None, picked=None) -> gr.Dropdown:
    """The "Compare with" dropdown for a newly chosen model: its choices, the default selected, hidden
    for the base model alone."""
    choices = side_a_choices(key, who)
    return gr.Dropdown(choices=choices, value=side_a_default(key, choices, picked), visible=bool(choices))


def chat_pair(key, side_a) -> tuple[str, str] | None:
    """(side A, side B) when `key` names a run (side A: `side_a`, else the run's default); None for the
    base model alone."""
    run = key_run(key)
    if run is None:
        return None
    a = side_a if isinstance(side_a, str) and side_a else default_sides(run)[0]
    return a, RUN_PREFIX + run.id


def chat_key(key: str, side_a) -> str:
    """The model cache key for a chat: `key` itself for the base model alone or the run's default pair,
    else the pair's ``sides:`` key."""
    pair = chat_pair(key, side_a)
    if pair is None or pair == default_sides(key_run(key)):
        return key
    return pair_key(*pair)


def check_side_a(side_a, key, who: Visitor | None = None):
    """`side_a` when it is offered to this visitor for the model `key` (`side_a_choices`: the base
    model, the run's ancestors, runs they may see on the same base), or None for the run's default.
    Raises gr.Error for anything else."""
    if side_a in (None, ""):
        return None
    if side_a not in [value for _, value in side_a_choices(key, who)]:
        raise gr.Error("Pick what to compare with from the list.")
    return side_a
