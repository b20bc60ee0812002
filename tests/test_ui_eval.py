"""Evaluate tab handlers, called as plain functions on the session's tiny trained run.

The run (see tests/test_run_eval.py) has 8 held-out rows; its base answers ""
and its tuned side gets 3 of 8 labels right, so accuracy goes 0.0 -> 0.375 with
3 wins, 5 ties, 0 losses. One evaluation per module (on a copy of the run in a
private runs root) feeds the read-only checks.
"""
from __future__ import annotations

import doctest
import filecmp
import json
import re
import shutil
import threading

import gradio as gr
import pytest
from matplotlib.figure import Figure

from evaluation.compare import compare
from evaluation.heldout_loss import add_lower_is_better
from finetune_core.data.dataset import write_jsonl
from finetune_core.inference.generation import InferenceModel
from finetune_core.runs.store import get_run
from ui import eval_cards, eval_progress, eval_tab
from ui.context import AppContext
from ui.widgets import run_name_md
from ui_support import shared_for
from ui.eval_cards import cards_html, summary_html
from ui.eval_settings import extra_metrics
from ui.eval_tab import (CANCELLED, EXAMPLE_HEADERS, ORDERS, arm_cancel, cancel_evaluation, evaluate,
                         examples_frame, export_results, order_examples, order_view, poll, runs_dropdown, show_run,
                         watch_run)

BAD_IDS = ["../../etc", "/etc/passwd", "..", "20260101-000000-x-abcdef/../../etc"]


