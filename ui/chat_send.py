"""Sending a chat turn: check it, admit it, stream both answers, stop or clear.

A send is two events (see chat_tab.build): `begin_send` is fast (checks, shows
the user message, takes a generation slot for the visitor) and `stream_reply`
runs in the GPU queue, yielding both panes per token. Plain functions: tests
call them directly.
"""
from __future__ import annotations

import gradio as gr

from finetune_core.errors import StudioError
from finetune_core.inference import chat
from finetune_core.inference.chat_limits import TokenCounter, check_chat_request, clean_text
from finetune_core.inference.generation import GenSettings
from finetune_core.limits import limits

from .access import visitor
from .chat_models import BASE_PREFIX, RUN_PREFIX, chat_key, chat_pair, check_model_key, check_side_a, key_run
from .chat_panes import chatbots, panes_with, session_of
from .chat_prompts import side_templates
from .context import AppContext
from .errors import page_error, shows_errors


def gpu_busy_message(ctx: AppContext) -> str:
    """Why chat cannot run now: a training job holds the only GPU. Empty when chat can run."""
    run = ctx.queue.gpu_run()
    if run is None:
        return ""  # idle, or CPU training: chat shares the cores, slower but working
    return (f"Chat is paused: training run {run.id} is using the GPU. "
            "It resumes when the run finishes or is stopped (Train tab).")


def status_line(ctx: AppContext, key: str, extra: str = "", blind: bool = False, side_a=None) -> str:
    """The line under the picker: whom the visitor chats with (in blind mode only that the sides
    are hidden), and why answers are paused or slow."""
    busy = gpu_busy_message(ctx)
    if busy:
        return f"⏳ {busy}"
    if ctx.queue.running() is not None:
        extra = (extra + " " if extra else "") + "A training job is running on the CPU: answers come slower."
    if blind:
        return (f"Blind A/B: Model A and Model B answer each message, on sides drawn at random each turn; "
                f"which is which is shown after your vote. {extra}").strip()
    run = key_run(key) if isinstance(key, str) else None
    who = f"run “{run.name}”" if run is not None else "the base model only"
    pair = chat_pair(key, side_a)
    if pair is not None and pair[0] != "base":
        left = key_run(pair[0])
        who += f" (right) and run “{left.name if left else pair[0]}” (left)"
    return f"Chatting with {who}. {extra}".strip()


def _settings(temperature, top_p, max_new_tokens, seed) -> GenSettings:
    return GenSettings(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                       top_p=float(top_p), seed=int(seed or 0))


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
               max_new_tokens=None, request: gr.Request = None, wrap: bool = False, single_turn: bool = False,
               side_a=None):
    """Fast first step of a send: check, show the user message, clear the box.
    The message travels to the streaming step through a State; the turn is admitted
    here (limits, one generation slot of the visitor's) and never reaches the queue
    when refused. `wrap` puts the message in the run's prompt template on both sides;
    `single_turn` sends it without the earlier turns; `side_a` is what the left pane
    answers as (default: the run's default side, see chat_models)."""
    message = clean_text(message).strip()  # a lone surrogate cannot be sent back to the page
    if not message:
        raise gr.Error("Type a message first.")
    if not key:
        raise gr.Error("Pick a run or the base model first.")
    key = check_model_key(ctx, key, visitor(request))  # a run this visitor may see, or the base model
    side_a = check_side_a(side_a, key, visitor(request))
    if blind and key.startswith(BASE_PREFIX):
        raise gr.Error("Blind A/B compares base and tuned: pick a run with an adapter.")
    busy = gpu_busy_message(ctx)
    if busy:
        raise gr.Error(busy)
    session = session_of(state)
    message = admit_turn(ctx, session, chat_key(key, side_a), message, system, max_new_tokens, request)
    chat.arm_cancel(session)  # armed at click time: Stop while queued still cancels this turn
    chat.set_blind(session, blind)
    session.base_template, session.tuned_template = side_templates(key, bool(wrap), visitor(request))
    session.single_turn = bool(single_turn)
    set_sides(session, key, side_a)
    left, right = panes_with(session, message)
    return session, "", message, left, right, gr.Row(visible=False)


