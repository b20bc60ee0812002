"""Chat tab: one message, base and tuned answering side by side, token by token.

Pick a run (its adapter is switched on for the tuned pane and off for the
base pane: one copy of the weights) or the base model alone. Blind A/B mode
hides which pane is which, collects votes, shows the tuned win rate and
exports the votes as DPO preference pairs. All conversation state is a
`finetune_core.inference.chat.ChatSession` in a per-browser `gr.State`; the handlers
below are plain functions (tests call them directly), wired in `build`.
"""
from __future__ import annotations

import functools

import gradio as gr

from finetune_core.inference import chat
from finetune_core.inference.chat_limits import TokenCounter, check_chat_request, clean_text
from finetune_core.inference.generation import GenSettings
from finetune_core.inference.votes import load_votes
from finetune_core.limits import limits
from finetune_core.errors import StudioError
from finetune_core.retention import fresh_folder, gradio_cache_dir
from finetune_core.runs.ownership import Visitor

from .access import visitor
from .chat_models import (BASE_PREFIX, RUN_PREFIX, check_model_key, default_choice, examples_for, key_run,
                          run_choices)
from .context import GPU_QUEUE, AppContext, ChatParts, Shared
from .errors import page_error, shows_errors
from .widgets import with_ctx

VOTE_LABELS = {"left": "👈 Left is better", "right": "Right is better 👉", "tie": "🤝 Tie", "both_bad": "👎 Both bad"}


# -- helpers ----------------------------------------------------------------------
def _session(value) -> chat.ChatSession:
    """The session in a gr.State, created on first use (a State's initial value is
    deep-copied per browser, and the session holds a threading.Event, which cannot be)."""
    return value if isinstance(value, chat.ChatSession) else chat.ChatSession()


def _labels(blind: bool) -> tuple[str, str]:
    return ("A", "B") if blind else ("Base", "Tuned")


def _tally_markdown(votes: list[dict]) -> str:
    t = chat.tally(votes)
    if not t["votes"]:
        return "No votes yet. Turn on blind A/B mode, chat, and vote after each answer."
    rate = "n/a" if t["tuned_win_rate"] is None else f"{100 * t['tuned_win_rate']:.0f}%"
    return (f"**Tuned win rate: {rate}** over {t['tuned'] + t['base']} decided votes — "
            f"tuned {t['tuned']} · base {t['base']} · tie {t['tie']} · both bad {t['both_bad']}")


def run_tally(key, request: gr.Request | None = None) -> str:
    """The tally of the chosen run's saved votes (votes.jsonl): what a reloaded page shows."""
    run = key_run(key, visitor(request))
    return _tally_markdown(load_votes(run)[0] if run is not None else [])


def gpu_busy_message(ctx: AppContext) -> str:
    """Why chat cannot run now: a training job holds the only GPU. Empty when chat can run."""
    run = ctx.slot.gpu_run()
    if run is None:
        return ""  # idle, or CPU training: chat shares the cores, slower but working
    return (f"Chat is paused: training run {run.id} is using the GPU. "
            "It resumes when the run finishes or is stopped (Train tab).")


def _status(ctx: AppContext, key: str, extra: str = "") -> str:
    busy = gpu_busy_message(ctx)
    if busy:
        return f"⏳ {busy}"
    if ctx.slot.active() is not None:
        extra = (extra + " " if extra else "") + "A training job is running on the CPU: answers come slower."
    who = "base model only" if key.startswith(BASE_PREFIX) else f"run `{key[len(RUN_PREFIX):]}`"
    return f"Chatting with {who}. {extra}".strip()


def _settings(temperature, top_p, max_new_tokens, seed) -> GenSettings:
    return GenSettings(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                       top_p=float(top_p), seed=int(seed or 0))


def _panes_with(session: chat.ChatSession, message: str) -> tuple[list[dict], list[dict]]:
    """Both panes plus a user message not yet part of the conversation (sent, not answered)."""
    left, right = chat.panes(session)
    user = {"role": "user", "content": message}
    return left + [user], right + [dict(user)]


def _chatbots(session: chat.ChatSession):
    left, right = chat.panes(session)
    a, b = _labels(session.blind)
    return gr.Chatbot(value=left, label=a), gr.Chatbot(value=right, label=b)


