"""The guided demo's walk: kept per visitor, resumed by a new page, never driven by two pages at once."""
from __future__ import annotations

import gradio as gr
import pytest

from finetune_core.config import RunConfig
from finetune_core.runs.store import create_run
from finetune_core.runs.ownership import Visitor
from ui.context import AppContext
from ui.guide import CHAT, DONE, TRAIN, Guide, Walk, unfinished_walk


@pytest.fixture()
def guide(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    from app import build_app

    ctx = AppContext()
    ctx.settings.default_model = str(tiny_model_dir)
    demo = build_app(ctx)
    return Guide(ctx, demo.studio_page, gr.Markdown())


def _run(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n', encoding="utf-8")
    return create_run(RunConfig.from_dict({"data_path": str(data)}), name="demo run")


def test_only_a_walk_with_a_run_and_steps_left_is_resumed():
    ctx = AppContext()
    assert unfinished_walk(ctx, "v1") is None
    ctx.guides["v1"] = Walk(driver="page-a", step=1)  # still loading data: nothing to resume yet
    assert unfinished_walk(ctx, "v1") is None
    ctx.guides["v1"] = Walk(driver="page-a", run_id="r", step=CHAT)
    assert unfinished_walk(ctx, "v1") is ctx.guides["v1"]
    ctx.guides["v1"].step = DONE
    assert unfinished_walk(ctx, "v1") is None


def test_a_run_that_did_not_complete_ends_the_walk_with_a_message(guide, tmp_path):
    walk = Walk(driver="page-a", run_id=_run(tmp_path).id, step=TRAIN)
    texts = [update[guide.status] for update in guide.walk_on(walk, Visitor(), None)]
    assert "Step 2/4" in texts[0] and "“demo run”" in texts[0]  # the run's human name, not its id
    assert "demo stopped" in texts[-1] and "queued" in texts[-1]
    assert walk.step == DONE


def test_the_page_that_lost_the_walk_stops_at_its_next_update(guide, tmp_path):
    walk = Walk(driver="page-a", run_id=_run(tmp_path).id, step=TRAIN)
    old = guide.walk_on(walk, Visitor(), None)
    assert "Step 2/4" in next(old)[guide.status]
    walk.driver = "page-b"  # a reload took the walk over
    assert list(old) == []  # the old page shows nothing more: the new one shows the rest
