"""The Evaluate and Export tabs as a person sees them, in headless chromium (issue 19).

One app for the module. Before it starts there is one trained run whose 48
held-out rows have long, classification-style inputs (a shared instruction, the
text, a shared ending): in a plain table such inputs take the width and push
the outputs off-screen. After it starts, a newer run appears (a copy under a
newer id, with its own name): a fresh page must preselect that one, not the
newest run of when the app was built. The tests run in file order: the
evaluation test leaves the newest run evaluated for the layout tests after it.
"""
from __future__ import annotations

import re
import secrets
import shutil
import time

import pytest

from conftest import make_trained_run
from finetune_core.data.dataset import write_jsonl
from finetune_core.runs.store import get_run
from test_browser import ARTIFACTS, _tab, launch_app, stop_app, browser  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.browser
NEWEST = "Newest colours run"
ASK = ("Classify the text into one of: blue, red.\n\nText: Item {i}. A customer writes at some length about the "
       "{colour} ball number {i}, how it arrived, what it looks like in daylight and why they are writing to the "
       "shop about it today.\nAnswer with the label only.")
HELD_OUT = 48
WIDE, PHONE = 1366, 390


def _long_heldout_rows() -> list[dict]:
    rows = []
    for i in range(HELD_OUT):
        colour = ("red", "blue")[i % 2]
        rows.append({"prompt": [{"role": "user", "content": ASK.format(i=i, colour=colour)}],
                     "completion": [{"role": "assistant", "content": colour}], "label": colour})
    return rows


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir):
    """(url, id of the run made after the app started) for an app holding two trained runs."""
    root = tmp_path_factory.mktemp("browser-eval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_RUNS_DIR", str(root / "runs"))
        first, status = make_trained_run(tiny_model_dir, steps=4)
        assert status["state"] == "completed", status
        write_jsonl(first.data_dir / "heldout.jsonl", _long_heldout_rows())
        first.rename("Older colours run")
        proc, url, log = launch_app(root, tiny_model_dir)
        try:
            # A run that finished after the app was built: what a fresh page must preselect.
            time.sleep(1.1)  # run ids carry the second they were made
            newest_id = f"{time.strftime('%Y%m%d-%H%M%S')}-colours-{secrets.token_hex(3)}"
            shutil.copytree(first.path, root / "runs" / newest_id, ignore=shutil.ignore_patterns("eval"))
            get_run(newest_id).rename(NEWEST)
            yield url, newest_id
        finally:
            stop_app(proc, log, root)


def _open(browser, url: str, tab: str | None = "3 · Evaluate"):
    """A fresh page at 1366 px (a new browser context: nothing kept from another page), on `tab`."""
    page = browser.new_context(viewport={"width": WIDE, "height": 900}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#data-upload")
    if tab:
        _tab(page, tab)
    return page


def _picked(page, elem_id: str) -> str:
    """The text the run picker shows (its selected choice's label)."""
    return page.locator(f"#{elem_id} input").input_value()


def _pick_newest(page, run_id: str) -> None:
    """Pick the newest run in the Evaluate picker, as a person would (a fresh page has it already: the
    first test checks that; the others do not depend on it), and wait for the page to show it."""
    page.wait_for_function("document.querySelector('#eval-run input').value !== ''")
    if NEWEST not in _picked(page, "eval-run"):
        page.locator("#eval-run input").click()
        page.get_by_role("option", name=re.compile(NEWEST)).click()
    # the status names the run (by its name; the id's time and tail tell it from a namesake)
    page.wait_for_function(f"document.querySelector('#eval-status').innerText.includes('{run_id[-6:]}')")


def _show_evaluated_newest(page, run_id: str) -> None:
    """The newest run's results on the page (the evaluation test started them: wait for its files)."""
    results = get_run(run_id).eval_dir / "results.json"
    deadline = time.time() + 180
    while not results.is_file() and time.time() < deadline:
        time.sleep(0.5)
    _pick_newest(page, run_id)
    page.wait_for_function("document.querySelector('#eval-status').innerText.includes('Results for run')")


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"eval-{name}.png"), full_page=True)


