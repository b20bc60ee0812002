"""Chat tab: one message, two models answering side by side, token by token.

Pick a run (its adapter is switched on for the tuned pane and off for the
base pane: one copy of the weights) or the base model alone. "Compare with"
picks what the left pane answers as: the base model, the run's parent (the
default when it has one), an ancestor, or another run on the same base; the
panes, the tally and the blind reveal then name both runs. Blind A/B mode
hides which pane is which, collects votes, shows the tuned win rate and
exports the votes as DPO preference pairs. All conversation state is a
`finetune_core.inference.chat.ChatSession` in a per-browser `gr.State`. The
handlers are plain functions (tests call them directly), one module per
concept: chat_picker (the model picker), chat_prompts (the run's prompt
template, single turn, example chips), chat_send (a turn), chat_votes (blind
A/B), chat_panes (the panes); this module lays the tab out and wires it, and
re-exports the handlers under their old names.
"""
from __future__ import annotations

import functools

import gradio as gr

from finetune_core.limits import limits

from .chat_models import check_model_key, default_choice, run_choices
from .chat_picker import (change_model, change_side, follow_new_shared_run, follow_shared_run, on_load,
                          refresh_runs, remember_pick)
from .chat_prompts import SINGLE_LABEL, WRAP_LABEL, examples_for, pick_example
from .chat_send import (admit_turn, begin_send, clear_chat, gpu_busy_message, status_line, stop_chat,
                        stream_reply)
from .chat_votes import INTRO, VOTE_LABELS, cast_vote, export_votes, run_tally, toggle_blind
from .context import GPU_QUEUE, AppContext, ChatParts, Shared
from .widgets import with_ctx

__all__ = ["build", "follow_shared_run", "on_load", "refresh_runs", "change_model", "change_side", "pick_example",
           "begin_send", "stream_reply", "admit_turn", "stop_chat", "clear_chat", "gpu_busy_message",
           "toggle_blind", "cast_vote", "export_votes", "run_tally", "run_choices", "check_model_key",
           "default_choice", "examples_for", "VOTE_LABELS"]


