"""Chat and generation limits (issue #16): what one visitor's turn may ask of a shared server.

Each test stands for a finding on the launched app: a 1 MB prompt that grew the
process to 15 GB, a 200 KB system prompt that held the GPU lane for minutes, a
lone surrogate that dropped the connection, one visitor queueing many turns,
an unbounded answer length, and a Stop that left the generation running.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from finetune_core.inference import chat

from finetune_core.inference import generation
from finetune_core.inference.chat import ChatSession
from finetune_core.inference.chat_limits import GenerationSlots, TokenCounter, clean_text
from finetune_core.inference.generation import GenSettings, InferenceModel
from finetune_core.limits import LimitError

gr = pytest.importorskip("gradio")
from ui import chat_tab  # noqa: E402
from ui.context import AppContext  # noqa: E402

MB = 1_000_000


class StreamingModel:
    """A stand-in model: streams `steps` snapshots, stops on the cancel event, records its calls."""

    has_tuned = False

    def __init__(self, steps: int = 3, counter: TokenCounter | None = None):
        self.steps = steps
        self.calls: list = []
        if counter is not None:
            self.counter = counter

    def stream_pair(self, base_messages, tuned_messages, settings=None, cancel=None):
        self.calls.append(base_messages)
        for i in range(1, self.steps + 1):
            if cancel is not None and cancel.is_set():
                return
            yield f"answer {i}", ""


class Models:
    """A model cache that records every load; `counter` may hand out a real token counter."""

    def __init__(self, model=None, counter: TokenCounter | None = None):
        self.model = model or StreamingModel()
        self.counter_value = counter
        self.loads: list[str] = []

    def get(self, key, progress=None):
        self.loads.append(key)
        return self.model

    def counter(self, key, progress=None):
        return self.counter_value


class IdleSlot:
    """No training job (the real TrainingSlot would scan the runs folder)."""

    def active(self):
        return None

    def gpu_run(self):
        return None


def make_ctx(model=None, counter=None) -> AppContext:
    ctx = AppContext(slot=IdleSlot(), models=Models(model, counter))
    ctx.settings.default_model = "tiny"
    return ctx


def visitor_request(name: str):
    """What ui.access.visitor reads from a gr.Request: a signed-in user name here."""
    return SimpleNamespace(username=name, cookies={}, session_hash=f"hash-{name}")


def send(ctx, message="hello", system="", max_new=8, who="alice", session=None):
    return chat_tab.begin_send(ctx, session, message, "base:tiny", False, system, max_new,
                               request=visitor_request(who))


def reply(ctx, session, message="hello", system="", max_new=8):
    return list(chat_tab.stream_reply(ctx, session, message, "base:tiny", system, 0.0, 1.0, max_new, 0))


@pytest.fixture(scope="module")
def tiny_counter(tokenizer) -> TokenCounter:
    return TokenCounter(tokenizer)


# -- message and system prompt size ------------------------------------------------------------
def test_one_megabyte_message_is_refused_before_any_load_or_queue():
    ctx = make_ctx()
    started = time.perf_counter()
    with pytest.raises(gr.Error, match=r"Your message is 1,000,000 characters; this server allows 16,384 "
                                       r"\(2,048 tokens; setting STUDIO_LIMIT_CHAT_MESSAGE_TOKENS\)"):
        send(ctx, "x" * MB)
    assert time.perf_counter() - started < 1.0  # refused by its length, never tokenized
    assert ctx.models.loads == []  # no model load
    assert ctx.chat_slots.held("user:alice") == 0  # no slot taken: nothing queued


def test_message_over_the_token_limit_is_refused_by_its_token_count(tiny_counter, monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_CHAT_MESSAGE_TOKENS", "100")
    ctx = make_ctx(counter=tiny_counter)
    message = "a " * 300  # 600 characters: under the character pre-check, 300 tokens
    with pytest.raises(gr.Error, match=r"Your message is 300 tokens; this server allows 100 "
                                       r"\(setting STUDIO_LIMIT_CHAT_MESSAGE_TOKENS\)"):
        send(ctx, message)
    assert ctx.models.loads == []
    assert send(ctx, "a " * 50)[2] == ("a " * 50).strip()  # under the limit: admitted


def test_oversized_system_prompt_is_refused_at_send_at_stream_and_in_the_core(monkeypatch):
    ctx = make_ctx()
    with pytest.raises(gr.Error, match="The system prompt is 200,000 characters; this server allows 8,192"):
        send(ctx, "hi", system="s" * 200_000)
    # An API client may send a small system prompt with the message and a big one with the stream step.
    session, *_ = send(ctx, "hi")
    with pytest.raises(gr.Error, match="The system prompt is 200,000 characters"):
        reply(ctx, session, "hi", system="s" * 200_000)
    assert ctx.models.loads == [] and chat.panes(session) == ([], [])
    assert ctx.chat_slots.held("user:alice") == 0  # the refused turn gave its slot back
    # The core entry (CLI, scripts) refuses it too, before the model is asked anything.
    model = StreamingModel()
    with pytest.raises(LimitError, match="The system prompt"):
        list(chat.stream_chat(model, ChatSession(system_prompt="s" * 200_000), "hi", GenSettings(max_new_tokens=4)))
    assert model.calls == []


# -- unencodable text ----------------------------------------------------------------------------
def test_lone_surrogates_are_cleaned_at_send_and_in_the_core(tiny_model_dir):
    assert clean_text("a\ud800b\udfff") == "a\ufffdb\ufffd"
    ctx = make_ctx()
    session, box, message, left, right, _ = send(ctx, "hi \ud800 there")
    assert message == "hi \ufffd there"
    for text in (message, left[-1]["content"], right[-1]["content"]):
        text.encode("utf-8")  # what the page is sent back must encode
    model = InferenceModel.base_only(str(tiny_model_dir))
    session = ChatSession(system_prompt="be \udfff brief")
    *_, (left_text, _) = chat.stream_chat(model, session, "hello \ud800", GenSettings(max_new_tokens=3))
    assert session.system_prompt == "be \ufffd brief"
    assert chat.panes(session)[0][0]["content"] == "hello \ufffd"


def test_lone_surrogate_through_the_launched_app_keeps_the_connection(tmp_path, monkeypatch, tiny_model_dir):
    """The page's queue stream used to die on orjson's 'surrogates not allowed'."""
    import json
    import socket

    import httpx._content
    from gradio_client import Client

    import app

    for name, folder in (("RUNS", "runs"), ("EXPORTS", "exports"), ("UPLOADS", "uploads")):
        monkeypatch.setenv(f"STUDIO_{name}_DIR", str(tmp_path / folder))
    monkeypatch.setenv("STUDIO_DEFAULT_MODEL", str(tiny_model_dir))
    # A browser sends a lone surrogate as a \ud800 escape; httpx would refuse to encode it.
    monkeypatch.setattr(httpx._content, "json_dumps", lambda obj, **kw: json.dumps(obj, **{**kw, "ensure_ascii": True}))
    ctx = AppContext()
    demo = app.build_app(ctx)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(ctx))
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        box, left, *_ = client.predict("hi \ud800", f"base:{tiny_model_dir}", False, api_name="/chat_send")
        assert box == "" and "\ufffd" in json.dumps(left, ensure_ascii=False)
    finally:
        demo.close()


# -- generations per visitor ----------------------------------------------------------------------
def test_one_generation_per_visitor_others_unaffected():
    ctx = make_ctx()
    alice, *_ = send(ctx, "first", who="alice")
    with pytest.raises(gr.Error, match=r"already have 1 chat answer.*allows 1 at a time "
                                       r"\(setting STUDIO_LIMIT_CHATS_PER_USER\)"):
        send(ctx, "second", who="alice")  # another tab of the same visitor, while the first waits
    bob, *_ = send(ctx, "mine", who="bob")  # another visitor is not affected
    assert reply(ctx, bob, "mine")[-1][0][-1]["content"] == "answer 3"
    assert reply(ctx, alice, "first")[-1][0][-1]["content"] == "answer 3"
    assert ctx.chat_slots.held("user:alice") == 0
    send(ctx, "third", who="alice")  # her first answer is done: she may send again
    # The stream step alone (an API client calling it again) runs nothing without a send.
    again, *_ = send(ctx, "once", who="carol")
    reply(ctx, again, "once")
    calls = len(ctx.models.model.calls)
    reply(ctx, again, "once")
    assert len(ctx.models.model.calls) == calls


def test_a_client_dropping_its_visitor_cookie_is_still_one_page_session():
    import secrets

    ctx = make_ctx()

    def anonymous(cookie: str):
        return SimpleNamespace(username=None, cookies={"studio_visitor": cookie}, session_hash="one-page")

    session, *_ = chat_tab.begin_send(ctx, None, "hi", "base:tiny", False, request=anonymous(secrets.token_hex(16)))
    with pytest.raises(gr.Error, match="already have 1"):  # a fresh cookie, the same page session
        chat_tab.begin_send(ctx, session, "again", "base:tiny", False, request=anonymous(secrets.token_hex(16)))
    assert len(session.tickets) == 1


def test_slot_is_released_on_stop_disconnect_and_failure():
    ctx = make_ctx(StreamingModel(steps=50))
    # Stop while the turn waits in the queue: the slot is free at once, the turn never runs.
    session, *_ = send(ctx)
    chat_tab.stop_chat(session)
    assert ctx.chat_slots.held("user:alice") == 0
    assert reply(ctx, session) and ctx.models.loads == []
    # Stop while streaming: the stream ends early and the slot is given back.
    session, *_ = send(ctx)
    stream = chat_tab.stream_reply(ctx, session, "hello", "base:tiny", "", 0.0, 1.0, 8, 0)
    next(stream), next(stream)
    chat_tab.stop_chat(session)
    assert len(list(stream)) < 10
    assert ctx.chat_slots.held("user:alice") == 0
    # The page goes away mid-stream: the server closes the generator.
    session, *_ = send(ctx)
    stream = chat_tab.stream_reply(ctx, session, "hello", "base:tiny", "", 0.0, 1.0, 8, 0)
    next(stream), next(stream)
    stream.close()
    assert ctx.chat_slots.held("user:alice") == 0 and session.cancel.is_set()
    # The model fails to load.
    session, *_ = send(ctx)
    ctx.models.get = lambda key, progress=None: (_ for _ in ()).throw(ValueError("no such model"))
    with pytest.raises(gr.Error, match="no such model"):
        reply(ctx, session)
    assert ctx.chat_slots.held("user:alice") == 0


def test_slots_limit_setting_and_lost_turns_expire(monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_CHATS_PER_USER", "2")
    slots = GenerationSlots(unclaimed_ttl=0.05)
    first, second = slots.acquire("v"), slots.acquire("v")
    with pytest.raises(LimitError, match="allows 2 at a time"):
        slots.acquire("v")
    assert first.claim()
    second.release()
    second.release()  # idempotent
    assert not second.claim()  # a released (stopped) turn does not start
    lost = slots.acquire("v")  # its page closed before the stream started: never claimed
    time.sleep(0.06)
    assert slots.held("v") == 1 and lost  # only the running one still counts
    first.release()
    assert slots.held("v") == 0 and slots._held == {}


# -- answer length ----------------------------------------------------------------------------------
def test_max_new_tokens_is_capped_for_chat_and_evaluation(tiny_model_dir, trained_run, monkeypatch):
    ctx = make_ctx()
    with pytest.raises(gr.Error, match=r"Max new tokens is 1,000,000, over this server's limit of 1,024 "
                                       r"\(setting STUDIO_LIMIT_MAX_NEW_TOKENS\)"):
        send(ctx, "hi", max_new=1_000_000)
    session, *_ = send(ctx, "hi")  # admitted with 8; the stream step asks for more
    with pytest.raises(gr.Error, match="Max new tokens is 5,000"):
        reply(ctx, session, "hi", max_new=5000)
    assert ctx.models.loads == []
    with pytest.raises(LimitError, match="Max new tokens"):
        list(chat.stream_chat(StreamingModel(), ChatSession(), "hi", GenSettings(max_new_tokens=5000)))
    from evaluation.run_eval import evaluate_run

    with pytest.raises(LimitError, match="Max new tokens is 5,000"):
        evaluate_run(object(), max_new_tokens=5000)  # refused before the run or a model is read
    from ui.eval_tab import evaluate

    monkeypatch.setenv("STUDIO_RUNS_DIR", str(trained_run.path.parent))
    with pytest.raises(gr.Error, match="Max new tokens is 5,000"):
        evaluate(ctx, trained_run.id, max_new_tokens=5000)
    assert ctx.models.loads == []  # refused before the Evaluate tab loads the model
    # Any other path is capped where generation starts.
    monkeypatch.setenv("STUDIO_LIMIT_MAX_NEW_TOKENS", "3")
    assert GenSettings(max_new_tokens=10**9).kwargs(SimpleNamespace(pad_token_id=0))["max_new_tokens"] == 3
    model = InferenceModel.base_only(str(tiny_model_dir))
    asked = []
    real_generate = model.model.generate
    model.model.generate = lambda *a, **kw: asked.append(kw["max_new_tokens"]) or real_generate(*a, **kw)
    prompt = [{"role": "user", "content": "count"}]
    model.generate([prompt], tuned=False, settings=GenSettings(max_new_tokens=500))
    list(model.stream_pair(prompt, None, GenSettings(max_new_tokens=500)))
    assert asked == [3, 3]


# -- the whole conversation ---------------------------------------------------------------------------
def test_long_conversation_leaves_oldest_turns_out_with_a_note(tiny_counter, monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_CHAT_CONTEXT_TOKENS", "120")
    model = StreamingModel(steps=1, counter=tiny_counter)
    ctx = make_ctx(model, tiny_counter)
    session = None
    for turn in range(1, 7):
        session, *_ = send(ctx, f"turn {turn}: " + "word " * 12, session=session)
        outs = reply(ctx, session, f"turn {turn}: " + "word " * 12)
    sent = [m["content"] for m in model.calls[-1]]
    assert sent[-1].startswith("turn 6") and not any(m.startswith("turn 1") for m in sent)
    assert tiny_counter.count_messages(model.calls[-1]) <= 120
    assert session.first_turn > 0 and session.turns == 6  # the panes still show every turn
    assert f"no longer see turns 1–{session.first_turn}" in outs[-1][2]
    assert "STUDIO_LIMIT_CHAT_CONTEXT_TOKENS" in outs[-1][2]
    chat.clear(session)
    assert session.first_turn == 0
    # A turn that cannot fit even alone is refused, naming the limit.
    with pytest.raises(LimitError, match=r"is \d+ tokens; this server allows 120 per turn"):
        list(chat.stream_chat(model, session, "word " * 200, GenSettings(max_new_tokens=4)))
    assert session.turns == 0


# -- stop frees the generation -------------------------------------------------------------------------
def test_closing_a_stream_stops_its_worker_and_frees_memory(tiny_model_dir, monkeypatch):
    stoppers, trims = [], []

    class Recording(generation._Cancel):
        def __init__(self, *events):
            super().__init__(*events)
            stoppers.append(self)

    monkeypatch.setattr(generation, "_Cancel", Recording)
    monkeypatch.setattr(generation, "release_memory", lambda: trims.append(1))
    model = InferenceModel.base_only(str(tiny_model_dir))
    stream = model.stream_pair([{"role": "user", "content": "hi"}], None,
                               GenSettings(max_new_tokens=1000, temperature=1.0, seed=3))
    next(stream)
    stream.close()  # no cancel event was given: only the consumer going away can stop it
    assert stoppers and stoppers[-1].is_set()
    assert model.lock.acquire(timeout=30)  # the worker ended and let go of the model
    model.lock.release()
    deadline = time.time() + 5
    while not trims and time.time() < deadline:
        time.sleep(0.01)
    assert trims  # freed heap pages handed back to the system after the generation


def test_stop_reaches_a_running_turn_after_a_refused_send():
    """A refused second send must not swap the cancel event the running turn listens to."""
    ctx = make_ctx(StreamingModel(steps=50))
    session, *_ = send(ctx)
    stream = chat_tab.stream_reply(ctx, session, "hello", "base:tiny", "", 0.0, 1.0, 8, 0)
    next(stream), next(stream)
    with pytest.raises(gr.Error, match="already have"):
        send(ctx, session=session)
    chat_tab.stop_chat(session)
    assert len(list(stream)) < 10
    assert ctx.chat_slots.held("user:alice") == 0
