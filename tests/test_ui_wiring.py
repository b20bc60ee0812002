"""The tabs' cross-tab wiring (ui/context.py): what app.build_app hands each tab and
gathers back is a real component of the page, and the session's run reaches every
run picker that follows it (a run finished after the page was built included)."""
from __future__ import annotations

import dataclasses
import shutil

import gradio as gr
import pytest

from ui.chat_models import RUN_PREFIX
from ui.context import Page

OLDER, NEWER = "20200101-000000-older-aaaaaa", "20300101-000000-newer-bbbbbb"


@pytest.fixture()
def demo(runs_root, tiny_model_dir, monkeypatch):
    """The whole app, built while the runs folder is still empty."""
    import app

    monkeypatch.setenv("STUDIO_DEFAULT_MODEL", str(tiny_model_dir))
    monkeypatch.delenv("STUDIO_REQUIRE_LOGIN", raising=False)
    monkeypatch.delenv("APP_AUTH", raising=False)
    return app.build_app()


def leaves(value):
    """The components (or callables) inside one field: itself, or each item of a list or dict."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return value
    return [value]


def test_every_field_of_the_page_is_a_component_of_this_page(demo):
    page = demo.studio_page
    assert isinstance(page, Page)
    shared = page.shared
    assert shared.blocks is demo and isinstance(shared.tabs, gr.Tabs)
    assert isinstance(shared.data_state, gr.State) and isinstance(shared.run_state, gr.State)
    parts = [getattr(page, f.name) for f in dataclasses.fields(page)]
    for part in parts:
        for field in dataclasses.fields(part):
            value = getattr(part, field.name)
            if field.name == "blocks":
                continue
            if callable(value) and not isinstance(value, gr.blocks.Block):  # DataParts.load_sample
                continue
            if value is None and field.name == "picked":  # ChatParts.picked is optional for tab-only builds
                continue
            items = leaves(value)
            assert items, f"{type(part).__name__}.{field.name} is empty"
            for item in items:
                assert isinstance(item, gr.blocks.Block), f"{type(part).__name__}.{field.name}: {item!r}"
                assert demo.blocks.get(item._id) is item, f"{type(part).__name__}.{field.name} is not on the page"
    assert page.data.outputs[0] is shared.data_state  # a data view sets the state the Train tab reads
    assert page.evaluate.examples in page.evaluate.view
    assert set(page.data.sample_buttons) and callable(page.data.load_sample)


def _listener(demo, block, event: str, output):
    """The one event on `block`'s `event` that fills `output` (besides the guided demo's resume on load,
    which fills pickers only while it walks a visitor's unfinished demo: tests/test_guide.py)."""
    found = [fn for fn in demo.fns.values() if (block._id, event) in fn.targets and output in fn.outputs
             and fn.name != "resume"]
    assert len(found) == 1, f"{len(found)} events on {event} fill {output!r}"
    return found[0]


def _picked(demo, block, event: str, picker, run_id: str):
    """Fire the event as Gradio would (session's run, current pick, no request); the picker's new value."""
    fn = _listener(demo, block, event, picker)
    assert fn.inputs[:2] == [demo.studio_page.shared.run_state, picker]
    result = fn.fn(run_id, None, None)
    update = result[fn.outputs.index(picker)] if isinstance(result, tuple) else result
    assert isinstance(update, gr.Dropdown)
    return update.value


def test_the_sessions_run_reaches_every_picker_that_follows_it(demo, trained_run, runs_root):
    """Runs finished after the page was built: page load, a change of the session's run (Train,
    Resume, a pick elsewhere) and opening the Evaluate or Chat tab each select the session's run,
    not merely the newest."""
    for run_id in (OLDER, NEWER):
        shutil.copytree(trained_run.path, runs_root / run_id)
    page = demo.studio_page
    run_state = page.shared.run_state
    pickers = {page.evaluate.run: OLDER, page.export.run: OLDER, page.chat.run: RUN_PREFIX + OLDER}
    for picker, wanted in pickers.items():
        assert _picked(demo, demo, "load", picker, OLDER) == wanted
        assert _picked(demo, run_state, "change", picker, OLDER) == wanted
    tabs = {b.id: b for b in demo.blocks.values() if isinstance(b, gr.Tab)}
    assert _picked(demo, tabs["evaluate"], "select", page.evaluate.run, OLDER) == OLDER
    assert _picked(demo, tabs["chat"], "select", page.chat.run, OLDER) == RUN_PREFIX + OLDER
    # no session run yet: the newest run, so the check above could tell them apart
    assert _picked(demo, run_state, "change", page.export.run, "") == NEWER
