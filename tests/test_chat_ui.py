"""The Chat tab's handlers called directly: send, stream, vote and export; stop and clear; the GPU rule;
run choices; load errors; the picker's default; blind A/B clean and hidden until the vote."""
from __future__ import annotations

import json

import pytest

from finetune_core.inference import chat
from finetune_core.inference.chat import ChatSession

from chat_support import fake_ctx, run_turn


def test_ui_send_stream_vote_export_flow(trained_run, runs_root):
    gr = pytest.importorskip("gradio")
    import shutil

    from ui import chat_tab

    shutil.copytree(trained_run.path, runs_root / trained_run.id)  # the vote is saved in the run: use a copy
    ctx, key = fake_ctx(), f"run:{trained_run.id}"
    session, box, msg, left, right, _ = chat_tab.begin_send(ctx, None, " hello ", key, True)
    assert box == "" and msg == "hello" and left[-1]["content"] == "hello"
    outs = list(chat_tab.stream_reply(ctx, session, msg, key, "", 0.0, 1.0, 8, 0))
    final_left, final_right, _, vote_row = outs[-1]
    assert {final_left[-1]["content"], final_right[-1]["content"]} == {"base-1", "tuned-1"}
    assert vote_row.visible is True
    tuned_side = session.tuned_sides[-1]
    _, tally_md, _, note = chat_tab.cast_vote(session, tuned_side)
    assert "100%" in tally_md and "tuned" in note
    saved = [json.loads(line) for line in (runs_root / trained_run.id / "votes.jsonl").read_text().splitlines()]
    assert [v["winner"] for v in saved] == ["A" if tuned_side == "left" else "B"]
    assert "100%" in chat_tab.run_tally(key)  # what a reloaded page shows, from the file
    path = chat_tab.export_votes(session)
    row = json.loads(open(path).read())
    assert row["chosen"][0]["content"] == "tuned-1"
    with pytest.raises(gr.Error):
        chat_tab.begin_send(ctx, session, "   ", key, False)
    with pytest.raises(gr.Error, match="Blind"):
        chat_tab.begin_send(ctx, session, "hi", "base:bundled", True)


def test_ui_stop_and_clear():
    from ui import chat_tab

    session = ChatSession()
    chat_tab.stop_chat(session)
    assert session.cancel.is_set()
    chat_tab.stop_chat(None)  # before any message: nothing to stop, no error
    run_turn(session, "hi")
    session, left, right, _ = chat_tab.clear_chat(session)
    assert left.value == [] and right.value == [] and left.label == "Base"
    session, left, right, *_ = chat_tab.toggle_blind(fake_ctx(), session, True, "base:bundled")
    assert (left.label, right.label) == ("Model A", "Model B")


def test_ui_gpu_busy_blocks_chat_but_cpu_training_does_not(trained_run, monkeypatch):
    gr = pytest.importorskip("gradio")
    from types import SimpleNamespace

    from ui import chat_tab

    monkeypatch.setenv("STUDIO_RUNS_DIR", str(trained_run.path.parent))
    key = f"run:{trained_run.id}"
    class GpuRun:
        id = "20260101-000000-x-abcdef"

        def run_yaml(self):
            return {"resolved_device": "cuda"}

    busy = fake_ctx(job=SimpleNamespace(run=GpuRun()))
    assert "GPU" in chat_tab.gpu_busy_message(busy)
    with pytest.raises(gr.Error, match="GPU"):
        chat_tab.begin_send(busy, None, "hi", key, False)
    cpu_job = SimpleNamespace(run=trained_run)  # its run.yaml resolves to cpu
    assert chat_tab.gpu_busy_message(fake_ctx(job=cpu_job)) == ""
    assert chat_tab.begin_send(fake_ctx(job=cpu_job), None, "hi", key, False)[2] == "hi"


def test_ui_run_choices_and_examples(trained_run, monkeypatch):
    from ui import chat_tab

    monkeypatch.setenv("STUDIO_RUNS_DIR", str(trained_run.path.parent))
    choices = chat_tab.run_choices("bundled")
    values = [v for _, v in choices]
    assert values == [f"run:{trained_run.id}", "base:bundled"]
    assert chat_tab.default_choice(choices, trained_run.id) == f"run:{trained_run.id}"
    assert chat_tab.default_choice(choices, "", "base:bundled") == "base:bundled"  # the visitor's own pick
    first = chat.example_prompts(trained_run, 1)[0]
    examples = chat_tab.examples_for(f"run:{trained_run.id}")
    assert examples[0] == [first, first]  # no template: the chip types the prompt itself
    assert chat_tab.pick_example(0, examples, True) == first == chat_tab.pick_example(0, examples, False)
    assert chat_tab.pick_example(["a prompt"], [], False) == "a prompt"  # a "values" click
    assert chat_tab.pick_example(99, examples, True) == ""