def test_a_fresh_page_preselects_the_newest_run_in_evaluate_and_export(app, browser):
    url, _newest = app
    page = _open(browser, url)
    # Not the run that was newest when the app was built: the newest now, by its name.
    page.wait_for_function(f"document.querySelector('#eval-run input').value.includes('{NEWEST}')",
                           timeout=20_000)
    assert "not evaluated yet" in _picked(page, "eval-run")
    assert NEWEST in page.locator("#eval-status").inner_text()  # the status names the run too
    _tab(page, "5 · Export")
    page.wait_for_function(f"document.querySelector('#export-run input').value.includes('{NEWEST}')",
                           timeout=20_000)
    page.reload()  # a reload is a fresh page as well
    page.wait_for_selector("#data-upload")
    _tab(page, "3 · Evaluate")
    page.wait_for_function(f"document.querySelector('#eval-run input').value.includes('{NEWEST}')",
                           timeout=20_000)
    page.context.close()


PROGRESS = re.compile(rf"Evaluating {NEWEST}: (\d+) of (\d+) held-out rows…")
# the progress line's text (not Gradio's own status tracker in the same block, which is there but transparent)
SHOWN_PROGRESS = "document.querySelector('#eval-progress [data-testid=markdown]').innerText"


def test_progress_shows_on_every_page_watching_then_results_and_the_picker_says_evaluated(app, browser):
    url, newest = app
    starter, watcher = _open(browser, url), _open(browser, url)
    for page in (starter, watcher):
        _pick_newest(page, newest)
    starter.locator("#eval-settings").get_by_role("button").first.click()
    batch = starter.locator("#eval-batch input[type=number]")
    for _attempt in range(5):  # one row per step: many progress messages, seconds of them
        batch.fill("1")
        batch.press("Tab")
        starter.wait_for_timeout(300)
        if batch.input_value() == "1":
            break
    assert batch.input_value() == "1"
    starter.locator("#eval-button").click()
    # Both pages, the one that started it and one that only watches the run, count the rows.
    seen = {}
    for name, page in (("starter", starter), ("watcher", watcher)):
        page.wait_for_function(f"/of \\d+ held-out rows/.test({SHOWN_PROGRESS})", timeout=60_000, polling=100)
        text = page.locator("#eval-progress [data-testid=markdown]").inner_text()
        match = PROGRESS.search(text)
        assert match and int(match[2]) == HELD_OUT and 0 < int(match[1]) <= HELD_OUT, text
        assert "has not been evaluated" not in page.locator("#eval-status").inner_text()
        seen[name] = text
    _shot(watcher, "progress")
    for page in (starter, watcher):
        page.wait_for_function("document.querySelector('#eval-status').innerText.includes('Results for run')",
                               timeout=180_000)
        page.wait_for_function(f"{SHOWN_PROGRESS}.trim() === ''", timeout=10_000)
        # The picker's label follows: "evaluated", no longer "not evaluated yet".
        page.wait_for_function("document.querySelector('#eval-run input').value.endsWith('· evaluated')",
                               timeout=10_000)
        assert NEWEST in page.locator("#eval-status").inner_text()
    starter.context.close()
    watcher.context.close()


def _box_inside(page, selector: str, width: int) -> dict:
    """The element's bounding box after scrolling it into view; asserts it lies within the viewport."""
    element = page.locator(selector).first
    element.scroll_into_view_if_needed()
    box = element.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0, selector
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)
    assert 0 <= box["y"] and box["y"] + min(box["height"], 20) <= page.viewport_size["height"], (selector, box)
    return box


