"""The Train tab as a person sees it (issue 19), in headless chromium against `python app.py`.

Each test asserts what is drawn or readable on the page: the points of the drawn loss line
(the vega svg path of the line mark in #loss-plot, counted only when it has a colour), the
title's words, where the log is scrolled, whether table headers fit on one line. The tests
share one app and run in order: the first trains the run "alpha colours", later ones open it
from fresh pages, stop a second run, and rename the first.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from conftest import toy_rows
from finetune_core.data.dataset import write_jsonl
from test_browser import ARTIFACTS, launch_app, stop_app, browser  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.browser
ALPHA, BETA = "alpha colours", "beta long run"
TRAIN_BLUE = "rgb(37, 99, 235)"  # the "train" series' colour in the tab's color_map (#2563eb)
# Points of each drawn line in the loss chart, by stroke colour: a path vega leaves without a
# stroke (a series its colour scale does not know) is not drawn, so it does not count.
LINE_POINTS = """() => Object.fromEntries([...document.querySelectorAll('#loss-plot svg g.mark-line path')]
  .filter(p => getComputedStyle(p).stroke !== 'none' && getComputedStyle(p).visibility !== 'hidden')
  .map(p => [getComputedStyle(p).stroke, ((p.getAttribute('d') || '').match(/[ML]/g) || []).length]))"""
LOG_SCROLL = """() => { const t = document.querySelector('#run-log textarea');
  return {top: t.scrollTop, height: t.clientHeight, total: t.scrollHeight, text: t.value}; }"""
# For each header cell of the runs table: its text and on how many lines that text lies.
HEADER_LINES = """() => [...document.querySelectorAll('#runs-table thead th')].map(th => {
  const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
  const tops = new Set(); let text = '';
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    text += node.textContent.trim();
    const range = document.createRange(); range.selectNodeContents(node);
    for (const r of range.getClientRects()) if (r.width > 0) tops.add(Math.round(r.top));
  }
  return [text, tops.size];
}).filter(([text]) => text)"""


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("train-app")
    data = root / "colours.jsonl"
    write_jsonl(data, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(48)])
    proc, url, log = launch_app(root, tiny_model_dir)
    yield SimpleNamespace(url=url, data=data)
    stop_app(proc, log, root)


@pytest.fixture(autouse=True)
def close_pages(browser):
    """Each test's pages close when it ends: pages left open keep polling the app every second and
    slow the runs of the tests after them."""
    yield
    for context in browser.contexts:
        context.close()


def open_page(browser, app, tab: bool = True):
    """A new visitor's page (its own browser context), on the Train tab."""
    page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    page.set_default_timeout(30_000)
    page.goto(app.url)
    page.wait_for_selector("#data-upload")
    if tab:
        page.get_by_role("tab", name="2 · Train").click()
    return page


def title(page) -> str:
    return page.locator("#run-title").inner_text()


def train_points(page) -> int:
    return page.evaluate(LINE_POINTS).get(TRAIN_BLUE, 0)


def wait_title(page, *words: str, timeout: int = 60_000) -> None:
    """Wait until the title holds every word; on a timeout, say what the title and the log's end said."""
    from playwright.sync_api import TimeoutError as PageTimeout

    js = " && ".join(f"t.includes({w!r})" for w in words)
    try:
        page.wait_for_function(f"(() => {{ const t = document.querySelector('#run-title').innerText; return {js}; }})()",
                               timeout=timeout)
    except PageTimeout:
        log = page.evaluate(LOG_SCROLL)["text"].splitlines()[-6:]
        raise AssertionError(f"title {title(page)!r} never held {words}; the log ended with {log}") from None


def start_run(page, app, name: str, steps: int, accum: int = 1) -> None:
    """Upload the toy data, set a small schedule (`accum` batches per step) and the run's name, press Train."""
    page.get_by_role("tab", name="1 · Data").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(app.data))
    page.wait_for_function("document.querySelector('#data-status').innerText.includes('Ready')")
    page.get_by_role("tab", name="2 · Train").click()
    page.get_by_text("Schedule and batching").click()
    # batches of 24 rows: a step of the tiny model takes long enough for the page to see the curve grow
    for field, value in (("max_steps", steps), ("batch_size", 24), ("grad_accum", accum), ("logging_steps", 1)):
        box = page.locator(f"#cfg-{field} input")
        box.fill(str(value))
        box.press("Tab")
    page.locator("#run-name textarea, #run-name input").first.fill(name)
    page.locator("#train-button").click()


def pick_run(page, name: str) -> None:
    """Choose a run in "Open run" by the name it is listed with."""
    page.locator("#run-pick input").click()
    page.locator("#run-pick li, ul[role=listbox] li").filter(has_text=name).first.click()


def assert_log_follows(page) -> None:
    log = page.evaluate(LOG_SCROLL)
    assert log["total"] > log["height"] + 20, log  # more lines than fit: there is something to follow
    assert log["top"] + log["height"] >= log["total"] - 2, log  # the newest line is in sight


