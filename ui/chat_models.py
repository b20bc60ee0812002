"""Which models a visitor may chat with: the Chat tab's model choices.

A choice is a key: ``run:<run id>`` (base + that run's adapter) or
``base:<model source>`` (the deployment's base model alone). Only runs the
visitor may see (finetune_core/runs/ownership.py, showcase runs included) and the
deployment's own base model are offered, and a key sent by a client is checked
again before any model is loaded: anything else would be a model load of the
visitor's choosing.
"""
from __future__ import annotations

import gradio as gr

from finetune_core.runs.ownership import Visitor, can_view
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
