"""A public deployment without login, as two visitors see it in headless chromium.

Both browsers are told plainly that everything is shared; both see the first
visitor's run; only the browser that started it may change it: the second
visitor pressing Resume on it reads a refusal on the page.
"""
from __future__ import annotations

import hashlib
import shutil

import pytest

from finetune_core.runs.ownership import write_owner
from test_browser import ARTIFACTS, CHROME_ARGS, CHROMIUM, _tab, launch_app, stop_app

pytestmark = pytest.mark.browser
KEY_A, KEY_B = "first-visitor-key-0123456789abcdef", "second-visitor-key-0123456789abcde"


@pytest.fixture(scope="module")
def public_app(tmp_path_factory, tiny_model_dir, trained_run):
    root = tmp_path_factory.mktemp("public-app")
    run_dir = root / "runs" / trained_run.id
    shutil.copytree(trained_run.path, run_dir)
    write_owner(run_dir, {"browser": hashlib.sha256(KEY_A.encode()).hexdigest()})
    proc, url, log = launch_app(root, tiny_model_dir, STUDIO_PUBLIC="1")
    yield url, trained_run.id
    stop_app(proc, log, root)


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


def test_second_visitor_sees_the_run_but_cannot_change_it(public_app, trained_run):
    from playwright.sync_api import sync_playwright

    url, run_id = public_app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        first, second = _visitor(browser, url, KEY_A), _visitor(browser, url, KEY_B)
        for page in (first, second):
            assert page.get_by_text("Everything here is shared").is_visible()
            _tab(page, "2 · Train")
            page.wait_for_function(f"document.querySelector('#runs-table').innerText.includes({trained_run.name!r})")
        _resume(second, run_id)
        refusal = second.get_by_text(f"Only the person who started run {run_id}")
        refusal.first.wait_for(state="visible")
        second.screenshot(path=str(ARTIFACTS / "public-second-visitor-refused.png"), full_page=True)
        _resume(first, run_id)  # the owner gets past the check: the run is simply finished
        first.get_by_text("only stopped, failed or interrupted runs can be resumed").first.wait_for(state="visible")
        browser.close()
