"""The Chat tab's model picker: which model is offered and selected, and what a change resets.

The picker follows the run shared between tabs (the session's run), is
refreshed on page load and on demand, and a new model starts a new
conversation with that run's held-out prompts as examples.
"""
from __future__ import annotations

import gradio as gr

from finetune_core.inference import chat
from finetune_core.runs.ownership import Visitor

from .access import visitor
from .chat_models import RUN_PREFIX, default_choice, examples_for, run_choices
from .chat_panes import chatbots, session_of
from .chat_send import status_line
from .chat_votes import run_tally
from .context import AppContext
from .errors import shows_errors


@shows_errors
def refresh_runs(ctx: AppContext, current: str | None, run_id: str | None, request: gr.Request = None):
    """Refresh button: the run dropdown with a fresh list, keeping the shared run or the current pick when offered."""
    choices = run_choices(ctx.settings.default_model, visitor(request))
    return gr.Dropdown(choices=choices, value=default_choice(choices, run_id, current))


@shows_errors
def on_load(ctx: AppContext, run_id: str | None, current: str | None, request: gr.Request = None):
    """Page (re)load: fresh run list, the shared run preselected, its example prompts."""
    who = visitor(request)
    choices, value = _followed(ctx, run_id, current, who)
    samples = examples_for(value or "", who)
    return (gr.Dropdown(choices=choices, value=value), gr.Dataset(samples=samples or [[""]], visible=bool(samples)),
            status_line(ctx, value or ""), run_tally(value, request))


def _followed(ctx: AppContext, run_id: str | None, current: str | None,
              who: Visitor | None = None) -> tuple[list, str]:
    """Choices, and the shared run when it has an adapter (else the current pick, else the first)."""
    choices = run_choices(ctx.settings.default_model, who)
    values = [v for _, v in choices]
    value = RUN_PREFIX + run_id if run_id and RUN_PREFIX + run_id in values else current
    return choices, value if value in values else choices[0][1]


@shows_errors
def follow_shared_run(ctx: AppContext, run_id: str | None, current: str | None, request: gr.Request = None):
    """Another tab selected a run: pick it here too when it has an adapter."""
    choices, value = _followed(ctx, run_id, current, visitor(request))
    return gr.Dropdown(choices=choices, value=value)


@shows_errors
def change_model(ctx: AppContext, state, key: str, request: gr.Request = None):
    """A new model means a new conversation (each history belongs to its model)."""
    session = session_of(state)
    chat.clear(session)
    left, right = chatbots(session)
    key = key if isinstance(key, str) else ""
    samples = examples_for(key, visitor(request))
    examples = gr.Dataset(samples=samples or [[""]], visible=bool(samples))
    return (session, left, right, examples, gr.Row(visible=False), status_line(ctx, key or ""),
            run_tally(key, request))


@shows_errors
def pick_example(sample) -> str:
    """A Dataset click gives the row's values: one prompt."""
    if isinstance(sample, (list, tuple)):
        return str(sample[0]) if sample else ""
    return str(sample or "")
