"""The Chat tab's model picker: which model is offered and selected, and what a change resets.

The picker selects the latest run (with an adapter) this visitor may see, on
page load, on reload and when the tab is opened, unless the visitor picked
another model on this page (`default_choice`); the run shared between tabs
(trained or picked elsewhere in this session) comes before the latest. A new
model starts a new conversation with that run's held-out prompts as chips and
its prompt-template settings. Beside it, "Compare with" (`side_a_picker`)
picks what the left pane answers as; it resets to the run's default side
(its parent, else the base model) whenever the model changes, and a new side
also starts a new conversation (`change_side`).
"""
from __future__ import annotations

import gradio as gr

from finetune_core.inference import chat

from .access import visitor
from .chat_models import RUN_PREFIX, default_choice, run_choices, side_a_choices, side_a_default
from .chat_panes import chatbots, session_of
from .chat_prompts import chips, examples_for, prompt_controls
from .chat_send import set_sides, status_line
from .chat_votes import run_tally
from .context import AppContext
from .errors import shows_errors


def choices_and_value(ctx: AppContext, run_id, picked=None, current=None,
                      request: gr.Request | None = None) -> tuple[list[tuple[str, str]], str]:
    """A fresh list of what this visitor may chat with, and what to select (see default_choice)."""
    choices = run_choices(ctx.settings.default_model, visitor(request))
    return choices, default_choice(choices, run_id, picked, current)


def choose(ctx: AppContext, run_id, picked=None, current=None, request: gr.Request | None = None) -> gr.Dropdown:
    """The picker with a fresh list of what this visitor may chat with, and its selection (see default_choice)."""
    choices, value = choices_and_value(ctx, run_id, picked, current, request)
    return gr.Dropdown(choices=choices, value=value)


def model_view(ctx: AppContext, key, blind: bool = False, request: gr.Request | None = None,
               side_a=None) -> tuple:
    """What follows the chosen model: (chips, their prompts, wrap checkbox, single-turn checkbox,
    template note, status line, tally)."""
    who = visitor(request)
    key = key if isinstance(key, str) else ""
    examples = examples_for(key, who)
    return (chips(examples, key, who), examples, *prompt_controls(key, who, blind),
            status_line(ctx, key, blind=blind, side_a=side_a), run_tally(key, request, blind, side_a))


def side_picker(key, request: gr.Request | None = None, blind: bool = False) -> tuple[gr.Dropdown, str | None]:
    """(the "Compare with" dropdown for `key`, its value): the run's default side selected, hidden for
    the base model alone and in blind mode (it names the left pane's model). The value is returned
    apart: an update's attributes are not readable inside a running event."""
    choices = side_a_choices(key, visitor(request))
    value = side_a_default(key, choices)
    return gr.Dropdown(choices=choices, value=value, visible=bool(choices) and not blind), value


@shows_errors
def refresh_runs(ctx: AppContext, current: str | None, run_id: str | None, request: gr.Request = None,
                 picked=None):
    """Refresh button: a fresh list, keeping the visitor's pick (else the shared run, else the latest run)."""
    return choose(ctx, run_id, picked, current if picked is None else None, request)


@shows_errors
def on_load(ctx: AppContext, run_id: str | None, current: str | None = None, request: gr.Request = None):
    """Page (re)load: a fresh list with the shared run or the latest run selected, and what follows it.
    `current` (the value the page was built with) is not kept: a new page has picked nothing yet."""
    # the update's attributes are not readable inside a running event: keep the value apart
    choices, value = choices_and_value(ctx, run_id, "", None, request)
    picker, side_a = side_picker(value, request)
    return (gr.Dropdown(choices=choices, value=value), *model_view(ctx, value, False, request, side_a), picker)


@shows_errors
def follow_shared_run(ctx: AppContext, run_id: str | None, current: str | None, request: gr.Request = None,
                      picked: str | None = None):
    """The tab was opened, or another tab (or the guided demo) selected a run: a fresh list with the
    visitor's own pick kept, else the shared run, else the latest run. `picked` is the key the visitor
    chose here ("" for none); without it, a run in `current` is kept as if picked."""
    return choose(ctx, run_id, picked, current if picked is None else None, request)


@shows_errors
def follow_new_shared_run(ctx: AppContext, run_id: str | None, current: str | None = None,
                          request: gr.Request = None):
    """The session's shared run changed (trained, or picked in another tab): it is the newer wish,
    so it replaces the visitor's earlier pick here (`current` included). Returns (picker, pick)."""
    return choose(ctx, run_id, "", None, request), ""


@shows_errors
def remember_pick(key):
    """The visitor chose a model in the picker: keep it as their pick, and share a run with the
    other tabs as Evaluate and Export do. Returns (pick, shared run)."""
    key = key if isinstance(key, str) else ""
    return key, key[len(RUN_PREFIX):] if key.startswith(RUN_PREFIX) else gr.skip()


@shows_errors
def change_model(ctx: AppContext, state, key: str, blind: bool = False, request: gr.Request = None):
    """A new model means a new conversation (each history belongs to its model) and its own chips,
    template settings, status, tally and "Compare with" choices (its default side selected)."""
    session = session_of(state)
    chat.clear(session)
    picker, side_a = side_picker(key, request, bool(blind))
    set_sides(session, key if isinstance(key, str) else "", side_a)
    left, right = chatbots(session)
    return (session, left, right, gr.Row(visible=False), *model_view(ctx, key, bool(blind), request, side_a),
            picker)


@shows_errors
def change_side(ctx: AppContext, state, key: str, side_a, blind: bool = False, request: gr.Request = None):
    """The visitor picked what the left pane answers as: a new conversation between the new pair, with
    its pane labels, status and tally. Returns (session, left, right, vote row, status, tally)."""
    from .chat_models import check_side_a

    session = session_of(state)
    side_a = check_side_a(side_a, key, visitor(request))
    chat.clear(session)
    set_sides(session, key if isinstance(key, str) else "", side_a)
    left, right = chatbots(session)
    return (session, left, right, gr.Row(visible=False), status_line(ctx, key, blind=bool(blind), side_a=side_a),
            run_tally(key, request, bool(blind), side_a))
