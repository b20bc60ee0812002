"""The whole path in a real page: headless Debian chromium driven by Playwright.

The app runs as `python app.py` in a subprocess with the tiny test model as its
default model. Screenshots of each tab land in tests/artifacts/ (git-ignored).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, toy_rows
from finetune_core.data.dataset import write_jsonl

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(root: Path, model_dir: Path, **extra_env: str):
    """`python app.py` in a subprocess on a free port, runs/exports/uploads under `root`;
    returns (process, url, log file) once the page answers."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs it with apt-get (package chromium)")
    port = _free_port()
    env = {**os.environ, "STUDIO_RUNS_DIR": str(root / "runs"), "STUDIO_EXPORTS_DIR": str(root / "exports"),
           "STUDIO_UPLOADS_DIR": str(root / "uploads"), "STUDIO_DEFAULT_MODEL": str(model_dir),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1", **extra_env}
    log = open(root / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return proc, url, log
        except OSError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail("the app did not start: " + (root / "app.log").read_text()[-2000:])


def stop_app(proc, log, root: Path) -> None:
    proc.terminate()
    proc.wait(30)
    log.close()
    crashes = unexpected_tracebacks((root / "app.log").read_text())
    assert crashes == [], crashes  # no handler crashed while the page was used


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("browser-app")
    proc, url, log = launch_app(root, tiny_model_dir)
    yield url
    stop_app(proc, log, root)


CHAINED = ("The above exception was the direct cause of the following exception:",
           "During handling of the above exception, another exception occurred:")


def _errors(log: str) -> list[list[tuple[str, str]]]:
    """The server log's tracebacks as chains of (block, exception line); a block that ends by saying
    another exception follows is chained to the next one."""
    chains, chain = [], []
    for block in log.split("Traceback (most recent call last):")[1:]:
        # the exception line: the first unindented line after the frames (later lines may be other output)
        error = next((ln for ln in block.strip("\n").splitlines() if ln.strip() and not ln.startswith(" ")), "")
        chain.append((block, error))
        if not any(marker in block for marker in CHAINED):
            chains.append(chain)
            chain = []
    return chains + ([chain] if chain else [])


def unexpected_tracebacks(log: str) -> list[str]:
    """Tracebacks in the server log other than gr.Error (a message shown to the user on purpose) and
    Gradio's 404 for the event stream of a page that was reloaded meanwhile (its session is gone; the
    new page opens its own stream): the last exception line of each other chain."""
    found = []
    for chain in _errors(log):
        last = chain[-1][1]
        closed_stream = any("in sse_stream" in block and error.endswith("HTTPException: 404: Not Found")
                            for block, error in chain)
        if not last.startswith("gradio.exceptions.Error") and not closed_stream:
            found.append(last)
    return found


@pytest.fixture(scope="module")
def browser():
    """One headless Debian chromium for a test module (its pages are opened per test)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        pg = browser.new_page(viewport={"width": 1366, "height": 900})
        pg.set_default_timeout(60_000)
        pg.goto(app_url)
        pg.wait_for_selector("#data-upload")
        yield pg
        browser.close()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _upload(page, path: Path) -> None:
    page.locator("#data-upload input[type=file]").set_input_files(str(path))


def test_whole_path_data_train_evaluate_chat(page, tmp_path):
    data = tmp_path / "colours.jsonl"
    write_jsonl(data, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(48)])
    # 1. Data: upload, see the detected format, the preview and the "ready" message.
    _upload(page, data)
    page.wait_for_function("document.querySelector('#data-status').innerText.includes('Ready')")
    assert "prompt" in page.locator("#data-summary").inner_text().lower()
    assert "which colour is the" in page.locator("#data-preview").inner_text()
    _shot(page, "1-data")
    # 2. Train: a tiny schedule, press Train, wait for completion and a drawn loss curve.
    _tab(page, "2 · Train")
    page.get_by_text("Schedule and batching").click()
    steps = page.locator("#cfg-max_steps input")
    steps.fill("4")
    steps.press("Tab")
    batch = page.locator("#cfg-batch_size input")
    batch.fill("4")
    batch.press("Tab")
    page.locator("#train-button").click()
    page.wait_for_function("document.querySelector('#run-title').innerText.includes('completed')", timeout=180_000)
    assert "step 4/4" in page.locator("#run-progress").inner_text()
    page.wait_for_selector("#loss-plot canvas, #loss-plot svg")
    assert "Run completed" in page.locator("#run-log textarea").input_value()
    _shot(page, "2-train")
    # 3. Evaluate: the new run is selected; run it and see the summary table.
    _tab(page, "3 · Evaluate")
    page.locator("#eval-button").click()
    page.wait_for_function("document.querySelector('#eval-summary').innerText.toLowerCase().includes('rouge')",
                           timeout=180_000)
    assert "tuned" in page.locator("#eval-summary").inner_text().lower()
    _shot(page, "3-evaluate")
    # 4. Chat: one message, both panes answer.
    _tab(page, "4 · Chat")
    page.locator("#chat-input textarea").fill("Which colour is the red ball number 3?")
    page.locator("#chat-send").click()
    for pane in ("#chat-left", "#chat-right"):
        page.wait_for_function(
            f"document.querySelectorAll('{pane} .message-row, {pane} [data-testid=bot]').length >= 2",
            timeout=120_000)
    assert "red ball number 3" in page.locator("#chat-left").inner_text()
    _shot(page, "4-chat")


def test_bad_upload_shows_the_row_number_in_the_page(page, tmp_path):
    lines = [f'{{"prompt": "q{i}", "completion": "a{i}"}}' for i in range(1, 10)]
    lines[6] = '{"prompt": "broken line", "completion": '  # line 7 is cut short
    bad = tmp_path / "broken.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _upload(page, bad)
    page.wait_for_function("document.querySelector('#data-issues').innerText.includes('JSON')")
    issues = page.locator("#data-issues").inner_text()
    assert re.search(r"(^|\s)7\s", issues), issues  # the row column names line 7
    assert "1 row with problems will be dropped" in page.locator("#data-status").inner_text()
    _shot(page, "1-data-bad-upload")


def test_guided_demo_walks_from_data_to_chat_and_survives_a_reload(page):
    page.locator("#guide-button").click()
    page.wait_for_function("document.querySelector('#guide-status').innerText.includes('Step 2/4')", timeout=120_000)
    assert "Customer intents" in page.locator("#data-summary").inner_text() or \
        "rows" in page.locator("#data-status").inner_text()
    # A reload mid-demo: the new page picks the walk up (banner, data, training) and finishes it.
    page.reload()
    page.wait_for_selector("#data-upload")
    page.wait_for_function("/Step [234]\\/4|resumed/.test(document.querySelector('#guide-status').innerText)",
                           timeout=20_000)
    page.wait_for_function("document.querySelector('#guide-status').innerText.includes('Step 4/4')", timeout=300_000)
    # The demo ends on the Chat tab with a held-out customer message typed in.
    assert page.get_by_role("tab", name="4 · Chat").get_attribute("aria-selected") == "true"
    assert len(page.locator("#chat-input textarea").input_value()) > 10
    _shot(page, "5-guided-demo-chat")
    _tab(page, "3 · Evaluate")
    summary = page.locator("#eval-summary").inner_text().lower()
    assert "accuracy" in summary