def test_the_page_that_pressed_train_draws_the_growing_curve_and_follows_the_log(browser, app):
    page = open_page(browser, app)
    # four batches a step: slow enough, even on an idle machine, for the page to see several ticks
    start_run(page, app, ALPHA, steps=16, accum=4)
    samples, deadline = [], time.time() + 120
    while time.time() < deadline:
        words = title(page)
        samples.append((words, train_points(page)))
        if "completed" in words:
            break
        page.wait_for_timeout(250)
    page.wait_for_function(f"({LINE_POINTS})()[{TRAIN_BLUE!r}] >= 16")  # every step, drawn
    page.screenshot(path=str(ARTIFACTS / "train-1-pressed-train.png"), full_page=True)
    during = [points for words, points in samples if "running" in words and points > 0]
    assert len(set(during)) >= 2 and during == sorted(during), samples  # it grew while the run ran
    assert ALPHA in title(page) and "completed (16 of 16 steps)" in title(page)
    assert_log_follows(page)


def test_a_fresh_page_shows_the_finished_run_its_curve_and_lists_it(browser, app):
    page = open_page(browser, app)
    wait_title(page, ALPHA, "completed")  # not "No run yet": the visitor's latest run
    page.wait_for_function(f"({LINE_POINTS})()[{TRAIN_BLUE!r}] >= 16")
    page.wait_for_function("document.querySelector('#run-log textarea').value.includes('Run completed')")
    page.wait_for_timeout(300)
    assert_log_follows(page)  # filled while its tab was hidden, then shown: still at the newest line
    page.locator("#run-pick input").click()
    options = page.locator("#run-pick li, ul[role=listbox] li").filter(has_text=ALPHA)
    options.first.wait_for(state="visible")  # the Open run list has it, by name, on a page just opened
    page.screenshot(path=str(ARTIFACTS / "train-2-fresh-page.png"), full_page=True)


def test_runs_table_and_device_line_read_plainly(browser, app):
    page = open_page(browser, app)
    page.wait_for_function(f"document.querySelector('#runs-table').innerText.includes({ALPHA!r})")
    assert "16/16" in page.locator("#runs-table").inner_text()
    headers = {text.strip("⋮ ").lower(): lines for text, lines in page.evaluate(HEADER_LINES)}  # ⋮: a menu button
    assert {"name", "state", "steps", "model", "method", "data", "reason"} <= set(headers), headers
    assert all(lines == 1 for lines in headers.values()), headers  # no header broken over lines
    assert page.evaluate("(() => { const w = document.querySelector('#runs-table .table-wrap')"
                         " || document.querySelector('#runs-table table').parentElement;"
                         " return w.scrollWidth <= w.clientWidth + 1; })()")  # the columns fit at 1366 px
    device = page.locator("#train-device").inner_text()
    assert "Training runs on this machine's" in device and "precision" in device
    assert "bf16 matrix" not in device and "cpu /" not in device
    page.screenshot(path=str(ARTIFACTS / "train-3-runs-table.png"), full_page=True)


def test_stop_from_another_page_says_where_it_stopped_and_keeps_the_log(browser, app):
    starter = open_page(browser, app)
    start_run(starter, app, BETA, steps=400)
    watcher = open_page(browser, app)  # a second page, opened while it trains
    wait_title(watcher, BETA, "running, step")
    watcher.wait_for_function(f"({LINE_POINTS})()[{TRAIN_BLUE!r}] >= 2")
    watcher.locator("#stop-button").click()
    for page in (watcher, starter):  # a step, the checkpoint and the page's next poll: well within two minutes
        wait_title(page, BETA, "stopped at step", "of 400", timeout=120_000)
    watcher.wait_for_timeout(2000)  # it stays: not "No run yet" a few seconds later
    assert "stopped at step" in title(watcher) and BETA in title(watcher)
    log = watcher.evaluate(LOG_SCROLL)
    assert "Stop requested" in log["text"] and "Run stopped" in log["text"]
    assert_log_follows(watcher)
    assert train_points(watcher) >= 2  # the curve up to where it stopped
    watcher.screenshot(path=str(ARTIFACTS / "train-4-stopped.png"), full_page=True)


def test_opening_a_finished_run_on_a_fresh_page_draws_its_curve(browser, app):
    page = open_page(browser, app)
    wait_title(page, BETA, "stopped at step")  # the latest run, shown first
    pick_run(page, ALPHA)
    wait_title(page, ALPHA, "completed")
    page.wait_for_function(f"({LINE_POINTS})()[{TRAIN_BLUE!r}] >= 16")


def test_rename_the_picked_run_and_a_bad_name_is_refused_by_field(browser, app):
    page = open_page(browser, app)
    pick_run(page, ALPHA)
    wait_title(page, ALPHA)
    box = page.locator("#rename-box textarea, #rename-box input").first
    box.fill("   ")
    page.locator("#rename-button").click()
    page.get_by_text("Run name: type a name").first.wait_for(state="visible")
    box.fill("alpha renamed")
    page.locator("#rename-button").click()
    wait_title(page, "alpha renamed", "completed")
    page.wait_for_function("document.querySelector('#runs-table').innerText.includes('alpha renamed')")
    page.screenshot(path=str(ARTIFACTS / "train-5-renamed.png"), full_page=True)
