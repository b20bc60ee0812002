"""Many runs as a person sees them (issue 23), in headless chromium against `python app.py`: a run
trained as its own process, a two-run sweep queued behind it, the app restarted mid-queue, every run
finishing in the order queued, and the three compared in the Runs tab."""
from __future__ import annotations

import re
import time

import pytest

from conftest import toy_rows
from finetune_core.data.dataset import write_jsonl
from finetune_core.runs.store import list_runs
from test_browser import ARTIFACTS, browser, launch_app, stop_app  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.browser
# Each drawn line of the compare chart with a colour: (stroke, points).
COMPARE_LINES = """() => [...document.querySelectorAll('#compare-plot svg g.mark-line path')]
  .filter(p => getComputedStyle(p).stroke !== 'none' && getComputedStyle(p).visibility !== 'hidden')
  .map(p => [getComputedStyle(p).stroke, ((p.getAttribute('d') || '').match(/[ML]/g) || []).length])"""


def choose(page, selector: str, text: str) -> None:
    """Pick the option of a dropdown whose label holds `text`."""
    page.locator(f"{selector} input").click()
    page.locator("ul[role=listbox] li").filter(has_text=text).first.click()


def fill(page, selector: str, value) -> None:
    box = page.locator(f"{selector} input, {selector} textarea").first
    box.fill(str(value))
    box.press("Tab")


def open_page(browser, url: str, width: int = 1366):
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#data-upload")
    return page


def runs_by_name(root) -> dict:
    import os

    os.environ["STUDIO_RUNS_DIR"] = str(root / "runs")
    return {run.name: run for run in list_runs()}


def test_a_queue_with_a_sweep_survives_a_restart_finishes_in_order_and_compares(browser, tmp_path, tiny_model_dir,
                                                                               monkeypatch):
    data = tmp_path / "colours.jsonl"
    write_jsonl(data, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(48)])
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    app = {}
    try:
        _queue_restart_compare(browser, tmp_path, tiny_model_dir, data, app)
    finally:  # on a failure too: no app (nor its page polling) outlives the test
        for context in browser.contexts:
            context.close()
        if app.get("proc") is not None and app["proc"].poll() is None:
            app["proc"].kill()
            app["log"].close()


def _queue_restart_compare(browser, tmp_path, tiny_model_dir, data, app) -> None:
    """The test's steps; `app` holds the running app's process and log, for the test to stop."""
    proc, url, log = launch_app(tmp_path, tiny_model_dir)
    app.update(proc=proc, log=log)
    page = open_page(browser, url)
    page.locator("#data-upload input[type=file]").set_input_files(str(data))
    page.wait_for_function("document.querySelector('#data-status').innerText.includes('Ready')")
    page.get_by_role("tab", name="2 · Train").click()
    page.get_by_text("Schedule and batching").click()
    for field, value in (("max_steps", 150), ("batch_size", 8), ("logging_steps", 5), ("save_steps", 50)):
        fill(page, f"#cfg-{field}", value)
    page.get_by_text("Where it runs and what tracks it").click()
    choose(page, "#cfg-launcher", "process")
    fill(page, "#run-name", "first as a process")
    page.locator("#train-button").click()
    page.get_by_text('Training started: "first as a process"').wait_for()
    # the sweep: the same settings, trained in the app's thread, 20 steps, two learning rates
    choose(page, "#cfg-launcher", "thread")
    fill(page, "#cfg-max_steps", 20)
    page.get_by_role("tab", name="Runs").click()
    choose(page, "#sweep-field-1", "learning_rate")
    fill(page, "#sweep-values-1", "1e-3, 5e-4")
    fill(page, "#sweep-name", "lr sweep")
    page.locator("#sweep-queue").click()
    page.get_by_text("2 runs").first.wait_for()
    queue = page.locator("#runs-queue")
    for name in ("lr sweep · learning_rate=0.001", "lr sweep · learning_rate=0.0005"):
        queue.get_by_text(name).filter(visible=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "runs-queue-1366.png"), full_page=True)

    runs = runs_by_name(tmp_path)
    first = runs["first as a process"]
    deadline = time.time() + 120
    while first.status().get("state") != "running" and time.time() < deadline:
        time.sleep(0.5)
    assert first.status()["state"] == "running", (first.path / "process.log").read_text()[-2000:]
    page.context.close()
    stop_app(proc, log, tmp_path)  # the app goes; the run's own process does not
    assert first.status()["state"] in ("running", "completed")
    proc, url, log = launch_app(tmp_path, tiny_model_dir)
    app.update(proc=proc, log=log)
    page = open_page(browser, url)
    page.get_by_role("tab", name="2 · Train").click()
    # the new app watches the process it did not start (or, once that ended, the sweep's run)
    page.locator("#run-title").get_by_text(re.compile("first as a process|lr sweep")).wait_for()
    runs = runs_by_name(tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and any(r.status().get("state") != "completed" for r in runs.values()):
        time.sleep(1)
    states = {name: run.status().get("state") for name, run in runs.items()}
    assert set(states.values()) == {"completed"}, states
    order = sorted(runs.values(), key=lambda r: r.status()["started"])
    assert [r.name for r in order] == ["first as a process", "lr sweep · learning_rate=0.001",
                                       "lr sweep · learning_rate=0.0005"]
    assert "re-attached" in first.log_tail(400) or first.status()["finished"] < order[1].status()["started"]

    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-queue").get_by_text("lr sweep").filter(visible=True).first.wait_for(state="detached",
                                                                                         timeout=30_000)
    for name in ("first as a process", "learning_rate=0.001", "learning_rate=0.0005"):
        choose(page, "#compare-runs", name)
    page.keyboard.press("Escape")
    page.locator("#compare-button").click()
    # three training curves drawn, each in its own colour (a held-out loss measured once is one point)
    page.wait_for_function(f"({COMPARE_LINES})().filter(([s, n]) => n >= 2).length >= 3")
    curves = sorted(points for _, points in page.evaluate(COMPARE_LINES) if points >= 2)
    assert len({stroke for stroke, n in page.evaluate(COMPARE_LINES) if n >= 2}) == 3
    assert curves == [20 // 5 + 1, 20 // 5 + 1, 150 // 5 + 1], curves  # logged every 5 steps, and step 1
    diff = page.locator("#compare-config")
    for word in ("learning_rate", "launcher", "max_steps"):
        assert diff.get_by_text(word).filter(visible=True).count(), word
    assert not diff.get_by_text("lora_r", exact=True).filter(visible=True).count()  # the same in all three
    page.screenshot(path=str(ARTIFACTS / "runs-compare-1366.png"), full_page=True)
    narrow = open_page(browser, url, width=390)
    narrow.get_by_role("tab", name="Runs").click()
    narrow.locator("#runs-queue").scroll_into_view_if_needed()
    narrow.screenshot(path=str(ARTIFACTS / "runs-tab-390.png"), full_page=True)
    for context in browser.contexts:
        context.close()
    stop_app(proc, log, tmp_path)
