"""The side pickers of the Evaluate and Chat tabs, called as plain functions.

Runs: a parent, its child (held-out rows are preference pairs) and a newer sibling on the same base,
each with a random adapter (tests/side_support.py). Evaluate loads the tiny model through the app's
model cache; Chat streams from a fake model (what is checked is who answers and where votes go).

    .venv/bin/python -m pytest -q tests/test_ui_sides.py
"""
from __future__ import annotations

import json

import gradio as gr
import pytest

from chat_support import fake_ctx
from finetune_core.inference.sides import pair_key, pair_slug, run_key
from side_support import PREFERENCE_ROWS, adapter_run
from ui import chat_tab, eval_sides
from ui.chat_models import chat_key, side_a_choices
from ui.context import AppContext
from ui.eval_tab import evaluate, export_results, order_view, show_run


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_RUNS_DIR", str(tmp_path_factory.mktemp("ui-side-runs")))
        mp.delenv("STUDIO_REQUIRE_LOGIN", raising=False)
        mp.delenv("APP_AUTH", raising=False)
        parent = adapter_run(tiny_model_dir, seed=1)
        child = adapter_run(tiny_model_dir, parent=parent, seed=2, heldout=PREFERENCE_ROWS)
        sibling = adapter_run(tiny_model_dir, seed=3)
        child.rename("dpo step")  # names tell the sides apart on the page
        sibling.rename("other sft")
        ctx = AppContext()
        ctx.settings.exports_dir = tmp_path_factory.mktemp("exports")
        yield {"parent": parent, "child": child, "sibling": sibling, "ctx": ctx}


def test_evaluate_pickers_offer_the_family_and_default_to_the_runs_own_pair(runs):
    child, parent, sibling = runs["child"], runs["parent"], runs["sibling"]
    a, b = eval_sides.pickers(child.id)
    assert [key for _, key in a["choices"]] == ["base", run_key(child), run_key(parent), run_key(sibling)]
    assert (a["value"], b["value"], a["visible"]) == (run_key(parent), run_key(child), True)
    a, b = eval_sides.pickers(parent.id)
    assert (a["value"], b["value"]) == ("base", run_key(parent))
    assert eval_sides.pickers(None)[0]["visible"] is False
    with pytest.raises(gr.Error, match="Pick both sides"):
        show_run(child.id, a="run:20990101-000000-nobody-abcdef", b=run_key(child))
    with pytest.raises(gr.Error, match="same model"):
        show_run(child.id, a=run_key(child), b=run_key(child))


def test_preference_rows_show_both_sides_reward_accuracy(runs):
    ctx, child = runs["ctx"], runs["child"]
    view = evaluate(ctx, child.id, batch_size=4, max_new_tokens=2)  # the default pair: parent vs child
    assert view.summary.index("reward_accuracy") < view.summary.index("rougeL")
    assert "ev-headline" in view.summary and "<b>reward_accuracy</b>" in view.summary
    assert "Reward accuracy" in view.counts and view.counts.count("prefers chosen in") == 2
    assert "95% CI" in view.counts and "dpo step" in view.counts
    assert "side A: **" in view.status and "dpo step" in view.summary  # columns named by the sides
    assert "<th>B − A</th>" in view.summary and "dpo step output" in view.cards


def test_any_pair_is_saved_with_its_newer_run_and_found_from_either(runs):
    ctx, child, sibling = runs["ctx"], runs["child"], runs["sibling"]
    a, b = run_key(sibling), run_key(child)
    assert "have not been compared yet" in show_run(child.id, a=a, b=b).status
    view = evaluate(ctx, child.id, batch_size=4, max_new_tokens=2, a=a, b=b)
    folder = sibling.eval_dir / "pairs" / pair_slug(a, b)  # the sibling is newer: its held-out rows
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["sides"] == {"a": a, "b": b} and meta["labels"] == {"a": "other sft", "b": "dpo step"}
    assert "generation" in view.status and "other sft" in view.summary
    assert show_run(child.id, a=a, b=b)[:3] == view[:3] == show_run(sibling.id, a=a, b=b)[:3]
    assert "Results for run **other sft" in view.status  # the run whose held-out rows were scored
    cards, table = order_view(child.id, "Original order", a=a, b=b)
    assert len(table) == 4 and "other sft output" in cards
    names = [p.split("/")[-1] for p in export_results(ctx, child.id, None, a, b)]
    assert names and all(n.startswith(child.id) for n in names)


def test_chat_compares_a_run_with_its_parent_and_keeps_votes_in_the_newer_run(runs):
    child, parent, sibling = runs["child"], runs["parent"], runs["sibling"]
    key = run_key(child)
    assert [k for _, k in side_a_choices(key)] == ["base", run_key(parent), run_key(sibling)]
    assert chat_key(key, None) == key == chat_key(key, run_key(parent))  # the run's default pair
    assert chat_key(key, "base") == pair_key("base", key)
    ctx = fake_ctx()
    # side A is the newer sibling: the vote belongs to the sibling's file, with both model ids
    session, *_ = chat_tab.begin_send(ctx, None, "hello", key, True, side_a=run_key(sibling))
    assert session.run.id == sibling.id and session.side_labels == ("other sft", "dpo step")
    list(chat_tab.stream_reply(ctx, session, "hello", key, "", 0.0, 1.0, 8, 0, side_a=run_key(sibling)))
    pane = session.tuned_sides[-1]  # where the child answered
    _session, tally, _row, note = chat_tab.cast_vote(session, pane)
    assert f"Model {'A' if pane == 'left' else 'B'} was **dpo step**" in note
    assert "**dpo step win rate: 100%**" in tally and "dpo step vs other sft:" in tally
    line = json.loads((sibling.path / "votes.jsonl").read_text(encoding="utf-8"))
    assert sorted(line["models"].values()) == sorted([f"tuned:{sibling.id}", f"run:{child.id}"])
    assert not (child.path / "votes.jsonl").exists()
    assert "dpo step win rate: 100%" in chat_tab.run_tally(key, side_a=run_key(sibling))  # after a reload
    assert "No votes yet" in chat_tab.run_tally(key)  # the parent vs child pair has none


def test_chat_side_picker_follows_the_model_and_names_the_panes(runs):
    child, parent = runs["child"], runs["parent"]
    ctx, key = fake_ctx(), run_key(child)
    *_, picker = chat_tab.change_model(ctx, None, key)
    assert picker.visible and picker.value == run_key(parent)
    session, left, right, _row, status, _tally = chat_tab.change_side(ctx, None, key, "base")
    assert (left.label, right.label) == ("Base", "Tuned") and "dpo step" in status
    session, left, right, _row, status, _tally = chat_tab.change_side(ctx, None, key, run_key(parent))
    assert right.label == "dpo step" and left.label == parent.name
    *_, picker = chat_tab.change_model(ctx, None, "base:bundled")
    assert picker.visible is False
    with pytest.raises(gr.Error, match="Pick what to compare with"):
        chat_tab.change_side(ctx, None, key, "run:20990101-000000-nobody-abcdef")
