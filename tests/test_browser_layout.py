"""What a person sees on every tab at 1366 px (a laptop) and 390 px (a phone): the key texts show whole.

One app (the tiny test model) with a finished two-step run in its runs folder. For each width one page
loads the Customer intents sample, opens the Data tab's Hub section and walks the seven tabs (the five
steps, Runs and Settings); in each, the key elements (tab buttons, headings, labels, buttons, upload
boxes' texts, table header cells, the guide banner) are measured in the page by tests/layout_check.js:
text wider than its box (scrollWidth > clientWidth), cut off by an ancestor or off the screen, a word
broken across lines, an upload box's label over its icon. Viewport
screenshots of each tab land in tests/artifacts/layout-<tab>-<width>.png.

The Data tab also shows its column pickers named for the file's format, its messages in plain words,
and a message meant for the user is one line in the app log, not a traceback.

    .venv/bin/python -m pytest -q -m "" -x tests/test_browser_layout.py
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import make_trained_run
from test_browser import ARTIFACTS, launch_app, stop_app, browser  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.browser
CHECK_JS = (Path(__file__).parent / "layout_check.js").read_text(encoding="utf-8")
WIDTHS = (1366, 390)
STEPS = {"data": "1 · Data", "train": "2 · Train", "evaluate": "3 · Evaluate", "chat": "4 · Chat",
         "export": "5 · Export"}
TABS = {**STEPS, "runs": "Runs", "settings": "Settings"}  # Settings: shown to everyone on a local app
SAMPLE = "#sample-3"  # Customer intents (classification): labels chart, issues and preview tables
HEADER = ["#studio-header", "#guide-banner", ".tab-wrapper"]
KEY_ELEMENTS = ["button[role=tab]", "h1", "h2", "h3", "h4", "[data-testid=block-info]",
                "[data-testid=block-label]", ".label-wrap > span", "label > span", "button",
                "[data-testid=upload-text]", "th", "#guide-banner p"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_dir):
    """The app, with one finished tiny run (two steps) already in its runs folder; (url, root)."""
    root = tmp_path_factory.mktemp("layout-app")
    old = os.environ.get("STUDIO_RUNS_DIR")
    os.environ["STUDIO_RUNS_DIR"] = str(root / "runs")  # the same runs folder the app reads
    try:
        make_trained_run(tiny_model_dir, steps=2)
    finally:
        os.environ.pop("STUDIO_RUNS_DIR") if old is None else os.environ.__setitem__("STUDIO_RUNS_DIR", old)
    proc, url, log = launch_app(root, tiny_model_dir)
    yield url, root
    stop_app(proc, log, root)


def open_page(browser, url: str, width: int):
    """A new page at `width` px, once the Data tab is drawn."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#data-upload")
    return page


def wait_for_status(page, text: str) -> str:
    page.wait_for_function(f"document.querySelector('#data-status').innerText.includes({json.dumps(text)})")
    return seen(page, "#data-status")


def seen(page, selector: str) -> str:
    """The text of `selector` as a person sees it: scrolled to, inside the viewport."""
    element = page.locator(selector)
    element.scroll_into_view_if_needed()
    box, view = element.bounding_box(), page.viewport_size
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= view["width"] + 1, (selector, box)
    return element.inner_text()


@pytest.fixture(scope="module")
def walked(browser, studio):
    """Per width: the problems found in the page header and in each tab, with the sample loaded."""
    found: dict[int, dict[str, list[str]]] = {}
    for width in WIDTHS:
        page = open_page(browser, studio[0], width)
        page.locator(SAMPLE).click()
        wait_for_status(page, "Ready")
        found[width] = {"header": page.evaluate(CHECK_JS, [HEADER, KEY_ELEMENTS])}
        found[width]["tab buttons"] = tab_buttons_off_screen(page)
        page.locator("#data-hub").get_by_text("From the Hugging Face Hub").click()  # measured open
        page.locator("#data-hub-id").wait_for()
        for tab, name in TABS.items():
            open_tab(page, name)
            page.wait_for_timeout(1200)  # plots and tables settle
            page.screenshot(path=str(ARTIFACTS / f"layout-{tab}-{width}.png"))
            found[width][tab] = page.evaluate(CHECK_JS, [["[role=tabpanel]"], KEY_ELEMENTS])
            if tab == "data":  # the Hub section sits below the fold
                page.locator("#data-hub").scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / f"layout-data-hub-{width}.png"))
        page.close()
    return found


