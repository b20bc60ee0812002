"""Chat: streaming, adapter on/off, blind A/B mapping, votes, DPO export,
session isolation, and the Chat tab's handlers called directly."""
from __future__ import annotations

import json

import pytest

from finetune_core.inference import chat
from finetune_core.inference.chat import ChatSession
from finetune_core.inference.generation import GenSettings, InferenceModel

PROMPT = [{"role": "user", "content": "Item 3: which colour is the blue ball number 3?"}]
GREEDY = GenSettings(max_new_tokens=8)


class FakeModel:
    """Stands in for InferenceModel: streams 'base-N'/'tuned-N' and records the prompts it got."""

    def __init__(self, has_tuned: bool = True, steps: int = 3):
        self.has_tuned = has_tuned
        self.steps = steps
        self.calls: list[tuple] = []

    def stream_pair(self, base_messages, tuned_messages, settings=None, cancel=None):
        self.calls.append((base_messages, tuned_messages))
        n = len(self.calls)
        for i in range(1, self.steps + 1):
            if cancel is not None and cancel.is_set():
                return
            yield f"base-{n}"[: 2 + i * 2], (f"tuned-{n}"[: 2 + i * 2] if tuned_messages else "")


def run_turn(session, message, model=None):
    return list(chat.stream_chat(model or FakeModel(), session, message, GREEDY))


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


# -- ui handlers (plain functions) ---------------------------------------------------------
class _Slot:
    def __init__(self, job=None):
        self.job = job

    def active(self):
        return self.job

    def gpu_run(self):  # the real slot's rule, over this fake's job
        from finetune_core.training.runner import TrainingSlot

        return TrainingSlot.gpu_run(self)


class _Models:
    def __init__(self, model):
        self.model = model

    def get(self, key, progress=None):
        return self.model

    def counter(self, key, progress=None):
        return getattr(self.model, "counter", None)  # FakeModel has none: characters are checked


def _ctx(model=None, job=None):
    from ui.context import AppContext

    return AppContext(slot=_Slot(job), models=_Models(model or FakeModel()))


def test_ui_send_stream_vote_export_flow(trained_run, runs_root):
    gr = pytest.importorskip("gradio")
    import shutil

    from ui import chat_tab

    shutil.copytree(trained_run.path, runs_root / trained_run.id)  # the vote is saved in the run: use a copy
    ctx, key = _ctx(), f"run:{trained_run.id}"
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
    session, left, right, *_ = chat_tab.toggle_blind(_ctx(), session, True, "base:bundled")
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

    busy = _ctx(job=SimpleNamespace(run=GpuRun()))
    assert "GPU" in chat_tab.gpu_busy_message(busy)
    with pytest.raises(gr.Error, match="GPU"):
        chat_tab.begin_send(busy, None, "hi", key, False)
    cpu_job = SimpleNamespace(run=trained_run)  # its run.yaml resolves to cpu
    assert chat_tab.gpu_busy_message(_ctx(job=cpu_job)) == ""
    assert chat_tab.begin_send(_ctx(job=cpu_job), None, "hi", key, False)[2] == "hi"


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

    ctx = _ctx()
    ctx.models = FailingModels()
    ctx.settings.default_model = "x/y"
    session, *_ = chat_tab.begin_send(ctx, None, "hi", "base:x/y", False)
    stream = chat_tab.stream_reply(ctx, session, "hi", "base:x/y", "", 0.0, 1.0, 8, 0)
    with pytest.raises(gr.Error, match="not reachable"):
        list(stream)
    assert chat.panes(session) == ([], [])


# -- the run's prompt template, single turn, chips (issue 19: chat speaks the run's language) -------------
INTENTS = "sample_data/customer_intents.csv"


def split_run(data_path: str, **mapping):
    """A run with its data split saved exactly as training saves it (no training: the prompts are what matter)."""
    from finetune_core.config import RunConfig
    from finetune_core.runs.store import create_run
    from finetune_core.training.train import prepare_split

    cfg = RunConfig.from_dict({"model": "bundled", "data_path": str(data_path), **mapping})
    run = create_run(cfg, label="template")
    prepare_split(cfg, run)
    return run