def test_ui_model_load_error_becomes_short_gr_error():
    gr = pytest.importorskip("gradio")
    from finetune_core.models.sources import ModelError
    from ui import chat_tab

    class FailingModels:
        def get(self, key, progress=None):
            raise ModelError("Could not load 'x/y': the Hub is not reachable (offline).")

        def counter(self, key, progress=None):
            return None  # no tokenizer either: characters are checked, the load error comes at streaming

    ctx = fake_ctx()
    ctx.models = FailingModels()
    ctx.settings.default_model = "x/y"
    session, *_ = chat_tab.begin_send(ctx, None, "hi", "base:x/y", False)
    stream = chat_tab.stream_reply(ctx, session, "hi", "base:x/y", "", 0.0, 1.0, 8, 0)
    with pytest.raises(gr.Error, match="not reachable"):
        list(stream)
    assert chat.panes(session) == ([], [])


# -- the picker: the latest run unless the visitor picked another ------------------------------------------
def test_picker_defaults_to_the_latest_run_unless_the_visitor_picked(trained_run, runs_root):
    import shutil

    from ui import chat_tab
    from ui.chat_picker import follow_new_shared_run, remember_pick

    ctx = fake_ctx()
    ctx.settings.default_model = "bundled"
    assert chat_tab.on_load(ctx, "")[0].value == "base:bundled"  # no run yet
    shutil.copytree(trained_run.path, runs_root / trained_run.id)
    key = f"run:{trained_run.id}"
    dropdown, chips, examples, wrap, single, note, status, tally, side_a = chat_tab.on_load(ctx, "")
    assert dropdown.value == key and chips.visible and trained_run.name in status  # a fresh page or a reload
    assert side_a.visible and side_a.value == "base"  # a run without a parent is compared with its base
    assert chat_tab.follow_shared_run(ctx, "", "base:bundled", None, "").value == key  # tab opened, no pick
    assert chat_tab.follow_shared_run(ctx, "", "base:bundled", None, "base:bundled").value == "base:bundled"
    assert chat_tab.follow_shared_run(ctx, "", "base:bundled").value == key  # the old call (guided demo, app.py)
    assert chat_tab.follow_shared_run(ctx, trained_run.id, None).value == key
    assert chat_tab.refresh_runs(ctx, "base:bundled", "", None, "").value == key
    assert remember_pick(key) == (key, trained_run.id) and remember_pick("base:bundled")[0] == "base:bundled"
    assert follow_new_shared_run(ctx, trained_run.id, "base:bundled")[1] == ""  # a newly shared run replaces the pick


# -- blind A/B: clean, hidden until the vote, saved ----------------------------------------------------------
IDENTITY = __import__("re").compile(r"\b(base|tuned)\b", __import__("re").IGNORECASE)


def test_turning_blind_on_clears_and_hides_identities(trained_run, runs_root):
    import shutil

    from ui import chat_tab

    shutil.copytree(trained_run.path, runs_root / trained_run.id)
    ctx, key = fake_ctx(), f"run:{trained_run.id}"
    session, *_ = chat_tab.begin_send(ctx, None, "hello", key, False)
    list(chat_tab.stream_reply(ctx, session, "hello", key, "", 0.0, 1.0, 8, 0))
    assert chat.panes(session)[1]  # a normal turn
    session, left, right, votes, intro, status, note, tally, picker, side_a = chat_tab.toggle_blind(ctx, session,
                                                                                                     True, key)
    assert side_a["visible"] is False  # "Compare with" names the left pane's model: hidden while blind
    assert left.value == right.value == [] and (left.label, right.label) == ("Model A", "Model B")
    for text in (intro, status, tally, note.value or ""):
        assert not IDENTITY.search(text), text
    assert votes.visible is False
    # the base model alone cannot be compared blind: the latest run is picked instead
    *_, picker, _side_a = chat_tab.toggle_blind(ctx, session, True, "base:bundled")
    assert picker.value == key


def test_vote_labels_are_plain_text_and_a_vote_reveals_and_is_saved(trained_run, runs_root):
    import shutil

    from evaluation.report import render_markdown
    from evaluation.report_facts import gather
    from finetune_core.runs.store import get_run
    from ui import chat_tab

    assert list(chat_tab.VOTE_LABELS.values()) == ["A is better", "Tie", "B is better", "Both bad"]
    assert all(label.isascii() for label in chat_tab.VOTE_LABELS.values())  # no emoji to render as boxes
    shutil.copytree(trained_run.path, runs_root / trained_run.id)
    ctx, key = fake_ctx(), f"run:{trained_run.id}"
    session, *_ = chat_tab.toggle_blind(ctx, None, True, key)
    session, *_ = chat_tab.begin_send(ctx, session, "hello", key, True)
    *_, (left, right, status, votes) = list(chat_tab.stream_reply(ctx, session, "hello", key, "", 0.0, 1.0, 8, 0))
    assert votes.visible and not IDENTITY.search(status)
    tuned_pane = "A" if session.tuned_sides[-1] == "left" else "B"
    _, tally, votes, note = chat_tab.cast_vote(session, "left")
    assert f"Model {tuned_pane} was the **tuned** model" in note and trained_run.name in note
    assert "1 decided votes" in tally
    # one vote tells nothing: the tally says so with its interval
    assert "Tuned vs base: not distinguishable from no change on 1 vote (" in tally
    lines = (runs_root / trained_run.id / "votes.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["winner"] == "A"
    assert "1 blind votes" in render_markdown(gather(get_run(trained_run.id), with_curve=False))
