"""Chat sessions: streaming, adapter on/off, blind A/B mapping, votes, DPO export and session isolation
(the Chat tab's handlers: test_chat_ui.py; the run's prompt template: test_chat_templates.py)."""
from __future__ import annotations

import json

import pytest

from finetune_core.inference import chat
from finetune_core.inference.chat import ChatSession
from finetune_core.inference.generation import GenSettings, InferenceModel

from chat_support import GREEDY, FakeModel, run_turn

PROMPT = [{"role": "user", "content": "Item 3: which colour is the blue ball number 3?"}]


@pytest.fixture(scope="module")
def tuned_model(trained_run):
    return InferenceModel.from_run(trained_run)


# -- real model ---------------------------------------------------------------------
def test_streaming_yields_growing_text_and_ends(tuned_model):
    session = ChatSession()
    snaps = list(chat.stream_chat(tuned_model, session, PROMPT[0]["content"], GREEDY))
    assert len(snaps) >= 3
    rights = [r for _, r in snaps]
    assert all(len(a) <= len(b) for a, b in zip(rights, rights[1:])), rights
    assert rights[-1]  # the tuned side answered something
    left, right = chat.panes(session)
    assert [m["role"] for m in right] == ["user", "assistant"]
    assert right[-1]["content"] == rights[-1]
    assert left[-1]["content"] == snaps[-1][0]


def test_adapter_on_and_off_differ(tuned_model):
    *_, (base, tuned) = tuned_model.stream_pair(PROMPT, PROMPT, GREEDY)
    assert base != tuned
    assert tuned_model.generate([PROMPT], tuned=True, settings=GREEDY) != \
        tuned_model.generate([PROMPT], tuned=False, settings=GREEDY)


def test_base_side_equals_fresh_base_model(tuned_model, tiny_model_dir):
    """The adapter-off row of the mixed batch answers exactly like the untouched base model."""
    import torch
    from transformers import AutoModelForCausalLM

    *_, (base_streamed, _) = tuned_model.stream_pair(PROMPT, PROMPT, GREEDY)
    *_, (base_alone, _) = tuned_model.stream_pair(PROMPT, None, GREEDY)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = tuned_model.tokenizer
    ids = tok(tuned_model.render(PROMPT), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = fresh.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert base_streamed == base_alone == expected
    # The random tiny model's greedy answer is dull (newlines); sampling with one seed
    # checks the adapter-off path token by token on varied output.
    sampled = GenSettings(max_new_tokens=8, temperature=1.0, top_p=1.0, seed=5)
    *_, (base_sampled, _) = tuned_model.stream_pair(PROMPT, None, sampled)
    torch.manual_seed(5)
    with torch.inference_mode():
        out = fresh.generate(**ids, max_new_tokens=8, do_sample=True, temperature=1.0, top_p=1.0,
                             pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert base_sampled == expected and expected.strip()


def test_stop_keeps_partial_answer(tuned_model):
    session = ChatSession()
    stream = chat.stream_chat(tuned_model, session, "hello", GenSettings(max_new_tokens=64))
    next(stream)
    chat.stop(session)
    rest = list(stream)  # ends early instead of running 64 tokens
    assert rest
    assert chat.panes(session)[1][-1]["role"] == "assistant"
    assert session.turns == 1


# -- blind mode and votes -----------------------------------------------------------------
def test_non_blind_puts_base_left_tuned_right():
    session = ChatSession()
    snaps = run_turn(session, "hi")
    assert snaps[-1] == ("base-1", "tuned-1")
    left, right = chat.panes(session)
    assert left == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "base-1"}]
    assert right[-1]["content"] == "tuned-1"
    assert session.pending is None  # votes only in blind mode


def test_blind_sides_follow_assignment_and_votes_map_to_winner():
    session, model = ChatSession(blind=True, seed=3), FakeModel()
    sides_seen = set()
    for turn in range(1, 7):
        left_text, right_text = run_turn(session, f"q{turn}", model)[-1]
        side = session.tuned_sides[-1]
        sides_seen.add(side)
        tuned_text = left_text if side == "left" else right_text
        assert tuned_text == f"tuned-{turn}"
        left, right = chat.panes(session)
        assert (left if side == "left" else right)[-1]["content"] == f"tuned-{turn}"
        assert (right if side == "left" else left)[-1]["content"] == f"base-{turn}"
        choice = ["left", "right", "tie", "both_bad"][turn % 4]
        vote = chat.record_vote(session, choice)
        expected = choice if choice in ("tie", "both_bad") else ("tuned" if choice == side else "base")
        assert vote["winner"] == expected
    assert sides_seen == {"left", "right"}  # random per turn
    with pytest.raises(ValueError):
        chat.record_vote(session, "left")  # nothing pending after a vote


