"""The Runs tab's handlers as plain functions: the queue as each visitor may see it and cancel it, a sweep
queued from the Train tab's settings, the ranked sweep table with its best row styled, the comparison of
picked runs, and the tab's wiring in the app."""
from __future__ import annotations

import gradio as gr
import pytest

from conftest import toy_rows
from finetune_core.config import RunConfig
from finetune_core.data.dataset import write_jsonl
from finetune_core.runs.ownership import Visitor
from finetune_core.runs.store import get_run, list_runs
from finetune_core.training.sweep import BEST
from sweep_support import FakeQueue, fake_run
from ui.runs_tab import (BEST_STYLE, HIDDEN_RUN, axes_from_rows, cancel_choices, cancel_queued, compare_view,
                         queue_frame, start_sweep, styled_metrics, sweep_choices, sweep_view)

ALICE, BOB = Visitor(user="alice"), Visitor(user="bob")


@pytest.fixture()
def base(tmp_path, monkeypatch) -> RunConfig:
    path = tmp_path / "toy.jsonl"
    write_jsonl(path, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(24)])
    return RunConfig(max_steps=2).with_overrides({"data_path": str(path)})


def test_queue_shows_each_visitor_their_runs_and_only_the_owner_cancels(runs_root, monkeypatch):
    monkeypatch.setenv("STUDIO_REQUIRE_LOGIN", "1")
    queue = FakeQueue()
    theirs, _ = queue.enqueue(RunConfig(), owner={"user": "alice"}, name="alice's run")
    mine, _ = queue.enqueue(RunConfig(), owner={"user": "bob"}, name="bob's run")
    queue.now = fake_run("training now", state="running", owner={"user": "bob"})
    frame = queue_frame(queue, BOB)
    assert frame.to_dict("records") == [
        {"position": "now", "name": "training now", "owner": "you", "sweep": "", "state": "running"},
        {"position": "1", "name": HIDDEN_RUN, "owner": "", "sweep": "", "state": ""},
        {"position": "2", "name": "bob's run", "owner": "you", "sweep": "", "state": "waiting"}]
    assert cancel_choices(queue, BOB) == [("2. bob's run", mine.id)]
    with pytest.raises(gr.Error, match="does not exist"):  # another's run: not even confirmed to exist
        cancel_queued(queue, theirs.id, BOB)
    assert "Cancelled \"bob's run\"" in cancel_queued(queue, mine.id, BOB)
    assert get_run(mine.id).status()["state"] == "cancelled" and len(queue_frame(queue, BOB)) == 2


def test_sweep_rows_refuse_values_without_a_field_and_a_field_twice():
    assert axes_from_rows([("learning_rate", "1e-4, 2e-4"), ("", ""), ("lora_r", "8,16")]) == {
        "learning_rate": "1e-4, 2e-4", "lora_r": "8,16"}
    with pytest.raises(gr.Error, match="row 2: pick the field"):
        axes_from_rows([("lora_r", "8,16"), ("", "3")])
    with pytest.raises(gr.Error, match="row 2: lora_r is already swept"):
        axes_from_rows([("lora_r", "8"), ("lora_r", "16")])
    with pytest.raises(gr.Error, match="Pick a field"):
        axes_from_rows([("", ""), (None, None)])


def test_queue_sweep_from_the_train_tabs_settings(runs_root, base, monkeypatch):
    import ui.runs_tab
    from finetune_core.training.queue import RunQueue
    from finetune_core.training.runner import TrainingSlot

    estimated = []  # the memory estimate (tested with the Train tab) is asked about every run
    monkeypatch.setattr(ui.runs_tab, "check_memory", lambda cfg, force=False: estimated.append(cfg.learning_rate))
    queue = RunQueue(TrainingSlot())  # the app's queue, not started: nothing trains here
    queue.enqueue(RunConfig(), name="already waiting")
    runs, said = start_sweep(queue, base, [("learning_rate", "1e-4, 2e-4"), ("", "")], "grid", "rougeL",
                             evaluate=True, name="lr", who=ALICE)
    assert said == 'Queued 2 runs of sweep "lr": positions 2 to 3.' and estimated == [1e-4, 2e-4]
    assert [r.name for r in runs] == ["lr · learning_rate=0.0001", "lr · learning_rate=0.0002"]
    cfg = runs[0].config()
    assert cfg.evaluate_after and cfg.max_steps == 2 and cfg.data.data_path == base.data.data_path
    assert (runs[0].path / "owner.json").read_text().count("alice") == 1
    assert list(queue_frame(queue, ALICE)["sweep"]) == ["", "lr", "lr"]
    with pytest.raises(gr.Error, match="learning_rate: 'fast' is not a valid float"):
        start_sweep(queue, base, [("learning_rate", "1e-4, fast")], who=ALICE)
    with pytest.raises(gr.Error, match="evaluate_after=true"):
        start_sweep(queue, base, [("lora_r", "4, 8")], metric="accuracy", evaluate=False, who=ALICE)
    assert len(queue.items()) == 3
    # a signed-in visitor may have 3 runs waiting: a sweep past that is refused whole
    monkeypatch.setenv("STUDIO_REQUIRE_LOGIN", "1")
    made = len(list_runs())
    with pytest.raises(gr.Error, match="refused the sweep's 2 runs: You already have 2 runs waiting; 2 more would "
                                       "pass this server's limit of 3"):
        start_sweep(queue, base, [("lora_r", "4, 8")], who=ALICE)
    assert len(list_runs()) == made  # nothing was made, so nothing is left behind
    assert len(queue.items()) == 3 and cancel_choices(queue, ALICE) == [
        ("2. lr · learning_rate=0.0001", runs[0].id), ("3. lr · learning_rate=0.0002", runs[1].id)]