# -- handlers ---------------------------------------------------------------------
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
            _status(ctx, value or ""), run_tally(value, request))


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
    session = _session(state)
    chat.clear(session)
    left, right = _chatbots(session)
    key = key if isinstance(key, str) else ""
    samples = examples_for(key, visitor(request))
    examples = gr.Dataset(samples=samples or [[""]], visible=bool(samples))
    return (session, left, right, examples, gr.Row(visible=False), _status(ctx, key or ""),
            run_tally(key, request))


@shows_errors
def toggle_blind(state, blind: bool):
    """Blind checkbox: switch mode and relabel the panes; the vote row shows only while a blind turn awaits a vote."""
    session = _session(state)
    chat.set_blind(session, blind)
    left, right = _chatbots(session)
    return session, left, right, gr.Row(visible=session.pending is not None)


def _counter(ctx: AppContext, key: str) -> TokenCounter | None:
    """A token counter for the chosen model, or None when its tokenizer cannot be loaded
    (the streaming step then counts with the loaded model, or reports the load error)."""
    if not (key == BASE_PREFIX + ctx.settings.default_model or str(key).startswith(RUN_PREFIX)):
        return None  # never load the tokenizer of a model the deployment does not offer
    try:
        return ctx.models.counter(key)
    except StudioError:  # a bug is not hidden: it reaches the page as an internal error
        return None


def admit_turn(ctx: AppContext, session: chat.ChatSession, key: str, message: str, system,
               max_new_tokens, request: gr.Request | None) -> str:
    """Check a turn against the limits and take a generation slot for its visitor, before
    the turn waits in the GPU queue. Returns the cleaned message; raises gr.Error."""
    try:
        # Characters first: a 1 MB message is refused without loading a tokenizer or tokenizing it.
        message, system = check_chat_request(message, system, max_new_tokens)
        check_chat_request(message, system, None, _counter(ctx, key))
        # Counted per visitor and per page session: a client that drops the visitor cookie
        # gets a new visitor key on each request, but keeps its session.
        page = f"session:{request.session_hash}" if getattr(request, "session_hash", None) else ""
        ticket = ctx.chat_slots.acquire(visitor(request).key, page)
        ticket.model = key
        session.tickets.append(ticket)
    except StudioError as exc:  # LimitError, InputError
        raise gr.Error(str(exc)) from None
    return message


@shows_errors
def begin_send(ctx: AppContext, state, message: str, key: str, blind: bool, system: str | None = None,
               max_new_tokens=None, request: gr.Request = None):
    """Fast first step of a send: check, show the user message, clear the box.
    The message travels to the streaming step through a State; the turn is admitted
    here (limits, one generation slot of the visitor's) and never reaches the queue
    when refused."""
    message = clean_text(message).strip()  # a lone surrogate cannot be sent back to the page
    if not message:
        raise gr.Error("Type a message first.")
    if not key:
        raise gr.Error("Pick a run or the base model first.")
    key = check_model_key(ctx, key, visitor(request))  # a run this visitor may see, or the base model
    if blind and key.startswith(BASE_PREFIX):
        raise gr.Error("Blind A/B compares base and tuned: pick a run with an adapter.")
    busy = gpu_busy_message(ctx)
    if busy:
        raise gr.Error(busy)
    session = _session(state)
    message = admit_turn(ctx, session, key, message, system, max_new_tokens, request)
    chat.arm_cancel(session)  # armed at click time: Stop while queued still cancels this turn
    chat.set_blind(session, blind)
    left, right = _panes_with(session, message)
    return session, "", message, left, right, gr.Row(visible=False)


@shows_errors
def stream_reply(ctx: AppContext, state, message: str, key: str, system: str,
                 temperature, top_p, max_new_tokens, seed):
    """Streaming step (GPU queue): load the model if needed, then yield both panes per token.
    Runs only a turn begin_send admitted (a second call of this step alone runs nothing),
    and gives the visitor's slot back however the turn ends: finished, failed, stopped,
    or closed by the server when the page goes away."""
    session = _session(state)
    ticket = session.tickets.pop(0) if session.tickets else None
    # only the model begin_send checked for this visitor: a direct call cannot swap in another run
    if ticket is None or ticket.model != key or not ticket.claim() or not message:
        if ticket is not None:
            ticket.release()
        yield *chat.panes(session), _status(ctx, key), gr.Row(visible=False)
        return
    try:
        yield from _reply(ctx, session, message, key, system, temperature, top_p, max_new_tokens, seed)
    finally:
        ticket.release()