def open_tab(page, name: str) -> None:
    """Click a tab's button; one that Gradio tucked into its "More tabs" menu is clicked there
    (`tab_buttons_off_screen` reports that as a problem of its own)."""
    button = page.get_by_role("tab", name=name)
    if not (button.count() == 1 and button.is_visible()):
        page.locator(".overflow-menu > button").click()
        button = page.locator(".overflow-dropdown button", has_text=name)
    button.click()


def tab_buttons_off_screen(page) -> list[str]:
    """Each of the five steps must be a tab button a person sees (not tucked in a "More tabs" menu);
    Runs and Settings may be."""
    problems = []
    for name in STEPS.values():
        button = page.get_by_role("tab", name=name)
        box = button.bounding_box() if button.count() == 1 and button.is_visible() else None
        if not box or box["x"] < 0 or box["x"] + box["width"] > page.viewport_size["width"] + 1:
            problems.append(f"tab {name!r} is not shown in the tab strip")
    return problems


@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_header_and_every_tab_button_show_whole(walked, width):
    problems = walked[width]["header"] + walked[width]["tab buttons"]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("tab", "width"), [pytest.param(t, w, id=f"{t}-{w}") for t in TABS for w in WIDTHS])
def test_key_texts_show_whole_on_every_tab(walked, tab, width):
    problems = walked[width][tab]
    assert problems == [], f"{len(problems)} clipped or overflowing texts:\n" + "\n".join(problems)


@pytest.fixture()
def page(browser, studio):
    pg = open_page(browser, studio[0], 1366)
    yield pg
    pg.close()


def _upload(page, path: Path) -> None:
    page.locator("#data-upload input[type=file]").set_input_files(str(path))


@pytest.mark.parametrize("width", WIDTHS)
def test_upload_boxes_show_their_label_icon_and_text_apart(browser, studio, width):
    page = open_page(browser, studio[0], width)
    try:
        problems = page.evaluate(CHECK_JS, [["#data-upload", "#data-eval-upload"], KEY_ELEMENTS])
        for box in ("#data-upload", "#data-eval-upload"):
            page.locator(box).scroll_into_view_if_needed()
            words = page.locator(f"{box} [data-testid=upload-text]").inner_text()
            assert "Click to Upload" in words  # the text a person must see whole
        assert problems == [], "\n".join(problems)
    finally:
        page.close()


def test_the_column_pickers_are_named_for_the_format_found(page, tmp_path):
    page.locator(SAMPLE).click()
    wait_for_status(page, "Ready")
    assert seen(page, "#data-prompt-column [data-testid=block-info]") == "Text column (the text to classify)"
    qa = tmp_path / "questions.csv"
    qa.write_text("question,answer\n" + "".join(f"What is {i} plus {i}?,{2 * i}\n" for i in range(20)),
                  encoding="utf-8")
    _upload(page, qa)
    wait_for_status(page, "Ready: 20 rows")
    assert seen(page, "#data-prompt-column [data-testid=block-info]") == "Prompt column"
    completion = seen(page, "#data-completion-column [data-testid=block-info]")
    assert completion == "Completion column (the answer to learn)"
    assert "classification" not in page.locator("#data-prompt-column, #data-completion-column").all_inner_texts()


def test_an_empty_file_is_said_in_plain_words(page, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    _upload(page, empty)
    status = wait_for_status(page, "Not usable")
    assert status.startswith("Not usable: The file is empty: it needs at least one example."), status
    assert "file: the file" not in status


def test_a_prompt_longer_than_the_max_length_is_named_by_row(page, tmp_path):
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(1, 13)]
    rows[6]["prompt"] = "Summarise this note: " + "lorem ipsum dolor " * 250  # file row 7, far over 512 tokens
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _upload(page, data)
    wait_for_status(page, "Ready")
    summary = seen(page, "#data-summary")
    assert ("Row 7: the prompt alone is longer than the maximum length (512 tokens), so nothing of the answer "
            "would be learned. Raise the max length or shorten the prompt.") in summary, summary
    assert "nothing left to learn" not in summary and "max_length" not in summary


def test_a_user_message_is_one_line_in_the_app_log(page, studio):
    log = studio[1] / "app.log"
    page.locator("#data-apply").click()  # nothing loaded yet: a message for the user, not a bug
    toast = page.get_by_text("Load a sample or upload a file first.")
    toast.first.wait_for()
    assert toast.first.is_visible()
    deadline = time.time() + 10
    while "Load a sample or upload a file first." not in log.read_text() and time.time() < deadline:
        time.sleep(0.2)
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if "Load a sample or upload a file first." in ln]
    assert len(lines) == 1 and lines[0].startswith("Shown to the user in ui.data_tab."), lines
    assert "Traceback" not in text, text[-3000:]