# -- layout and wiring ----------------------------------------------------------
def build(ctx: AppContext, shared: Shared) -> ChatParts:
    """Build the Chat tab inside the caller's `gr.Tab`; its model picker follows shared.run_state."""
    choices = run_choices(ctx.settings.default_model)
    first = default_choice(choices, shared.run_state.value)  # the first paint; each page load picks again
    session_state, message_state = gr.State(None), gr.State("")
    picked_state = gr.State("")  # the model the visitor chose here ("" until they do): kept over the latest run
    examples_state = gr.State([])  # the chips' [whole prompt, typed text] pairs, filled per visitor on load

    intro = gr.Markdown(INTRO, elem_id="chat-intro")
    with gr.Row():
        run_dd = gr.Dropdown(choices=choices, value=first, label="Model", scale=4, elem_id="chat-model")
        refresh = gr.Button("↻ Refresh runs", scale=1)
        blind = gr.Checkbox(value=False, label="Blind A/B mode", scale=1, elem_id="chat-blind")
    # what the left pane answers as; filled per visitor with the model (hidden for the base model alone)
    side_dd = gr.Dropdown(choices=[], value=None, visible=False, label="Compare with (left pane)",
                          allow_custom_value=True, elem_id="chat-side-a")  # checked again: check_side_a
    with gr.Row():
        wrap = gr.Checkbox(value=False, visible=False, label=WRAP_LABEL, elem_id="chat-wrap")
        single = gr.Checkbox(value=False, label=SINGLE_LABEL, elem_id="chat-single")
    note = gr.Markdown(visible=False, elem_id="chat-template-note")
    status = gr.Markdown(status_line(ctx, first), elem_id="chat-status")
    with gr.Accordion("Generation settings", open=False):
        system = gr.Textbox(label="System prompt", lines=2, placeholder="Optional, e.g. 'Answer in one sentence.'")
        with gr.Row():
            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
            cap = limits().max_new_tokens  # the server's limit (STUDIO_LIMIT_MAX_NEW_TOKENS)
            max_new = gr.Slider(1, cap, value=min(128, cap), step=1, label="Max new tokens")
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**31 - 1, label="Seed")
    with gr.Row(equal_height=True):
        left = gr.Chatbot(label="Base", height=420, elem_id="chat-left")
        right = gr.Chatbot(label="Tuned", height=420, elem_id="chat-right")
    with gr.Row(visible=False, elem_id="chat-votes") as vote_row:
        vote_buttons = {c: gr.Button(label, elem_id=f"chat-vote-{c}") for c, label in VOTE_LABELS.items()}
    with gr.Row():
        message = gr.Textbox(show_label=False, placeholder="Message both models...", scale=6, lines=1,
                             elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1)
        clear_btn = gr.Button("Clear", scale=1)
    examples = gr.Dataset(components=[message], samples=[[""]], type="index", visible=False,
                          label="Held-out prompts (click to send)", elem_id="chat-examples")
    with gr.Row():
        tally_md = gr.Markdown(run_tally(first), elem_id="chat-tally")
        export_btn = gr.Button("Export votes (JSONL)", scale=0)
    export_file = gr.File(label="Preference pairs", interactive=False)

    bound = functools.partial
    private = {"api_visibility": "private"}  # UI plumbing, not part of the app's API
    begin = dict(fn=with_ctx(begin_send, ctx),
                 inputs=[session_state, message, run_dd, blind, system, max_new, wrap, single, side_dd],
                 outputs=[session_state, message, message_state, left, right, vote_row])
    reply = dict(fn=with_ctx(stream_reply, ctx),
                 inputs=[session_state, message_state, run_dd, system, temperature, top_p, max_new, seed, side_dd],
                 outputs=[left, right, status, vote_row], concurrency_id=GPU_QUEUE, concurrency_limit=1,
                 show_progress="minimal")
    gr.on([send.click, message.submit], **begin, api_name="chat_send").success(**reply, api_name="chat_stream")
    examples.click(pick_example, [examples, examples_state, wrap], [message], **private).then(
        **begin, **private).success(**reply, **private)
    stop.click(stop_chat, [session_state], None, concurrency_limit=None, api_name="chat_stop")
    clear_btn.click(clear_chat, [session_state], [session_state, left, right, vote_row], api_name="chat_clear")
    blind.change(with_ctx(toggle_blind, ctx), [session_state, blind, run_dd, side_dd],
                 [session_state, left, right, vote_row, intro, status, note, tally_md, run_dd, side_dd], **private)
    view = [examples, examples_state, wrap, single, note, status, tally_md]  # what follows the chosen model
    run_dd.change(with_ctx(change_model, ctx), [session_state, run_dd, blind],
                  [session_state, left, right, vote_row, *view, side_dd], **private)
    # .input: the visitor's own pick (a new model resets side A without starting a second conversation)
    side_dd.input(with_ctx(change_side, ctx), [session_state, run_dd, side_dd, blind],
                  [session_state, left, right, vote_row, status, tally_md], **private)
    run_state = shared.run_state
    run_dd.input(remember_pick, [run_dd], [picked_state, run_state], **private)
    refresh.click(with_ctx(refresh_runs, ctx), [run_dd, run_state, picked_state], [run_dd], **private)
    run_state.change(with_ctx(follow_new_shared_run, ctx), [run_state, run_dd], [run_dd, picked_state], **private)
    # each page load: a fresh run list, the latest run selected (a new visitor or a reload picked nothing yet)
    shared.blocks.load(with_ctx(on_load, ctx), [run_state, run_dd], [run_dd, *view, side_dd], **private)
    for choice, button in vote_buttons.items():
        button.click(bound(cast_vote, choice=choice), [session_state],
                     [session_state, tally_md, vote_row, status], api_name=f"chat_vote_{choice}")
    export_btn.click(export_votes, [session_state, run_dd, side_dd], [export_file], api_name="chat_export_votes")
    return ChatParts(run=run_dd, message=message, picked=picked_state)