def _context_note(session: chat.ChatSession) -> str:
    if not session.first_turn:
        return ""
    lim = limits()
    return (f"The models no longer see turns 1–{session.first_turn}: the conversation is over this server's "
            f"{lim.chat_context_tokens:,}-token limit per turn (setting {lim.setting('chat_context_tokens')}). "
            "Clear starts afresh.")


def _reply(ctx: AppContext, session: chat.ChatSession, message: str, key: str, system: str,
           temperature, top_p, max_new_tokens, seed):
    """The body of an admitted turn (see stream_reply)."""
    try:  # the system prompt box is read again here: check it before anything is loaded
        message, system = check_chat_request(message, system, max_new_tokens)
    except StudioError as exc:
        yield *chat.panes(session), _status(ctx, key), gr.skip()  # take down the unsent message
        raise gr.Error(str(exc)) from None
    session.system_prompt = system
    if session.cancel.is_set():  # Stop was pressed while the turn waited in the queue
        yield *chat.panes(session), _status(ctx, key, "Stopped before it started."), gr.skip()
        return
    busy = gpu_busy_message(ctx)  # the job may have started while this turn was queued
    if busy:
        yield *chat.panes(session), f"⏳ {busy}", gr.skip()
        raise gr.Error(busy)
    # Until the turn opens, keep showing the message begin_send put up (no flicker).
    yield *_panes_with(session, message), "Loading the model (its first use takes a few seconds)...", gr.skip()
    failure = None
    try:
        model = ctx.models.get(key)
        session.run = key_run(key)  # votes on this turn go to this run's votes.jsonl (key checked in begin_send)
        settings = _settings(temperature, top_p, max_new_tokens, seed)
        status_text = "Generating... (Stop keeps what has arrived)"
        for _ in chat.stream_chat(model, session, message, settings, session.cancel):
            left, right = chat.panes(session)
            yield left, right, status_text, gr.skip()
            status_text = gr.skip()  # sent once: each token then only updates the panes
    except Exception as exc:  # noqa: BLE001 - shown after the rollback below; a bug is logged (page_error)
        failure = page_error(exc, "chat generation")
    if failure is not None:
        left, right = chat.panes(session)  # the failed turn was rolled back: show that
        yield left, right, _status(ctx, key), gr.skip()
        raise failure
    left, right = chat.panes(session)
    yield left, right, _status(ctx, key, _context_note(session)), gr.Row(visible=session.pending is not None)


@shows_errors
def stop_chat(state) -> None:
    """Stop button (no concurrency limit): stop the turn in progress or queued, keeping what has streamed so far."""
    if isinstance(state, chat.ChatSession):
        chat.stop(state)


@shows_errors
def clear_chat(state):
    """Clear button: empty both panes and hide the vote row; saved votes are kept."""
    session = _session(state)
    chat.clear(session)
    left, right = _chatbots(session)
    return session, left, right, gr.Row(visible=False)


@shows_errors
def cast_vote(state, choice: str):
    """Vote button (`choice` bound in build): save it to the run's votes.jsonl, reveal the sides, update the tally."""
    session = _session(state)
    try:
        vote = chat.record_vote(session, choice)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    revealed = "tuned" if vote["tuned_side"] == "left" else "base"
    note = f"Vote saved. Left was **{revealed}**, right was **{'base' if revealed == 'tuned' else 'tuned'}**."
    return session, _tally_markdown(chat.saved_votes(session)), gr.Row(visible=False), note


@shows_errors
def export_votes(state, key=None, request: gr.Request = None):
    """The decided votes as DPO pairs in a fresh file: the chosen run's saved votes
    (votes.jsonl, so earlier sessions' votes count too), else this session's."""
    session = _session(state)
    run = key_run(key, visitor(request)) if key else session.run
    votes = load_votes(run)[0] if run is not None else session.votes
    if not any(v["winner"] in ("tuned", "base") for v in votes):
        gr.Warning("No decided votes to export yet (ties and 'both bad' make no preference pair).")
        return None
    # A fresh server-made folder per export: users never share or name files.
    # Inside Gradio's cache: served without a copy, and swept by the retention settings.
    path = fresh_folder(gradio_cache_dir(), "studio-votes-") / "preferences.jsonl"
    count = chat.export_preferences(votes, path)
    gr.Info(f"Exported {count} preference pairs (prompt / chosen / rejected, TRL DPO format).")
    return str(path)