@pytest.fixture(scope="module")
def env(trained_run, tmp_path_factory):
    """A runs root holding a copy of the trained run, and an AppContext whose exports go to tmp."""
    root = tmp_path_factory.mktemp("eval-tab-runs")
    shutil.copytree(trained_run.path, root / trained_run.id)
    shutil.rmtree(root / trained_run.id / "eval", ignore_errors=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_RUNS_DIR", str(root))
        mp.delenv("STUDIO_REQUIRE_LOGIN", raising=False)
        mp.delenv("APP_AUTH", raising=False)
        ctx = AppContext()
        ctx.settings.exports_dir = tmp_path_factory.mktemp("exports")
        yield ctx, trained_run.id, root


@pytest.fixture(scope="module")
def evaluated(env):
    """One evaluation through the tab, on the model the app's cache already holds."""
    ctx, run_id, root = env
    cached = ctx.models.get(f"run:{run_id}")
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        # Evaluation must reuse the cached model, never load a second copy.
        mp.setattr(InferenceModel, "from_run", classmethod(lambda *a, **k: pytest.fail("loaded a second model")))
        view = evaluate(ctx, run_id, limit=0, batch_size=4, max_new_tokens=0, with_loss=False,
                        cancel=threading.Event(), order=ORDERS[0],
                        progress=lambda text, fraction: calls.append((text, fraction)),
                        metrics=extra_metrics(["chrf"]))  # one extra metric ticked in Settings
    assert ctx.models.get(f"run:{run_id}") is cached
    return view, calls


@pytest.fixture()
def fresh_run(trained_run, runs_root):
    """A copy of the trained run, not evaluated, alone in a function-scoped runs root."""
    shutil.copytree(trained_run.path, runs_root / trained_run.id)
    shutil.rmtree(runs_root / trained_run.id / "eval", ignore_errors=True)
    return runs_root / trained_run.id


def _meta(root, run_id) -> dict:
    return json.loads((root / run_id / "eval" / "meta.json").read_text(encoding="utf-8"))


def test_empty_states_say_what_to_do(runs_root, trained_run):
    ctx = AppContext()
    assert "Train a run first" in show_run("").status
    with pytest.raises(gr.Error, match="Train a run first"):
        evaluate(ctx, "")
    assert runs_dropdown(None, None).value is None
    shutil.copytree(trained_run.path, runs_root / trained_run.id)
    view = show_run("")
    assert "Pick a run" in view.status and view.summary == "" and view.cards == "" and view.examples.empty
    assert view.confusion["visible"] is False and view.downloads["visible"] is False


def test_not_evaluated_run_offers_evaluate(fresh_run, tmp_path):
    ctx = AppContext()
    ctx.settings.exports_dir = tmp_path / "exports"
    run_id = fresh_run.name
    view = show_run(run_id)
    assert "has not been evaluated yet" in view.status and "8 held-out rows" in view.status
    assert view.summary == "" and view.cards == ""
    assert list(view.examples.columns) == EXAMPLE_HEADERS and view.examples.empty
    with pytest.raises(gr.Error, match="press Evaluate first"):
        export_results(ctx, run_id)
    assert runs_dropdown(None, None).value == run_id  # the newest (only) run is preselected


def test_plain_text_rows_ask_for_loss_before_loading(fresh_run, monkeypatch):
    write_jsonl(fresh_run / "data" / "heldout.jsonl", [{"text": f"Ball {i} is blue."} for i in range(3)])
    assert "Also compute held-out loss" in show_run(fresh_run.name).status
    ctx = AppContext()
    monkeypatch.setattr(ctx.models, "get", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(gr.Error, match="Also compute held-out loss"):
        evaluate(ctx, fresh_run.name, with_loss=False)


def test_bad_settings_are_refused(fresh_run):
    ctx = AppContext()
    for kwargs, message in (({"batch_size": 0}, "Batch size"), ({"limit": -1}, "Rows to evaluate"),
                            ({"max_new_tokens": "x"}, "Max new tokens")):
        with pytest.raises(gr.Error, match=message):
            evaluate(ctx, fresh_run.name, **kwargs)


def test_paths_are_not_run_ids(env):
    ctx, _run_id, _root = env
    for bad in BAD_IDS:
        for call in (lambda: show_run(bad), lambda: evaluate(ctx, bad), lambda: export_results(ctx, bad),
                     lambda: order_examples(bad, ORDERS[0])):
            with pytest.raises(gr.Error, match="not a run id") as info:
                call()
            assert "etc" not in str(info.value)  # the text sent is not echoed back


def test_login_required(env, monkeypatch):
    ctx, run_id, _root = env
    monkeypatch.setenv("STUDIO_REQUIRE_LOGIN", "1")
    with pytest.raises(gr.Error, match="log in"):
        evaluate(ctx, run_id, request=None)
    with pytest.raises(gr.Error, match="log in"):
        export_results(ctx, run_id, request=None)


def test_evaluation_fills_every_output(env, evaluated):
    ctx, run_id, root = env
    view, _calls = evaluated
    run = get_run(run_id)
    # the run by its human name (and the id's time and tail), never the bare id
    assert view.status.startswith(f"Results for run **{run_name_md(run.label())}**") and "classification" in view.status
    # 3 of 8 rows gained, none lost: exact McNemar p = 0.25, so the page does not call it better
    assert ('<td class="ev-metric">accuracy ↑</td><td class="ev-num">0.000</td><td class="ev-num">0.375</td>'
            '<td class="ev-num"><span class="ev-unclear">+0.375 no clear change</span></td>') in view.summary
    assert "not distinguishable from no change on 8 rows (+0.375" in view.summary
    # the ticked extra metric is scored too, with its interval
    chrf_row = view.summary[view.summary.index('<td class="ev-metric">chrf'):]
    assert re.match(r'<td class="ev-metric">chrf ↑</td>(<td class="ev-num">[0-9.]+</td>){2}.*?'
                    r'<td class="ev-num">[+-][0-9.]+ to [+-][0-9.]+</td>', chrf_row)
    assert "**3** wins · **5** ties · **0** losses" in view.counts
    assert view.cards.count('<article class="ev-card') == 8 and "All 8 held-out rows, biggest wins first" in view.cards
    assert ctx.evaluations.get(run_id) is None  # no longer in progress
    assert isinstance(view.delta_plot["value"], Figure)
    assert view.confusion["visible"] is True and isinstance(view.confusion["value"], Figure)
    ex = view.examples
    assert list(ex.columns) == EXAMPLE_HEADERS and len(ex) == 8
    assert list(ex["delta"]) == sorted(ex["delta"], reverse=True) and ex["delta"].iloc[0] == 1.0
    assert sorted(ex["row"]) == list(range(8))
    assert sorted(p.name for p in (root / run_id / "eval").iterdir()) == ["examples.csv", "meta.json",
                                                                          "results.json"]


def test_progress_names_the_phase_and_rows(evaluated):
    _view, calls = evaluated
    texts = [t for t, _f in calls]
    assert texts[0].startswith("Loading the model")
    assert "Base (adapter off): generating 4/8 rows" in texts
    assert "Tuned (adapter on): generating 8/8 rows" in texts
    assert [f for _t, f in calls] == sorted(f for _t, f in calls) and calls[-1][1] == 1.0


def test_saved_result_is_shown_without_rerunning(env, evaluated, monkeypatch):
    ctx, run_id, _root = env
    view, _calls = evaluated
    monkeypatch.setattr(eval_tab, "evaluate_run", lambda *a, **k: pytest.fail("evaluated again"))
    monkeypatch.setattr(ctx.models, "get", lambda *a, **k: pytest.fail("loaded a model"))
    shown = show_run(run_id)
    assert shown.status == view.status
    assert shown.summary == view.summary and shown.cards == view.cards and shown.examples.equals(view.examples)
    assert shown.confusion["visible"] is True
    assert "· evaluated" in [label for label, value in eval_tab.run_choices() if value == run_id][0]


def test_example_order(env, evaluated):
    _ctx, run_id, _root = env
    cards, table = order_view(run_id, ORDERS[2])
    assert list(table["row"]) == list(range(8)) and cards.index("<b>Row 0</b>") < cards.index("<b>Row 1</b>")
    wins = order_examples(run_id, ORDERS[0])
    losses = order_examples(run_id, ORDERS[1])
    original = order_examples(run_id, ORDERS[2])
    assert list(wins["delta"]) == sorted(wins["delta"], reverse=True)
    assert list(losses["delta"]) == sorted(losses["delta"])
    assert list(original["row"]) == list(range(8))
    assert original.loc[1, "input"] == "Item 41: which colour is the blue ball number 41?"
    assert order_examples("", ORDERS[0]).empty


def test_downloads_are_copies_in_the_exports_dir(env, evaluated):
    ctx, run_id, root = env
    first = export_results(ctx, run_id)
    second = export_results(ctx, run_id)
    exports = ctx.settings.exports_dir.resolve()
    for paths in (first, second):
        names = [p.rsplit("/", 1)[-1] for p in paths]
        assert names == [f"{run_id}-results.json", f"{run_id}-examples.csv"]
        for path, original in zip(paths, ("results.json", "examples.csv")):
            assert str(root) not in path and path.startswith(str(exports) + "/")
            assert filecmp.cmp(path, root / run_id / "eval" / original, shallow=False)
    # A fresh random folder per export: one user's link does not reveal another's.
    folders = {p.rsplit("/", 2)[-2] for p in first + second}
    assert len(folders) == 2 and all(len(f) >= 16 and run_id not in f for f in folders)


def test_cancel_saves_nothing_and_keeps_the_previous_results(env, evaluated):
    ctx, run_id, root = env
    before = _meta(root, run_id)
    event, button = arm_cancel(None)
    assert not event.is_set() and button["interactive"] is False
    cancel_evaluation(event)
    assert event.is_set()
    # Cancelled while queued: nothing runs.
    with pytest.warns(UserWarning, match="cancelled"):
        view = evaluate(ctx, run_id, cancel=event)
    assert view.status.endswith(CANCELLED) and "Results for run" in view.status
    # Cancelled during the tuned side, after its first batch.
    event, _ = arm_cancel(event)

    def progress(text, fraction):
        if text.startswith("Tuned"):
            cancel_evaluation(event)

    with pytest.warns(UserWarning, match="cancelled"):
        view = evaluate(ctx, run_id, batch_size=2, cancel=event, progress=progress)
    assert view.status.endswith(CANCELLED) and len(view.examples) == 8
    assert _meta(root, run_id) == before  # the previous evaluation is untouched
    assert ctx.evaluations.get(run_id) is None


def test_summary_marks_lower_is_better():
    c = compare("generation", ["q"], ["a b"], ["x"], ["a b"])
    add_lower_is_better(c, "eval_loss", 2.0, 1.5)
    add_lower_is_better(c, "perplexity", 7.39, None)
    table = summary_html(c.summary)
    assert ('<td class="ev-metric">eval_<wbr>loss ↓</td><td class="ev-num">2.000</td><td class="ev-num">1.500</td>'
            '<td class="ev-num"><span class="ev-better">-0.500 better</span></td>') in table
    assert '<td class="ev-num">—</td><td class="ev-num"><span class="ev-—">— —</span>' in table  # perplexity
    assert '<td class="ev-metric">rouge' in table and "↑ higher is better" in table
    assert summary_html([]) == ""


def test_model_text_is_plain_text(runs_root):
    ctx = AppContext()
    c = compare("generation", ["<b>hi</b>"], ["**ref** ${1+1}"], ["<img src=x onerror=alert(1)>"], [""])
    table = examples_frame(c.examples)
    assert table.loc[0, "base output"] == "<img src=x onerror=alert(1)>"  # kept as text, not escaped twice
    cards = cards_html(table)
    # Shown literally in the cards: escaped, and no template syntax left for Gradio's HTML templates.
    assert "<img" not in cards and "&lt;img src=x onerror=alert(1)&gt;" in cards
    assert "&lt;b&gt;hi&lt;/b&gt;" in cards and "**ref** &#36;&#123;1+1&#125;" in cards
    assert "(no output)" in cards  # the empty tuned answer says so
    with gr.Blocks() as demo:
        shown = eval_tab.build(ctx, shared_for(demo)).examples
    text_types = [t for h, t in zip(EXAMPLE_HEADERS, shown.datatype) if h in ("input", "reference", "base output",
                                                                           "tuned output")]
    assert text_types == ["str"] * 4  # "str" cells render as text; "markdown"/"html" would render markup
    assert not {"markdown", "html"} & set(shown.datatype)


def test_cards_preview_the_part_of_the_input_that_differs():
    ask = ("Classify the text into one of: compliment, delivery_delay, login_problem.\n\nText: {}\n"
           "Answer with the label only.")
    inputs = [ask.format("my parcel is late"), ask.format("lovely service")]
    c = compare("classification", inputs, ["delivery_delay", "compliment"], ["", ""], ["delivery_delay", "x"],
                labels=["compliment", "delivery_delay", "login_problem"])
    cards = cards_html(examples_frame(c.examples), ORDERS[0])
    assert "<summary><span class=\"ev-k\">Input</span> …Text: my parcel is late…" in cards
    assert cards.count("Classify the text") == 2  # the whole input is a click away
    assert "tuned better" in cards and "same score" in cards


def test_progress_is_shown_to_every_page_watching_the_run(env, evaluated):
    ctx, run_id, _root = env
    running = ctx.evaluations.start(run_id, "colours")
    try:
        ctx.evaluations.update(running, "Tuned (adapter on): generating 4/8 rows", 0.75)
        view, line, token = watch_run(ctx, run_id)
        assert line == "Evaluating **colours**: 4 of 8 held-out rows… (tuned model, adapter on · 75 % done)"
        assert token == running.token and view.status.startswith("Results for run")  # previous results stay
        first = poll(ctx, run_id, None)  # a page that had not seen it: the line, the token and the View
        assert first[:2] == (line, running.token) and first[3].startswith("Results for run")
        again = poll(ctx, run_id, running.token)  # then only the line
        assert again[0] == line and all(part == gr.skip() for part in again[1:])
        with pytest.raises(gr.Error, match="being evaluated already"):
            evaluate(ctx, run_id)  # one evaluation of a run at a time
    finally:
        ctx.evaluations.finish(running)
    ended = poll(ctx, run_id, running.token)  # the page that saw it: the results and the picker's fresh labels
    assert ended[:2] == ("", None) and "· evaluated" in ended[2]["choices"][0][0]
    assert ended[3].startswith("Results for run")
    assert all(part == gr.skip() for part in poll(ctx, run_id, None))  # nothing running, nothing seen


def test_a_run_never_evaluated_says_its_results_are_coming(fresh_run):
    ctx = AppContext()
    running = ctx.evaluations.start(fresh_run.name, "colours")
    view, line, _token = watch_run(ctx, fresh_run.name)
    assert "has not been evaluated" not in view.status and "appear here when the evaluation finishes" in view.status
    assert line == "Evaluating **colours**: starting…"
    ctx.evaluations.finish(running)


def test_the_tab_modules_examples_hold():
    for module in (eval_cards, eval_progress):
        assert doctest.testmod(module).failed == 0, module.__name__
