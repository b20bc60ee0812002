"""Preference data in, validated like SFT data: every preference layout (TRL explicit and
implicit pairs, LLaMA-Factory ShareGPT pairs, thumbs up/down, a run's votes) becomes the
contract rows, bad rows are named by row and column, ties and equal answers are left out
with a count, duplicate prompts and leakage are reported, and the split keeps pairs whole.

    .venv/bin/python -m pytest -q tests/test_data_preference.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_core.data.checks import find_duplicates, find_leakage
from finetune_core.data.dataset import DataMapping, inspect_file, inspect_main, prepare_data
from finetune_core.data.formats import detect_format
from finetune_core.data.preference import chosen_as_sft, rows_kind, unpair
from finetune_core.data.split import split_rows
from finetune_core.data.stats import token_stats
from finetune_core.inference.votes import vote_line


from test_data_formats import A, S, U  # message builders shared with the SFT format tests


def pair(prompt, chosen, rejected, system=None):
    return {"prompt": ([S(system)] if system else []) + prompt, "chosen": [A(chosen)], "rejected": [A(rejected)]}


def write(path: Path, records: list, array: bool = False) -> str:
    if array:
        path.write_text(json.dumps(records), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def read(path: str, **mapping):
    return prepare_data(DataMapping(data_path=path, **mapping))


def issues_of(report) -> list[tuple]:
    return [(i.row, i.column, i.message) for i in report.issues]


# -- every format to the contract rows -------------------------------------------------

def test_trl_explicit_strings(tmp_path):
    path = write(tmp_path / "p.jsonl", [{"prompt": "2+2?", "chosen": "4.", "rejected": "5."},
                                        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}])
    report = read(path)
    assert report.format == "preference" and report.usable and report.issues == []
    assert report.rows == [pair([U("2+2?")], "4.", "5."), pair([U("Hi")], "Hello!", "Go away.")]
    assert report.summary()["dropped"] == {"identical": 0}


def test_trl_explicit_message_lists_and_the_run_system_prompt(tmp_path):
    records = [
        {"prompt": [S("Be brief."), U("Capital of France?")], "chosen": [A("Paris.")], "rejected": [A("Lyon.")]},
        # an answer written as the whole conversation is cut back to its last turn
        {"prompt": [U("Colour of grass?")], "chosen": [U("Colour of grass?"), A("Green.")], "rejected": "Blue."},
    ]
    report = read(write(tmp_path / "p.jsonl", records), system_prompt="You help.")
    assert report.rows == [pair([U("Capital of France?")], "Paris.", "Lyon.", system="Be brief."),
                           pair([U("Colour of grass?")], "Green.", "Blue.", system="You help.")]


def test_pairs_under_a_question_column_with_a_system_column(tmp_path):
    records = [{"system": "You are terse.", "question": "Sky colour?", "chosen": "Blue.", "rejected": "Green."}]
    report = read(write(tmp_path / "orca.jsonl", records))
    assert report.format == "preference" and report.spec.prompt_column == "question"
    assert report.rows == [pair([U("Sky colour?")], "Blue.", "Green.", system="You are terse.")]


def test_trl_implicit_pairs_share_their_prompt(tmp_path):
    history = [U("Hi"), A("Hello, how can I help?"), U("Name a fruit.")]
    records = [{"chosen": history + [A("Apple.")], "rejected": history + [A("No.")]},
               {"chosen": [S("Terse."), U("1+1?"), A("2")], "rejected": [S("Terse."), U("1+1?"), A("3")]}]
    report = read(write(tmp_path / "i.jsonl", records))
    assert report.format == "preference_implicit" and report.issues == []
    assert report.rows == [pair(history, "Apple.", "No."), pair([U("1+1?")], "2", "3", system="Terse.")]


def test_llama_factory_sharegpt_pairs(tmp_path):
    records = [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                           {"from": "human", "value": "Tell a joke."}],
         "chosen": {"from": "gpt", "value": "Why did the chicken cross the road?"},
         "rejected": {"from": "gpt", "value": "No."}},
        {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Thanks!"}],
         "chosen": {"from": "gpt", "value": "You're welcome."}, "rejected": {"from": "gpt", "value": "Whatever."}},
        {"conversations": [{"from": "human", "value": "Weather?"}], "system": "You are a forecaster.",
         "chosen": {"from": "gpt", "value": "Sunny."}, "rejected": {"from": "gpt", "value": "Dunno."}},
    ]
    report = read(write(tmp_path / "lf.json", records, array=True))
    assert report.format == "sharegpt_preference" and report.issues == []
    assert report.rows == [
        pair([U("Hi"), A("Hello!"), U("Tell a joke.")], "Why did the chicken cross the road?", "No."),
        pair([U("Thanks!")], "You're welcome.", "Whatever.", system="Be kind."),
        pair([U("Weather?")], "Sunny.", "Dunno.", system="You are a forecaster."),
    ]


def test_thumbs_from_messages_and_from_prompt_completion(tmp_path):
    chats = [{"messages": [U("Hi"), A("Hello!")], "label": True}, {"messages": [U("Hi"), A("Go away.")], "label": False}]
    report = read(write(tmp_path / "kto.jsonl", chats))
    assert report.format == "unpaired_preference" and report.issues == []
    assert report.rows == [{"prompt": [U("Hi")], "completion": [A("Hello!")], "desirable": True},
                           {"prompt": [U("Hi")], "completion": [A("Go away.")], "desirable": False}]
    assert "thumbs: 1 desirable, 1 undesirable" in report.notes
    flat = [{"prompt": "2+2?", "completion": "4", "kto_tag": "True"}, {"prompt": "2+2?", "completion": "22",
                                                                       "kto_tag": " false"}]
    report = read(write(tmp_path / "flat.jsonl", flat))
    assert report.format == "unpaired_preference" and report.spec.label_column == "kto_tag"
    assert [(r["completion"][0]["content"], r["desirable"]) for r in report.rows] == [("4", True), ("22", False)]


def test_thumbs_with_0_1_labels_only_when_chosen_by_hand(tmp_path):
    path = write(tmp_path / "n.jsonl", [{"prompt": "q", "completion": "a", "label": 1},
                                        {"prompt": "q", "completion": "b", "label": 0}])
    assert read(path).format == "prompt_completion"  # 0/1 may as well be a class id
    chosen = read(path, data_format="unpaired_preference")
    assert [r["desirable"] for r in chosen.rows] == [True, False] and chosen.issues == []


def vote(winner: str, tuned_side: str = "left", tuned: str = "Tuned answer.", base: str = "Base answer.",
         history: list | None = None) -> dict:
    """A file line exactly as the Chat tab writes it (votes.vote_line on an in-memory vote)."""
    history = history or [U("Question?")]
    choice = {"tuned": tuned_side, "base": "right" if tuned_side == "left" else "left"}.get(winner, winner)
    memory = {"prompt_base": [S("base system")] + history, "prompt_tuned": history, "base": base, "tuned": tuned,
              "tuned_side": tuned_side, "choice": choice, "winner": winner}
    return vote_line(memory, {"tuned": "tuned:run-1", "base": "base:bundled"}, when=0)


def test_a_runs_votes_become_pairs_with_ties_counted(tmp_path):
    chat = [U("Hi"), A("Hello."), U("And now?")]
    lines = [vote("tuned", "left", history=chat), vote("base", "right"), vote("tie"), vote("both_bad"),
             vote("tuned", tuned="Same.", base="Same."),
             {"prompt": "Old question", "answers": {"A": "x", "B": "y"}, "winner": "B"},  # no histories kept
             {"winner": "tuned"}]  # schema 1: no answers
    report = read(write(tmp_path / "votes.jsonl", lines))
    assert report.format == "votes"
    assert report.rows == [pair(chat, "Tuned answer.", "Base answer."),
                           pair([U("Question?")], "Base answer.", "Tuned answer.", system="base system"),
                           pair([U("Old question")], "y", "x")]
    assert report.dropped == {"ties": 1, "both_bad": 1, "identical": 1}
    assert report.summary()["dropped"] == {"ties": 1, "both_bad": 1, "identical": 1}
    assert issues_of(report) == [(7, "answers", "this vote has no answers A and B (a vote saved before answers "
                                               "were kept), so it cannot become a pair")]


def test_a_vote_against_an_empty_answer_is_a_pair_and_a_non_text_answer_is_named(tmp_path):
    earlier = [U("Hi"), A(""), U("Question?")]  # the model said nothing the turn before: still its history
    lines = [vote("tuned", "left", base="", history=earlier), vote("base", "left", tuned=""),
             {**vote("tuned", "left"), "answers": {"A": "x", "B": 7}}]
    report = read(write(tmp_path / "votes.jsonl", lines))
    assert report.rows == [pair(earlier, "Tuned answer.", ""),
                           pair([U("Question?")], "Base answer.", "", system="base system")]
    assert issues_of(report) == [(3, "answers", "answer B should be text, got int")]


def test_only_ties_is_not_usable_and_says_why(tmp_path):
    report = read(write(tmp_path / "votes.jsonl", [vote("tie"), vote("tie")]))
    assert not report.usable
    assert report.issues[-1].message == "no usable rows: of 2 rows, left out on purpose: 2 tie votes"


# -- detection, both ways --------------------------------------------------------------

CHAT = [U("Hi"), A("Hello")]


@pytest.mark.parametrize("records, expected", [
    ([{"messages": CHAT}] * 3, "messages"),
    ([{"messages": CHAT, "label": "spam"}, {"messages": CHAT, "label": "ham"}], "messages"),
    ([{"messages": CHAT, "label": True}, {"messages": CHAT, "label": False}], "unpaired_preference"),
    ([{"messages": CHAT, "label": "true"}, {"messages": CHAT, "label": "FALSE"}], "unpaired_preference"),
    ([{"messages": CHAT, "label": True}, {"messages": CHAT, "label": "maybe"}], "messages"),
    ([{"text": f"review {i}", "label": ["good", "bad"][i % 2]} for i in range(30)], "classification"),
    ([{"prompt": "q", "completion": "a", "label": "positive"}], "prompt_completion"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b"}], "preference"),
    ([{"chosen": CHAT, "rejected": CHAT}], "preference_implicit"),
    ([{"conversations": [{"from": "human", "value": "q"}], "chosen": {}, "rejected": {}}], "sharegpt_preference"),
    ([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}], "sharegpt"),
    ([{"prompt": "q", "answers": {"A": "a", "B": "b"}, "winner": "A"}], "votes"),
])
def test_detection(records, expected):
    columns = list(dict.fromkeys(k for r in records for k in r))
    spec, why = detect_format(columns, records)
    assert spec is not None and spec.format == expected and why


def test_a_text_file_with_a_true_false_label_is_not_thumbs():
    records = [{"text": f"sentence {i}", "label": i % 2 == 0} for i in range(30)]
    spec, _ = detect_format(["text", "label"], records)
    assert spec is None or spec.format != "unpaired_preference"


# -- bad rows, named -------------------------------------------------------------------

def test_bad_rows_are_named_by_row_and_column(tmp_path):
    records = [
        {"prompt": "ok", "chosen": "good", "rejected": "bad"},
        {"prompt": "ok 2", "chosen": "good", "rejected": "bad"},
        {"prompt": "q3", "chosen": "  ", "rejected": "bad"},
        {"prompt": "q4", "chosen": "good", "rejected": 7},
        {"prompt": [U("q5"), A("a5")], "chosen": "good", "rejected": "bad"},
        {"prompt": "q6", "chosen": None, "rejected": "bad"},
        {"prompt": "q7", "chosen": [U("hm")], "rejected": "bad"},
        {"prompt": "q8", "chosen": [A("one"), A("two")], "rejected": "bad"},
    ]
    report = read(write(tmp_path / "bad.jsonl", records), drop_bad_rows=False)
    assert [i for i in issues_of(report) if i[0]] == [  # (the mixed-type warnings are file-wide)
        (3, "chosen", "the chosen answer is empty"),
        (4, "rejected", "the rejected answer should be text, got number"),
        (5, "prompt", "the prompt must end with a user turn (the answers reply to it)"),
        (6, "chosen", "the chosen answer is missing or null"),
        (7, "chosen", "the chosen answer should be an assistant message, got role 'user'"),
        (8, "chosen", "the chosen answer should be one assistant message, got 2 messages"),
    ]
    assert report.issues[-6].text() == "row 3, column 'chosen': the chosen answer is empty"
    assert len(report.rows) == 2 and not report.usable  # bad rows refuse the file unless they are dropped


def test_a_missing_column_names_it(tmp_path):
    report = read(write(tmp_path / "m.jsonl", [{"prompt": "q", "chosen": "a"}]), data_format="preference")
    assert report.fatal and issues_of(report) == [
        (None, "rejected", "the preference format needs column 'rejected', which the file lacks "
                           "(columns: prompt, chosen)")]


def test_bad_thumbs_implicit_and_sharegpt_rows(tmp_path):
    thumbs = [{"messages": CHAT, "label": True}] * 9 + [{"messages": CHAT, "label": "maybe"}]
    report = read(write(tmp_path / "t.jsonl", thumbs))  # one typo in ten: still thumbs, the typo named
    assert report.format == "unpaired_preference"
    assert issues_of(report)[-1:] == [(10, "label", "column 'label' should be true or false (is the answer desirable?), "
                                               "got 'maybe'")]
    implicit = [{"chosen": "text", "rejected": "text 2"}, {"chosen": [U("a"), A("b")], "rejected": [U("c"), A("d")]}]
    report = read(write(tmp_path / "i.jsonl", implicit))
    rows = [i for i in report.issues if i.row]
    assert [(i.row, i.column) for i in rows] == [(1, "chosen"), (2, "chosen")]
    assert "must be whole conversations" in rows[0].message
    assert "share every message up to one final assistant answer" in rows[1].message
    lf = [{"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "human", "value": "x"},
           "rejected": {"from": "gpt", "value": "y"}}]
    report = read(write(tmp_path / "lf.json", lf, array=True))
    assert issues_of(report)[0] == (1, "chosen", "the chosen answer should be an assistant message, got role 'user'")


def test_identical_answers_are_dropped_with_a_count(tmp_path):
    records = [{"prompt": "q", "chosen": "Same.", "rejected": "Same. "}, {"prompt": "r", "chosen": "a", "rejected": "b"}]
    report = read(write(tmp_path / "same.jsonl", records))
    assert report.rows == [pair([U("r")], "a", "b")] and report.issues == [] and report.usable
    assert report.dropped == {"identical": 1}


# -- duplicates, leakage, split ----------------------------------------------------------

def pairs_file(tmp_path, n: int = 20, repeats: int = 2) -> str:
    records = [{"prompt": f"question {i // repeats}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]
    records.append(dict(records[0]))  # one exact duplicate
    return write(tmp_path / "pairs.jsonl", records)


def test_duplicate_prompts_and_exact_duplicates_are_reported(tmp_path):
    report = read(pairs_file(tmp_path))
    dups = find_duplicates(report.rows, report.row_numbers)
    assert (dups["count"], dups["examples"]) == (1, [[1, 21]])
    assert dups["same_prompt"]["count"] == 11 and dups["same_prompt"]["examples"][0] == [1, 2, 21]


def test_the_split_keeps_pairs_and_prompts_whole(tmp_path):
    rows = read(pairs_file(tmp_path)).rows
    for kind_rows in (rows, unpair(rows)):
        train, held = split_rows(kind_rows, 0.3, seed=7)
        assert held and len(train) + len(held) == len(kind_rows)
        assert find_leakage(train, held)["same_prompt"] == 0
        assert split_rows(kind_rows, 0.3, seed=7) == (train, held)
    train, held = split_rows(unpair(rows), 0.3, seed=7)
    for row in held:  # both answers of a held-out pair are held out together
        same = [r for r in held if r["prompt"] == row["prompt"]]
        assert {r["desirable"] for r in same} == {True, False}


def test_leakage_with_a_separate_evaluation_file_is_found_on_the_prompt(tmp_path):
    train = pairs_file(tmp_path)
    held = write(tmp_path / "held.jsonl", [{"prompt": "question 0", "chosen": "other", "rejected": "worse"}])
    found = inspect_file(DataMapping(data_path=train, eval_path=held))
    assert found["stats"]["leakage"] == {"count": 0, "same_prompt": 1, "examples": []}


def test_rows_kind_unpair_and_chosen_as_sft():
    pairs = [pair([U("q")], "good", "bad")]
    assert unpair(pairs) == [{"prompt": [U("q")], "completion": [A("good")], "desirable": True},
                             {"prompt": [U("q")], "completion": [A("bad")], "desirable": False}]
    assert chosen_as_sft(pairs) == [{"prompt": [U("q")], "completion": [A("good")]}]
    assert chosen_as_sft(unpair(pairs)) == chosen_as_sft(pairs)  # thumbs: the desirable answers
    assert [rows_kind(r) for r in (pairs, unpair(pairs), [{"text": "x"}], chosen_as_sft(pairs), [])] == [
        "pairs", "unpaired", "text", "sft", "sft"]


def test_token_statistics_count_the_prompt_and_both_answers(tokenizer):
    rows = [pair([U("What is two plus two?")], "Four.", "It is five, or maybe six, hard to say really.")]
    stats = token_stats(rows, tokenizer)
    assert stats["chosen"]["max"] < stats["rejected"]["max"]
    assert stats["completion"]["max"] == stats["rejected"]["max"]  # the longer answer is the one a cut hits
    assert stats["total"]["max"] == stats["prompt"]["max"] + stats["rejected"]["max"]


# -- the command line -------------------------------------------------------------------

def test_inspect_prints_kind_counts_dropped_and_issues(tmp_path, capsys):
    path = write(tmp_path / "votes.jsonl", [vote("tuned"), vote("tuned", tuned="Other."), vote("tie"),
                                                    {"winner": "tuned"}])
    assert inspect_main([path]) == 0
    out = capsys.readouterr().out
    assert "format: votes" in out and "rows: 2 usable of 4 read" in out
    assert "dropped on purpose: ties 1, both_bad 0, identical 0" in out
    assert "prompts asked more than once: 1" in out
    assert "  row 4, column 'answers': this vote has no answers A and B" in out


# -- the real files ------------------------------------------------------------------------

def test_llama_factory_demo_files_end_to_end(shared_datasets):
    dpo = inspect_file(DataMapping(data_path=str(shared_datasets / "lf_dpo_en_demo.json")))
    assert dpo["format"] == "sharegpt_preference" and dpo["rows"] == 300 and dpo["issue_count"] == 0
    assert dpo["dropped"] == {"identical": 0} and dpo["usable"]
    assert dpo["stats"]["duplicates"]["same_prompt"]["count"] == 5  # the README: 5 prompts occur twice
    assert dpo["stats"]["split"]["held_out"] == 30 and dpo["stats"]["leakage"]["same_prompt"] == 0
    rows = prepare_data(DataMapping(data_path=str(shared_datasets / "lf_dpo_en_demo.json"))).rows
    assert rows_kind(rows) == "pairs" and all(r["prompt"][-1]["role"] == "user" for r in rows)
    assert sum(r["prompt"][0]["role"] == "system" for r in rows) == 80
    kto = prepare_data(DataMapping(data_path=str(shared_datasets / "lf_kto_en_demo.json")))
    assert kto.format == "unpaired_preference" and len(kto.rows) == 300 and kto.issues == []
    assert sum(r["desirable"] for r in kto.rows) == 150 and rows_kind(kto.rows) == "unpaired"


# -- the Data tab (plain functions, no browser) -----------------------------------------

def spans_text(spans, category=None) -> str:
    return "".join(text for text, kind in spans if category is None or kind == category)


def test_the_data_tab_shows_chosen_and_rejected_as_the_model_sees_them(tokenizer):
    from ui.data_tab import REJECTED_LABEL, TRAINED, load_sample, view_values

    view = load_sample("Helpful answers (preference pairs)", tokenizer)
    assert view.data_state is not None and view.data_state["mapping"]["data_format"] == "preference"
    first = json.loads(Path(view.data_state["mapping"]["data_path"]).read_text(encoding="utf-8").splitlines()[0])
    assert view.example_label.startswith("Chosen:") and view.rejected
    for spans, answer in ((view.example, first["chosen"]), (view.rejected, first["rejected"])):
        assert first["prompt"] in spans_text(spans) and first["prompt"] not in spans_text(spans, TRAINED)
        assert answer in spans_text(spans, TRAINED)  # the answer is what is trained, the prompt masked
    values = view_values(view)
    assert values[8]["label"] == view.example_label and values[-1]["visible"] is True
    assert REJECTED_LABEL.startswith("Rejected:")  # the second view's own heading
    assert {"prompt", "chosen", "rejected"} <= set(view.preview.columns) and "completion" not in view.preview.columns
    assert "Left out on purpose: none" in view.summary and "Prompts asked more than once: 0" in view.summary
    assert "chosen median" in view.summary
    plain = view_values(load_sample("Fact cards (prompt/completion)", tokenizer))
    assert plain[-1]["visible"] is False  # no rejected answer for SFT rows


def test_thumbs_preview_says_up_or_down(tokenizer):
    from ui.data_tab import load_sample

    view = load_sample("Helpful answers (thumbs up/down)", tokenizer)
    assert view.data_state["rows"] == 24 and list(view.preview["thumbs"][:2]) == ["up", "down"]
    assert "thumbs up" in view.example_label and not view.rejected


@pytest.fixture()
def voted_runs(runs_root):
    from finetune_core.config import RunConfig
    from finetune_core.inference.votes import append_vote
    from finetune_core.runs.store import create_run

    def voted(owner: dict) -> str:
        run = create_run(RunConfig.from_dict({"model": "bundled", "data_path": "toy.jsonl"}), label="votes",
                         owner=owner)
        for winner in ("tuned", "base", "tie"):
            side = {"tuned": "left", "base": "right"}.get(winner, winner)
            append_vote(run, {"prompt_base": [U(f"q {winner}")], "prompt_tuned": [U(f"q {winner}")], "base": "b",
                              "tuned": "t", "tuned_side": "left", "choice": side, "winner": winner})
        return run.id

    create_run(RunConfig.from_dict({"model": "bundled", "data_path": "toy.jsonl"}), label="novotes")
    return voted({"browser": "mine"}), voted({"browser": "theirs"})


def test_the_votes_of_a_run_become_the_data(voted_runs, tokenizer):
    from finetune_core.runs.store import get_run
    from ui.data_tab import load_votes, vote_run_choices

    mine, theirs = voted_runs
    assert sorted(run_id for _, run_id in vote_run_choices()) == sorted([mine, theirs])  # a local app: all
    assert all(label.endswith("· 3 votes") for label, _ in vote_run_choices())
    view = load_votes(mine, tokenizer)
    mapping = view.data_state["mapping"]
    assert mapping["data_path"] == str(get_run(mine).path / "votes.jsonl") and mapping["data_format"] == "votes"
    assert view.data_state["rows"] == 2 and "Left out on purpose: 1 tie vote" in view.status
    assert "Left out on purpose: 1 tie vote (checked: ties, both bad, identical)" in view.summary
    assert view.example_label.startswith("Chosen:") and spans_text(view.rejected).endswith("b<|im_end|>\n")
    assert (get_run(mine).path / "votes.jsonl").exists()


def test_only_own_runs_votes_on_a_public_app(voted_runs, monkeypatch):
    import gradio as gr

    from finetune_core.runs.ownership import Visitor
    from ui.data_tab import load_votes, vote_run_choices

    mine, theirs = voted_runs
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    me = Visitor(browser="mine")
    assert [run_id for _, run_id in vote_run_choices(me)] == [mine]
    assert load_votes(mine, who=me).data_state["rows"] == 2
    with pytest.raises(gr.Error, match="can train on its votes"):
        load_votes(theirs, who=me)
    with pytest.raises(gr.Error, match="not a run id"):
        load_votes("../../etc/passwd", who=me)