@shows_errors
def pick_example(sample) -> str:
    """A Dataset click gives the row's values: one prompt."""
    if isinstance(sample, (list, tuple)):
        return str(sample[0]) if sample else ""
    return str(sample or "")


# -- layout and wiring ----------------------------------------------------------
def build(ctx: AppContext, shared: Shared) -> ChatParts:
    """Build the Chat tab inside the caller's `gr.Tab`; its model picker follows shared.run_state."""
    choices = run_choices(ctx.settings.default_model)
    first = default_choice(choices, shared.run_state.value)
    session_state = gr.State(None)
    message_state = gr.State("")

    gr.Markdown("Send one message to the base model (left) and the tuned model (right); both answer "
                "token by token. Blind A/B mode hides which is which so you can vote fairly.")
    with gr.Row():
        run_dd = gr.Dropdown(choices=choices, value=first, label="Model", scale=4)
        refresh = gr.Button("↻ Refresh runs", scale=1)
        blind = gr.Checkbox(value=False, label="Blind A/B mode", scale=1)
    status = gr.Markdown(_status(ctx, first))
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
    with gr.Row(visible=False) as vote_row:
        vote_buttons = {c: gr.Button(label) for c, label in VOTE_LABELS.items()}
    with gr.Row():
        message = gr.Textbox(show_label=False, placeholder="Message both models...", scale=6, lines=1,
                             elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1)
        clear_btn = gr.Button("Clear", scale=1)
    samples = examples_for(first)
    examples = gr.Dataset(components=[message], samples=samples or [[""]], label="Held-out prompts (click to send)",
                          visible=bool(samples))
    with gr.Row():
        tally_md = gr.Markdown(run_tally(first))
        export_btn = gr.Button("Export votes (JSONL)", scale=0)
    export_file = gr.File(label="Preference pairs", interactive=False)

    bound = functools.partial
    private = {"api_visibility": "private"}  # UI plumbing, not part of the app's API
    begin = dict(fn=with_ctx(begin_send, ctx), inputs=[session_state, message, run_dd, blind, system, max_new],
                 outputs=[session_state, message, message_state, left, right, vote_row])
    reply = dict(fn=with_ctx(stream_reply, ctx),
                 inputs=[session_state, message_state, run_dd, system, temperature, top_p, max_new, seed],
                 outputs=[left, right, status, vote_row], concurrency_id=GPU_QUEUE, concurrency_limit=1,
                 show_progress="minimal")
    gr.on([send.click, message.submit], **begin, api_name="chat_send").success(**reply, api_name="chat_stream")
    examples.click(pick_example, [examples], [message], **private).then(**begin, **private).success(
        **reply, **private)
    stop.click(stop_chat, [session_state], None, concurrency_limit=None, api_name="chat_stop")
    clear_btn.click(clear_chat, [session_state], [session_state, left, right, vote_row], api_name="chat_clear")
    blind.change(toggle_blind, [session_state, blind], [session_state, left, right, vote_row], **private)
    run_dd.change(with_ctx(change_model, ctx), [session_state, run_dd],
                  [session_state, left, right, examples, vote_row, status, tally_md], **private)
    run_state = shared.run_state
    refresh.click(with_ctx(refresh_runs, ctx), [run_dd, run_state], [run_dd], **private)
    run_state.change(with_ctx(follow_shared_run, ctx), [run_state, run_dd], [run_dd], **private)
    # refresh the run list on each page load
    shared.blocks.load(with_ctx(on_load, ctx), [run_state, run_dd], [run_dd, examples, status, tally_md], **private)
    for choice, button in vote_buttons.items():
        button.click(bound(cast_vote, choice=choice), [session_state],
                     [session_state, tally_md, vote_row, status], api_name=f"chat_vote_{choice}")
    export_btn.click(export_votes, [session_state, run_dd], [export_file], api_name="chat_export_votes")
    return ChatParts(run=run_dd, message=message)
