"""A public deployment without login, as two visitors see it in headless chromium.

Both browsers are told plainly that everything is shared; both see the first
visitor's run; only the browser that started it may change it: the second
visitor pressing Resume on it reads a refusal on the page.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO
from finetune_core.ownership import write_owner
from test_browser import ARTIFACTS, CHROME_ARGS, CHROMIUM, _free_port, _tab, unexpected_tracebacks

pytestmark = pytest.mark.browser
KEY_A, KEY_B = "first-visitor-key-0123456789abcdef", "second-visitor-key-0123456789abcde"


@pytest.fixture(scope="module")
def public_app(tmp_path_factory, tiny_model_dir, trained_run):
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: `make test` installs it with apt-get (package chromium)")
    root = tmp_path_factory.mktemp("public-app")
    run_dir = root / "runs" / trained_run.id
    shutil.copytree(trained_run.path, run_dir)
    write_owner(run_dir, {"browser": hashlib.sha256(KEY_A.encode()).hexdigest()})
    port = _free_port()
    env = {**os.environ, "STUDIO_RUNS_DIR": str(root / "runs"), "STUDIO_EXPORTS_DIR": str(root / "exports"),
           "STUDIO_UPLOADS_DIR": str(root / "uploads"), "STUDIO_DEFAULT_MODEL": str(tiny_model_dir),
           "STUDIO_PUBLIC": "1", "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = open(root / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the app did not start: " + (root / "app.log").read_text()[-2000:])
    yield url, trained_run.id
    proc.terminate()
    proc.wait(30)
    log.close()
    assert unexpected_tracebacks((root / "app.log").read_text()) == []


def _visitor(browser, url: str, key: str):
    """A browser context holding one visitor's cookie (as the app would have set it)."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.add_cookies([{"name": "studio_visitor", "value": key, "url": url}])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#data-upload")
    return page


def _resume(page, run_id: str) -> None:
    _tab(page, "2 · Train")
    pick = page.locator("#run-pick input")
    pick.fill(run_id)
    pick.press("Enter")
    page.get_by_role("button", name="Resume selected run").click()


def test_second_visitor_sees_the_run_but_cannot_change_it(public_app):
    from playwright.sync_api import sync_playwright

    url, run_id = public_app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        first, second = _visitor(browser, url, KEY_A), _visitor(browser, url, KEY_B)
        for page in (first, second):
            assert page.get_by_text("Everything here is shared").is_visible()
            _tab(page, "2 · Train")
            page.wait_for_function(f"document.querySelector('#runs-table').innerText.includes('{run_id}')")
        _resume(second, run_id)
        refusal = second.get_by_text(f"Only the person who started run {run_id}")
        refusal.first.wait_for(state="visible")
        second.screenshot(path=str(ARTIFACTS / "public-second-visitor-refused.png"), full_page=True)
        _resume(first, run_id)  # the owner gets past the check: the run is simply finished
        first.get_by_text("only stopped, failed or interrupted runs can be resumed").first.wait_for(state="visible")
        browser.close()
