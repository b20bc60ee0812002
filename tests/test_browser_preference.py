"""The preference loop as a person walks it in headless chromium (issue 21): blind votes in Chat
become the Data tab's pairs, a DPO run starts from the run that was voted on, and Evaluate and Chat
then compare the SFT run with its DPO child by name.

    .venv/bin/python -m pytest -q -m "" -x tests/test_browser_preference.py
"""
from __future__ import annotations

import json
import re
import shutil

import pytest

from test_browser import ARTIFACTS, launch_app, stop_app, browser  # noqa: F401 - browser: a fixture
from test_browser_chat import choose_run, pane_label, send, wait_answers  # noqa: F401

pytestmark = pytest.mark.browser
PROMPTS = ("Which colour is the red ball number 3?", "Which colour is the blue ball number 8?",
           "Which colour is the red ball number 12?", "Which colour is the blue ball number 15?",
           "Which colour is the red ball number 21?")
VOTES = ("A is better", "B is better", "A is better", "Tie", "B is better")


@pytest.fixture(scope="module")
def loop_app(tmp_path_factory, tiny_model_dir, trained_run):
    """(url, runs folder) of an app whose one run is a finished SFT run of the tiny model."""
    root = tmp_path_factory.mktemp("preference-app")
    shutil.copytree(trained_run.path, root / "runs" / trained_run.id)
    proc, url, log = launch_app(root, tiny_model_dir, STUDIO_LIMIT_MAX_NEW_TOKENS="16")
    yield url, root / "runs"
    stop_app(proc, log, root)


def _page(browser, url: str):
    page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#data-upload")
    return page


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _choose(page, elem: str, text: str) -> None:
    """Pick the option containing `text` in the dropdown `elem`, as a person would."""
    page.locator(f"#{elem} input").click()
    page.get_by_role("option", name=re.compile(re.escape(text))).first.click()
    page.wait_for_function(f"document.querySelector('#{elem} input').value.includes({json.dumps(text)})")


def _cast_votes(page, run_name: str) -> None:
    _tab(page, "4 · Chat")
    page.wait_for_selector("#chat-left", state="visible")
    choose_run(page, run_name)
    page.locator("#chat-blind input").check()
    page.wait_for_function("document.querySelector('#chat-status').innerText.includes('Blind A/B')")
    for prompt, vote in zip(PROMPTS, VOTES):
        send(page, prompt)
        page.get_by_role("button", name=vote).click()
        page.wait_for_function("document.querySelector('#chat-status').innerText.includes('Vote saved')")


def _train_on_votes(page, run_name: str) -> None:
    _tab(page, "1 · Data")
    _choose(page, "data-votes", run_name)
    page.wait_for_function("['Ready', 'Not usable'].some(w => document.querySelector('#data-status').innerText"
                           ".includes(w))")
    status = page.locator("#data-status").inner_text()
    assert "Ready: 4 rows" in status, status  # five votes, one tie left out
    summary = page.locator("#data-summary").inner_text()
    assert "tie" in summary.lower(), summary  # the tie vote is left out, and said so
    assert page.locator("#data-rejected").is_visible()  # the rejected answer is shown as the model sees it
    _tab(page, "2 · Train")
    _choose(page, "train-preset", "Quick demo DPO (CPU)")
    page.get_by_role("button", name="Apply preset").click()
    page.get_by_text("Method (objective").click()
    page.wait_for_function("document.querySelector('#cfg-objective input').value === 'dpo'")
    page.get_by_text("Schedule and batching").click()
    for field, value in (("max_steps", 2), ("logging_steps", 1), ("save_steps", 0)):
        box = page.locator(f"#cfg-{field} input")
        box.fill(str(value))
        box.press("Tab")
    _choose(page, "cfg-parent_run", run_name)
    page.locator("#run-name textarea, #run-name input").first.fill("dpo on votes")
    page.locator("#train-button").click()
    page.wait_for_function("document.querySelector('#run-title').innerText.includes('completed')", timeout=240_000)
    page.wait_for_selector("#reward-plot", state="visible")


def test_votes_train_a_dpo_run_that_is_then_compared_with_its_parent(loop_app, browser, trained_run):
    url, runs = loop_app
    page = _page(browser, url)
    _cast_votes(page, trained_run.name)
    lines = (runs / trained_run.id / "votes.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["winner"] for line in lines] == ["A", "B", "A", "tie", "B"]

    _train_on_votes(page, trained_run.name)
    child = next(p for p in runs.iterdir() if p.name != trained_run.id and (p / "run.yaml").is_file())
    run_yaml = (child / "run.yaml").read_text(encoding="utf-8")
    assert f"parent_run: {trained_run.id}" in run_yaml and "objective: dpo" in run_yaml
    assert "from " in page.locator("#runs-table").inner_text()  # the runs list names the parent
    page.screenshot(path=str(ARTIFACTS / "preference-trained.png"), full_page=True)

    _tab(page, "3 · Evaluate")
    _choose(page, "eval-run", "dpo on votes")
    assert trained_run.name in page.locator("#eval-side-a input").input_value()  # the parent is side A
    page.locator("#eval-button").click()
    page.wait_for_function("document.querySelector('#eval-summary').innerText.toLowerCase().includes('reward')",
                           timeout=180_000)
    summary = page.locator("#eval-summary").inner_text()
    assert "dpo on votes" in summary and trained_run.name in summary, summary  # columns name both runs
    page.screenshot(path=str(ARTIFACTS / "preference-evaluate.png"), full_page=True)

    _tab(page, "4 · Chat")
    page.locator("#chat-blind input").uncheck()
    choose_run(page, "dpo on votes")
    page.wait_for_function(f"document.querySelector('#chat-side-a input') && "
                           f"document.querySelector('#chat-side-a input').value.includes({json.dumps(trained_run.name)})")
    send(page, PROMPTS[0])
    labels = pane_label(page, "#chat-left"), pane_label(page, "#chat-right")
    assert trained_run.name in labels[0] and "dpo on votes" in labels[1], labels
    page.screenshot(path=str(ARTIFACTS / "preference-chat.png"), full_page=True)
    page.context.close()