@shows_errors
def stream_reply(ctx: AppContext, state, message: str, key: str, system: str,
                 temperature, top_p, max_new_tokens, seed, side_a=None):
    """Streaming step (GPU queue): load the model if needed, then yield both panes per token.
    Runs only a turn begin_send admitted (a second call of this step alone runs nothing),
    and gives the visitor's slot back however the turn ends: finished, failed, stopped,
    or closed by the server when the page goes away."""
    session = session_of(state)
    ticket = session.tickets.pop(0) if session.tickets else None
    # only the model begin_send checked for this visitor: a direct call cannot swap in another run
    model_key = chat_key(key, side_a) if isinstance(key, str) else key
    if ticket is None or ticket.model != model_key or not ticket.claim() or not message:
        if ticket is not None:
            ticket.release()
        yield *chat.panes(session), status_line(ctx, key, blind=session.blind, side_a=side_a), gr.Row(visible=False)
        return
    try:
        yield from _reply(ctx, session, message, key, system, temperature, top_p, max_new_tokens, seed, side_a)
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
           temperature, top_p, max_new_tokens, seed, side_a=None):
    """The body of an admitted turn (see stream_reply)."""
    try:  # the system prompt box is read again here: check it before anything is loaded
        message, system = check_chat_request(message, system, max_new_tokens)
    except StudioError as exc:
        yield *chat.panes(session), status_line(ctx, key, blind=session.blind, side_a=side_a), gr.skip()  # take down the unsent message
        raise gr.Error(str(exc)) from None
    session.system_prompt = system
    if session.cancel.is_set():  # Stop was pressed while the turn waited in the queue
        yield *chat.panes(session), status_line(ctx, key, "Stopped before it started.", session.blind, side_a), gr.skip()
        return
    busy = gpu_busy_message(ctx)  # the job may have started while this turn was queued
    if busy:
        yield *chat.panes(session), f"⏳ {busy}", gr.skip()
        raise gr.Error(busy)
    # Until the turn opens, keep showing the message begin_send put up (no flicker).
    yield *panes_with(session, message), "Loading the model (its first use takes a few seconds)...", gr.skip()
    failure = None
    try:
        model = ctx.models.get(chat_key(key, side_a))  # what begin_send checked: a run (and side A) or the base
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
        yield left, right, status_line(ctx, key, blind=session.blind, side_a=side_a), gr.skip()
        raise failure
    left, right = chat.panes(session)
    done = status_line(ctx, key, _context_note(session), session.blind, side_a)
    yield left, right, done, gr.Row(visible=session.pending is not None)


def set_sides(session: chat.ChatSession, key: str, side_a=None) -> None:
    """What the session's panes are: the run whose votes.jsonl keeps the votes (the newer run of the
    pair), the sides' model ids, and the pane labels (Base / Tuned, or the two runs' names)."""
    from finetune_core.inference.sides import BASE, pair_labels, vote_target

    pair = chat_pair(key, side_a)
    if pair is None:  # the base model alone: nothing to vote on
        session.run, session.models, session.side_labels = None, None, ("Base", "Tuned")
        return
    session.run, session.models = vote_target(*pair)
    labels = pair_labels(*pair)
    session.side_labels = ("Base", "Tuned") if pair[0] == BASE else (labels[False], labels[True])


@shows_errors
def stop_chat(state) -> None:
    """Stop button (no concurrency limit): stop the turn in progress or queued, keeping what has streamed so far."""
    if isinstance(state, chat.ChatSession):
        chat.stop(state)


@shows_errors
def clear_chat(state):
    """Clear button: empty both panes and hide the vote row; saved votes are kept."""
    session = session_of(state)
    chat.clear(session)
    left, right = chatbots(session)
    return session, left, right, gr.Row(visible=False)