def test_wrapped_message_equals_the_training_prompt_of_a_classification_run(runs_root):
    """Every row's text, wrapped for chat, is exactly the prompt training saw for that row."""
    import csv

    from finetune_core.data.dataset import DataMapping, prepare_data
    from finetune_core.inference.run_prompts import run_template

    run = split_run(INTENTS)
    template = run_template(run)
    assert template is not None and template.column == "text"
    report = prepare_data(DataMapping.from_dict({"data_path": INTENTS}))
    with open(INTENTS, encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    for row, number in zip(report.rows, report.row_numbers):
        text = texts[number - 1]  # row numbers count data rows from 1
        assert template.messages(text) == row["prompt"], number
        assert template.field_of(row["prompt"][-1]["content"]) == text
    assert template.wrap(template.wrap("hi")) == template.wrap("hi")  # never wrapped twice


def test_wrapped_message_equals_the_training_prompt_of_a_column_template(runs_root, tmp_path):
    from finetune_core.data.dataset import DataMapping, prepare_data
    from finetune_core.inference.run_prompts import run_template

    data = tmp_path / "qa.csv"
    data.write_text("question,answer\n" + "".join(f"What is {i}+{i}?,{2 * i}\n" for i in range(30)))
    mapping = {"data_format": "columns", "prompt_template": "Answer with a number.\nQ: {question}\nA:",
               "completion_column": "answer", "system_prompt": "You are a calculator."}
    template = run_template(split_run(data, **mapping))
    report = prepare_data(DataMapping.from_dict({"data_path": str(data), **mapping}))
    assert template.messages("What is 7+7?") == report.rows[7]["prompt"]
    assert template.messages("x", system="Mine.")[0] == {"role": "system", "content": "Mine."}
    # a template ending in whitespace: still recognised when the prompt comes back stripped (chips, pasting)
    mapping["prompt_template"] = "Summarize this dialogue:\n{question}\n"
    template = run_template(split_run(data, **mapping))
    report = prepare_data(DataMapping.from_dict({"data_path": str(data), **mapping}))
    assert template.messages("What is 3+3?") == report.rows[3]["prompt"]
    assert template.wrap(template.wrap("hi").strip()) == template.wrap("hi").strip()  # not wrapped twice


def test_plain_and_several_column_runs_have_no_template(runs_root, trained_run, tmp_path):
    from finetune_core.inference.run_prompts import run_template

    assert run_template(trained_run) is None  # prompt/completion: chat as it is
    data = tmp_path / "two.csv"
    data.write_text("a,b,c\n" + "".join(f"x{i},y{i},z{i}\n" for i in range(20)))
    run = split_run(data, data_format="columns", prompt_template="{a} and {b}", completion_column="c")
    assert run_template(run) is None  # two columns: a typed message cannot fill both


def test_chips_show_the_part_that_differs_and_type_the_right_text(runs_root):
    from ui import chat_prompts

    run = split_run(INTENTS)
    key = f"run:{run.id}"
    examples = chat_prompts.examples_for(key)
    labels = chat_prompts.chips(examples, key).sample_labels
    assert len(labels) == len(set(labels)) == 8 and not any(x.startswith("Classify") for x in labels)
    full, typed = examples[0]
    assert full.startswith("Classify the text") and typed in full and labels[0] == typed
    assert chat_prompts.pick_example(0, examples, True) == typed  # wrapping on: the template is added on send
    assert chat_prompts.pick_example(0, examples, False) == full
    wrap, single, note = chat_prompts.prompt_controls(key)
    assert wrap.visible and wrap.value and single.value and "{text}" in note.value and note.visible
    assert "base model gets the same" in note.value
    wrap, single, note = chat_prompts.prompt_controls("base:bundled")
    assert not wrap.visible and not wrap.value and not single.value and not note.visible


def test_distinct_parts_without_a_template():
    from finetune_core.inference.run_prompts import chip_texts

    prompts = [f"Please summarise the following note for the team lead: {n} broke. Keep it short."
               for n in ("printer", "laptop", "badge reader")]
    assert chip_texts(prompts, None) == ["…printer…", "…laptop…", "…badge reader…"]


def test_each_side_wraps_with_its_template_and_single_turn_sends_no_earlier_turn(runs_root):
    from finetune_core.inference.run_prompts import run_template

    template = run_template(split_run(INTENTS))
    model = FakeModel()
    session = ChatSession(base_template=template, tuned_template=template, single_turn=True)
    run_turn(session, "Where is my parcel?", model)
    run_turn(session, "I love the kettle", model)
    base_msgs, tuned_msgs = model.calls[-1]
    assert tuned_msgs == base_msgs == template.messages("I love the kettle")  # alone, wrapped
    assert chat.panes(session)[1][-2]["content"] == template.wrap("I love the kettle")  # what the pane shows
    session.single_turn = False
    run_turn(session, "third", model)
    assert len(model.calls[-1][1]) == 5  # multi-turn again: the earlier turns come along
    other = ChatSession(tuned_template=template)  # a side without a template gets the message as typed
    run_turn(other, "raw", model)
    assert model.calls[-1][0][-1]["content"] == "raw" and model.calls[-1][1] == template.messages("raw")


def test_ui_send_wraps_the_message_for_a_template_run(runs_root):
    from finetune_core.inference.run_prompts import run_template
    from ui import chat_tab

    run = split_run(INTENTS)
    key, model = f"run:{run.id}", FakeModel()
    ctx = _ctx(model)
    session, _, msg, left, right, _ = chat_tab.begin_send(ctx, None, "Where is my parcel?", key, False,
                                                          wrap=True, single_turn=True)
    wrapped = run_template(run).wrap("Where is my parcel?")
    assert left[-1]["content"] == right[-1]["content"] == wrapped  # shown as the models get it
    list(chat_tab.stream_reply(ctx, session, msg, key, "", 0.0, 1.0, 8, 0))
    assert model.calls[-1][1] == [{"role": "user", "content": wrapped}]
    session, *_ = chat_tab.begin_send(ctx, session, "again", key, False, wrap=False, single_turn=False)
    list(chat_tab.stream_reply(ctx, session, "again", key, "", 0.0, 1.0, 8, 0))
    assert model.calls[-1][1][-1] == {"role": "user", "content": "again"} and len(model.calls[-1][1]) == 3


# -- the picker: the latest run unless the visitor picked another ------------------------------------------
def test_picker_defaults_to_the_latest_run_unless_the_visitor_picked(trained_run, runs_root):
    import shutil

    from ui import chat_tab
    from ui.chat_picker import follow_new_shared_run, remember_pick

    ctx = _ctx()
    ctx.settings.default_model = "bundled"
    assert chat_tab.on_load(ctx, "")[0].value == "base:bundled"  # no run yet
    shutil.copytree(trained_run.path, runs_root / trained_run.id)
    key = f"run:{trained_run.id}"
    dropdown, chips, examples, wrap, single, note, status, tally = chat_tab.on_load(ctx, "")
    assert dropdown.value == key and chips.visible and trained_run.name in status  # a fresh page or a reload
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
    ctx, key = _ctx(), f"run:{trained_run.id}"
    session, *_ = chat_tab.begin_send(ctx, None, "hello", key, False)
    list(chat_tab.stream_reply(ctx, session, "hello", key, "", 0.0, 1.0, 8, 0))
    assert chat.panes(session)[1]  # a normal turn
    session, left, right, votes, intro, status, note, tally, picker = chat_tab.toggle_blind(ctx, session, True, key)
    assert left.value == right.value == [] and (left.label, right.label) == ("Model A", "Model B")
    for text in (intro, status, tally, note.value or ""):
        assert not IDENTITY.search(text), text
    assert votes.visible is False
    # the base model alone cannot be compared blind: the latest run is picked instead
    *_, picker = chat_tab.toggle_blind(ctx, session, True, "base:bundled")
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
    ctx, key = _ctx(), f"run:{trained_run.id}"
    session, *_ = chat_tab.toggle_blind(ctx, None, True, key)
    session, *_ = chat_tab.begin_send(ctx, session, "hello", key, True)
    *_, (left, right, status, votes) = list(chat_tab.stream_reply(ctx, session, "hello", key, "", 0.0, 1.0, 8, 0))
    assert votes.visible and not IDENTITY.search(status)
    tuned_pane = "A" if session.tuned_sides[-1] == "left" else "B"
    _, tally, votes, note = chat_tab.cast_vote(session, "left")
    assert f"Model {tuned_pane} was the **tuned** model" in note and trained_run.name in note
    assert "1 decided votes" in tally
    lines = (runs_root / trained_run.id / "votes.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["winner"] == "A"
    assert "1 blind votes" in render_markdown(gather(get_run(trained_run.id), with_curve=False))