def test_same_seed_same_sides_and_leaving_blind_reveals():
    a, b = ChatSession(blind=True, seed=7), ChatSession(blind=True, seed=7)
    for s in (a, b):
        for i in range(5):
            run_turn(s, f"m{i}")
    assert a.tuned_sides == b.tuned_sides
    chat.set_blind(a, False)
    left, right = chat.panes(a)
    assert all(m["content"].startswith("base") for m in left if m["role"] == "assistant")
    assert a.pending is None


def test_blind_needs_a_tuned_model():
    with pytest.raises(ValueError, match="tuned"):
        run_turn(ChatSession(blind=True), "hi", FakeModel(has_tuned=False))


def test_tally_math():
    votes = [{"winner": w} for w in ["tuned"] * 3 + ["base"] + ["tie"] * 2 + ["both_bad"]]
    t = chat.tally(votes)
    assert t == {"votes": 7, "tuned": 3, "base": 1, "tie": 2, "both_bad": 1, "tuned_win_rate": 0.75}
    assert chat.tally([{"winner": "tie"}])["tuned_win_rate"] is None


def test_export_writes_dpo_pairs_and_skips_ties(tmp_path):
    session, model = ChatSession(blind=True, seed=1, system_prompt="Be brief."), FakeModel()
    for i, want in enumerate(["tuned", "base", "tie", "both_bad"]):
        run_turn(session, f"question {i}", model)
        side = session.tuned_sides[-1]
        other = "right" if side == "left" else "left"
        chat.record_vote(session, {"tuned": side, "base": other}.get(want, want))
    path = tmp_path / "prefs.jsonl"
    assert chat.export_preferences(session.votes, path) == 2
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["prompt"][0] == {"role": "system", "content": "Be brief."}
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
    assert rows[0]["prompt"][-1]["content"] == "question 0"
    assert (rows[0]["chosen"][0]["content"], rows[0]["rejected"][0]["content"]) == ("tuned-1", "base-1")
    assert (rows[1]["chosen"][0]["content"], rows[1]["rejected"][0]["content"]) == ("base-2", "tuned-2")
    # multi-turn: the prompt carries the chosen side's earlier turns
    assert [m["content"] for m in rows[1]["prompt"] if m["role"] == "assistant"] == ["base-1"]


# -- sessions ---------------------------------------------------------------------------
def test_sessions_are_isolated():
    model = FakeModel()
    a, b = ChatSession(system_prompt="A"), ChatSession()
    run_turn(a, "from a", model)
    run_turn(b, "from b", model)
    assert [m["content"] for m in chat.panes(a)[0] if m["role"] == "user"] == ["from a"]
    assert [m["content"] for m in chat.panes(b)[0] if m["role"] == "user"] == ["from b"]
    base_b, _ = model.calls[1]
    assert [m["content"] for m in base_b] == ["from b"]  # no system prompt, no turn of a
    assert a.base_history is not b.base_history and a.cancel is not b.cancel and a.rng is not b.rng


def test_each_side_keeps_its_own_history_and_clear_forgets():
    model = FakeModel()
    session = ChatSession()
    run_turn(session, "one", model)
    run_turn(session, "two", model)
    base_msgs, tuned_msgs = model.calls[-1]
    assert [m["content"] for m in base_msgs] == ["one", "base-1", "two"]
    assert [m["content"] for m in tuned_msgs] == ["one", "tuned-1", "two"]
    chat.clear(session)
    assert chat.panes(session) == ([], [])
    assert not session.cancel.is_set()  # the next turn is not cancelled by the clear
    assert run_turn(session, "three", model)[-1] == ("base-3", "tuned-3")
    assert [m["content"] for m in model.calls[-1][0]] == ["three"]


def test_failed_generation_rolls_back_the_turn():
    class Broken(FakeModel):
        def stream_pair(self, *a, **k):
            yield "x", "y"
            raise RuntimeError("boom")

    session = ChatSession()
    with pytest.raises(RuntimeError):
        run_turn(session, "hi", Broken())
    assert chat.panes(session) == ([], []) and session.turns == 0


def test_example_prompts_come_from_heldout(trained_run):
    rows = [json.loads(x) for x in (trained_run.data_dir / "heldout.jsonl").read_text().splitlines()]
    expected = [r["prompt"][-1]["content"] for r in rows][:3]
    assert chat.example_prompts(trained_run, n=3) == expected