def test_reference_base_and_tuned_outputs_of_a_row_are_in_view(app, browser):
    url, newest = app
    page = _open(browser, url)
    _show_evaluated_newest(page, newest)
    first = "#eval-cards article >> nth=0"
    texts = {kind: f"{first} >> .ev-{kind} .ev-text" for kind in ("ref", "base", "tuned")}
    assert page.locator(texts["ref"]).inner_text() in ("red", "blue")
    # Side by side at 1366 px: all three in the viewport's width, on one line.
    boxes = {kind: _box_inside(page, selector, WIDE) for kind, selector in texts.items()}
    assert len({round(box["y"]) for box in boxes.values()}) == 1, boxes
    # The input shows its distinctive part; the whole of it opens on a click.
    summary = page.locator(f"{first} >> .ev-input summary")
    assert re.search(r"…Text: Item \d+\. A customer", summary.inner_text()), summary.inner_text()
    summary.click()
    assert "Classify the text into one of: blue, red." in page.locator(f"{first} >> .ev-full").inner_text()
    _shot(page, "cards-1366")
    # On a phone the three stack, each still whole in the width.
    page.set_viewport_size({"width": PHONE, "height": 844})
    page.wait_for_timeout(500)
    for selector in texts.values():
        _box_inside(page, selector, PHONE)
    _shot(page, "cards-390")
    page.context.close()


CLIPPED_HEADERS = """() => Array.from(document.querySelectorAll('#eval-summary th')).flatMap(th => {
    const out = [];
    for (let el = th; el && el.id !== 'eval-summary'; el = el.parentElement)
        if (el.scrollWidth > el.clientWidth + 1) out.push(th.innerText + ' cut in ' + el.tagName);
    if (th.getBoundingClientRect().right > window.innerWidth) out.push(th.innerText + ' off-screen');
    return out; })"""

LABEL_ON_PLOT = """(id) => {
    const block = document.getElementById(id);
    const image = block.querySelector('img, canvas, svg.main-svg');
    if (!image) return 'no drawn chart';
    const art = image.getBoundingClientRect();
    if (art.width < 50 || (image.naturalWidth !== undefined && image.naturalWidth === 0)) return 'chart not drawn';
    const labels = Array.from(block.querySelectorAll('label, [data-testid="block-label"]')).filter(label => {
        const r = label.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && getComputedStyle(label).visibility !== 'hidden';
    });
    return labels.filter(label => { const r = label.getBoundingClientRect();
        return r.left < art.right && r.right > art.left && r.top < art.bottom && r.bottom > art.top; })
        .map(label => label.innerText + ' on the chart').join('; ');
}"""


def test_summary_headers_show_whole_and_chart_labels_leave_the_titles_alone(app, browser):
    url, newest = app
    page = _open(browser, url)
    _show_evaluated_newest(page, newest)
    problems = []  # both checks reported at once
    for plot in ("eval-delta-chart", "eval-confusion"):
        page.locator(f"#{plot}").scroll_into_view_if_needed()
        page.wait_for_function(f"document.querySelector('#{plot} img, #{plot} canvas') !== null")
        problems += [found for found in [page.evaluate(LABEL_ON_PLOT, plot)] if found]
    for width in (WIDE, PHONE):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(500)
        page.locator("#eval-summary").scroll_into_view_if_needed()
        headers = page.locator("#eval-summary th").all_inner_texts()
        assert len(headers) >= 4 and all(h.strip() for h in headers), headers
        problems += [f"{found} at {width} px" for found in page.evaluate(CLIPPED_HEADERS)]
        _shot(page, f"summary-{width}")
    assert problems == []
    page.context.close()