def test_sweep_table_is_ranked_with_the_best_row_styled(runs_root):
    tag = {"id": "20260101-101010-abc123", "name": "ranks", "metric": "eval_loss"}
    fake_run("r4", held=(1.1,), sweep={**tag, "values": {"lora_r": 4}})
    fake_run("r8", held=(0.8,), sweep={**tag, "values": {"lora_r": 8}})
    assert sweep_choices() == [("ranks · 2 runs · by eval_loss", tag["id"])]
    styler, picked = sweep_view(tag["id"])
    assert picked["id"] == tag["id"] and picked["metric"] == "eval_loss" and len(picked["runs"]) == 2
    assert list(styler.data["name"]) == ["r8", "r4"] and styler.data.loc[0, "best"] == BEST
    html = styler.to_html()
    assert BEST_STYLE.split(";")[0] in html and "0.8000" in html
    again, _ = sweep_view(tag["id"], picked=picked)  # the page's kept run ids: no lookup
    assert list(again.data["name"]) == ["r8", "r4"]
    with pytest.raises(gr.Error, match="not a sweep id"):
        sweep_view("nonsense")


def test_compare_view_of_the_visitors_runs(runs_root, monkeypatch):
    monkeypatch.setenv("STUDIO_REQUIRE_LOGIN", "1")
    a = fake_run("a", owner={"user": "alice"}, lora_r=4)
    b = fake_run("b", owner={"user": "alice"}, lora_r=8, losses=(2.0, 1.5, 1.0123456))
    other = fake_run("c", owner={"user": "bob"})
    curves, metrics, diff, series = compare_view([a.id, b.id], ALICE)
    assert series == ["a train", "a held-out", "b train", "b held-out"] and len(curves) == 8
    assert list(metrics.columns) == ["metric", "better", "a", "b", "best"]
    assert diff.to_dict("records") == [{"field": "lora_r", "a": "4", "b": "8"}]
    html = styled_metrics(metrics).to_html()  # 4 significant digits; b's final train loss is the best
    assert ">1.012</td>" in html and ">1.2</td>" in html and BEST_STYLE.split(";")[0] in html
    with pytest.raises(gr.Error, match="Compare 2 to 8 runs; got 1"):
        compare_view([a.id], ALICE)
    with pytest.raises(gr.Error, match="does not exist"):
        compare_view([a.id, other.id], ALICE)


def test_the_runs_tab_is_wired_after_train(runs_root):
    import app

    demo = app.build_app()
    parts = demo.studio_page.runs
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"runs-queue", "queue-pick", "queue-cancel", "sweep-field-1", "sweep-values-3", "sweep-mode",
            "sweep-metric", "sweep-evaluate", "sweep-name", "sweep-queue", "sweep-pick", "sweep-table",
            "compare-runs", "compare-button", "compare-plot", "compare-metrics", "compare-config",
            "export-compare"} <= ids
    fns = {f.api_name: f for f in demo.fns.values() if f.api_name}
    assert {"queue_cancel", "sweep_queue", "sweep_table", "compare_runs"} <= set(fns)
    sweep_inputs = set(fns["sweep_queue"].inputs)
    assert demo.studio_page.shared.data_state in sweep_inputs
    assert set(demo.studio_page.train.widgets.values()) <= sweep_inputs
    assert parts.compare_plot in fns["compare_runs"].outputs
    assert any(b.elem_id == "export-compare" for b in fns["export_report"].inputs)