def test_saved_checks_say_what_changed_in_words_at_both_widths(app, browser):
    """A run with a saved general-skill check and judging: picking it shows, in view, the sentence of a
    benchmark's change, a question tuned now gets wrong, and the judge's wins / ties / losses."""
    from test_ui_eval_checks import LOST_QUESTION, write_benchmarks, write_judge

    url, newest = app
    write_benchmarks(get_run(newest).path)
    write_judge(get_run(newest).path)
    page = _open(browser, url)
    _pick_newest(page, newest)
    page.wait_for_function("document.querySelector('#benchmarks-results').innerText.includes('not distinguishable')")
    page.wait_for_function("document.querySelector('#judge-results').innerText.includes('9 wins')")
    lost = "#bench-lost .ev-flip >> nth=0"
    for width in (WIDE, PHONE):
        page.set_viewport_size({"width": width, "height": 900 if width == WIDE else 844})
        page.wait_for_timeout(500)
        sentence = _box_inside(page, "#bench-arc_easy", width)
        assert "not distinguishable from no change on 40 items" in page.locator("#bench-arc_easy").inner_text()
        assert sentence["height"] < 200, sentence  # read as a line or a few, not a word a line
        _box_inside(page, f"{lost} >> .ev-text", width)
        shown = page.locator(lost).inner_text()
        assert LOST_QUESTION in shown and "<script>alert('x')</script>" in shown  # literal text, never markup
        assert "Right answer: carbon dioxide · base picked carbon dioxide · tuned picked oxygen" in shown
        _box_inside(page, "#judge-line", width)
        assert "9 wins, 6 ties, 5 losses" in page.locator("#judge-line").inner_text()
        # the reference switch reads as a line, not squeezed into a sliver beside the judge picker
        ref = _box_inside(page, "#judge-ref", width)
        assert ref["width"] >= 200 and ref["height"] < 120, ref
        # every column of the checks' tables in view: none scrolls sideways inside its box or leaves the page
        wide = page.evaluate("""() => Array.from(document.querySelectorAll('#bench-table, #judge-categories'))
            .filter(w => w.scrollWidth > w.clientWidth + 1 || w.getBoundingClientRect().right > window.innerWidth)
            .map(w => w.id)""")
        assert wide == [], width
        _shot(page, f"checks-{width}")
    page.context.close()


def _in_viewport(page, selector: str) -> bool:
    return page.evaluate(f"""(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();
        return r.height > 0 && r.top < window.innerHeight && r.bottom > 0 && r.width > 0; }})()""")


@pytest.mark.parametrize("width", [WIDE, PHONE])
def test_a_gguf_export_ends_with_its_parity_verdict_and_how_to_run_it(app, browser, width):
    """Export tab: the GGUF download comes with its Modelfile, then the verdict of running the file in
    llama.cpp against the app's model reads under the downloads; the serving panel names the file."""
    from finetune_core.export.parity import llama_cpp_available

    url, newest = app
    page = _open(browser, url, tab="5 · Export")
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_function(f"document.querySelector('#export-run input').value.includes('{NEWEST}')",
                           timeout=20_000)
    page.get_by_role("button", name="GGUF for llama.cpp and Ollama (with its Modelfile)").click()
    # the verdict of the export just made (the run's recorded verdicts, listed before, read otherwise)
    page.wait_for_function("['Passed. parity', 'Differs from the app. parity', 'parity not checked'].some(s => "
                           "document.querySelector('#export-parity').innerText.trim().startsWith(s))", timeout=240_000)
    verdict = page.locator("#export-parity").inner_text()
    expected = "20/20 identical in llama.cpp" if llama_cpp_available() else "llama.cpp is not installed here"
    assert expected in verdict, verdict
    files = page.locator("#export-files").inner_text().replace("\n", "")  # a name and its extension wrap apart
    assert f"{newest}-f16.gguf" in files and f"{newest}-f16.Modelfile" in files
    page.locator("#export-parity").scroll_into_view_if_needed()
    assert _in_viewport(page, "#export-parity")
    page.get_by_text("How to run it elsewhere").click()
    page.wait_for_function("document.querySelector('#export-serving').innerText.includes('ollama create')")
    serving = page.locator("#export-serving").inner_text()
    assert f"llama-server -m ./{newest}-f16.gguf --jinja" in serving and "vllm serve" in serving
    page.screenshot(path=str(ARTIFACTS / f"export-parity-{width}.png"), full_page=True)
    page.context.close()
