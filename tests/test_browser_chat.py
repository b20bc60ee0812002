"""The Chat tab as a person sees it in headless chromium (issue 19).

One app, started with no run at all; runs appear while it is up, as they do for
a visitor arriving after someone trained. A fresh page then chats with the
latest run, not the base model alone; a run trained on a prompt template gets
chips that differ and messages wrapped as its training prompts were; blind A/B
starts clean, names no model until the vote, and the vote lands in the run's
votes.jsonl and in the stakeholder report.

    .venv/bin/python -m pytest -q -m "" -x tests/test_browser_chat.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from conftest import REPO
from test_browser import ARTIFACTS, launch_app, stop_app, browser  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.browser
INTENTS = REPO / "sample_data" / "customer_intents.csv"
IDENTITY = re.compile(r"\b(base|tuned)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def chat_app(tmp_path_factory, tiny_model_dir):
    """(url, runs folder) of an app started while there is no run yet."""
    root = tmp_path_factory.mktemp("chat-app")
    # short answers: the tiny model's words are not under test, and each token redraws both panes
    proc, url, log = launch_app(root, tiny_model_dir, STUDIO_LIMIT_MAX_NEW_TOKENS="24")
    yield url, root / "runs"
    stop_app(proc, log, root)


def fresh_page(browser, url: str):
    """A new visitor: a new browser context (no cookie), the Chat tab opened."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#data-upload")
    page.get_by_role("tab", name="4 · Chat").click()
    page.wait_for_selector("#chat-left", state="visible")
    return page


def template_run(runs: os.PathLike, model_dir, trained_run):
    """A classification run of the customer-intents sample (prompt template with the label set), its
    split saved exactly as training saves it; the tiny adapter is borrowed (the prompts are under test)."""
    from finetune_core.config import RunConfig
    from finetune_core.runs.store import create_run
    from finetune_core.training.train import prepare_split

    old = os.environ.get("STUDIO_RUNS_DIR")
    os.environ["STUDIO_RUNS_DIR"] = str(runs)
    try:
        cfg = RunConfig.from_dict({"model": str(model_dir), "data_path": str(INTENTS), "precision": "float32"})
        run = create_run(cfg, label="intents", name="Customer intents · chat test")
        prepare_split(cfg, run)
        shutil.copytree(trained_run.adapter_dir, run.adapter_dir)
        run.set_status(state="completed", step=30, total_steps=30, finished=time.time())
        return run
    finally:
        if old is None:
            os.environ.pop("STUDIO_RUNS_DIR", None)
        else:
            os.environ["STUDIO_RUNS_DIR"] = old


def wait_picker(page, text: str) -> None:
    """Wait until the Chat tab's model picker shows `text` (a run's human name)."""
    page.wait_for_function("name => document.querySelector('#chat-model input').value.includes(name)",
                           arg=text, timeout=20_000)


def choose_run(page, name: str) -> None:
    """Pick a run by its name in the model picker (as a person would; the default is test 1's concern)."""
    page.locator("#chat-model input").click()
    page.get_by_role("option", name=re.compile(re.escape(name))).click()
    wait_picker(page, name)
    page.wait_for_timeout(500)  # the new model's chips and settings arrive with the change


def send(page, text: str) -> None:
    """Type a message, send it, and wait for both answers of that turn."""
    before = page.locator("#chat-right [data-testid=bot]").count()
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-send").click()
    wait_answers(page, before + 1)


def wait_answers(page, n: int) -> None:
    """Both panes show `n` answers and the streaming has ended."""
    for pane in ("#chat-left", "#chat-right"):
        page.wait_for_function(f"document.querySelectorAll('{pane} [data-testid=bot]').length >= {n}",
                               timeout=120_000)
    page.wait_for_function("!document.querySelector('#chat-status').innerText.includes('Generating')")


def pane_label(page, pane: str) -> str:
    """The label drawn above a chat pane."""
    return page.locator(f"{pane} [data-testid=block-label]").inner_text().strip()


def visible_tab_text(page) -> str:
    """Everything a person can read in the Chat tab: its text, plus the values shown in its inputs."""
    panel = page.locator("[role=tabpanel]", has=page.locator("#chat-left"))
    inputs = panel.locator("input[type=text], input:not([type]), textarea")
    values = [inputs.nth(i).input_value() for i in range(inputs.count()) if inputs.nth(i).is_visible()]
    return panel.inner_text() + "\n" + "\n".join(values)


# -- 1: a fresh page (and a reload) chats with the latest run ------------------------------------------------
def test_a_fresh_page_compares_the_latest_run_with_its_base(chat_app, browser, trained_run):
    url, runs = chat_app
    shutil.copytree(trained_run.path, runs / trained_run.id)  # trained after the app (and its page) was built
    page = fresh_page(browser, url)
    picker = page.locator("#chat-model input")
    wait_picker(page, trained_run.name)
    assert "Base model only" not in picker.input_value()
    page.reload()
    page.wait_for_selector("#data-upload")
    page.get_by_role("tab", name="4 · Chat").click()
    wait_picker(page, trained_run.name)
    send(page, "Which colour is the red ball number 3?")
    assert (pane_label(page, "#chat-left"), pane_label(page, "#chat-right")) == ("Base", "Tuned")
    tuned = page.locator("#chat-right [data-testid=bot]").last.inner_text()
    assert "no tuned model" not in tuned  # the right pane is the run's adapter answering
    assert "red ball number 3" in page.locator("#chat-left").inner_text()
    page.screenshot(path=str(ARTIFACTS / "chat-fresh-page.png"), full_page=True)
    page.context.close()


# -- 2 and 3: a template run's chips differ, and messages are wrapped as training wrapped them ------------------
def test_template_run_chips_differ_and_messages_are_wrapped(chat_app, browser, tiny_model_dir, trained_run):
    url, runs = chat_app
    run = template_run(runs, tiny_model_dir, trained_run)
    page = fresh_page(browser, url)
    choose_run(page, "chat test")
    chips = page.locator("#chat-examples .gallery-item")
    chips.first.wait_for(state="visible")
    texts = [chips.nth(i).inner_text().strip() for i in range(chips.count())]
    assert len(texts) == 8 and len(set(texts)) == len(texts), texts  # each chip shows its own message
    assert not any(t.startswith("Classify") for t in texts), texts
    assert page.locator("#chat-wrap input").is_checked() and page.locator("#chat-single input").is_checked()
    assert "base model gets the same wrapped prompt" in page.locator("#chat-template-note").inner_text()
    send(page, "Where is my parcel?")
    for pane in ("#chat-right", "#chat-left"):  # both sides got the run's template around the raw message
        user = page.locator(f"{pane} [data-testid=user]").last.inner_text()
        assert "Classify the text into one of:" in user and "Text: Where is my parcel?" in user, user
    chips.nth(1).click()  # types the chip's message; wrapping adds the template once
    wait_answers(page, 2)
    user = page.locator("#chat-right [data-testid=user]").last.inner_text()
    assert texts[1].rstrip("…") in user and user.count("Classify the text") == 1, user
    page.screenshot(path=str(ARTIFACTS / "chat-template-run.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: the template and chips wrap, not scroll
    page.wait_for_timeout(500)
    for selector in ("#chat-template-note", "#chat-examples", "#chat-status"):
        assert page.evaluate(f"(e => e.scrollWidth <= e.clientWidth)(document.querySelector('{selector}'))"), selector
    page.screenshot(path=str(ARTIFACTS / "chat-template-run-phone.png"), full_page=True)
    page.context.close()
    assert run.has_adapter()


# -- 4 and 5: blind A/B is blind, the vote is saved and counted; vote buttons are words -------------------------
def test_blind_mode_starts_clean_hides_identities_and_saves_the_vote(chat_app, browser):
    from evaluation.report import render_markdown
    from evaluation.report_facts import gather
    from finetune_core.runs.store import Run

    url, runs = chat_app
    page = fresh_page(browser, url)
    choose_run(page, "chat test")
    run = Run(next(p for p in runs.iterdir() if "intents" in p.name))
    send(page, "I love the kettle")  # a normal turn first: Base and Tuned are named
    page.locator("#chat-blind input").check()
    page.wait_for_function("document.querySelectorAll('#chat-left [data-testid=user]').length === 0",
                           timeout=15_000)
    page.wait_for_function("document.querySelector('#chat-status').innerText.includes('Blind A/B')",
                           timeout=15_000)
    assert page.locator("#chat-right [data-testid=user]").count() == 0  # both panes start clean
    assert (pane_label(page, "#chat-left"), pane_label(page, "#chat-right")) == ("Model A", "Model B")
    assert not IDENTITY.search(visible_tab_text(page)), IDENTITY.findall(visible_tab_text(page))
    send(page, "Where is my parcel?")
    buttons = page.locator("#chat-votes button")
    buttons.first.wait_for(state="visible")
    assert [buttons.nth(i).inner_text().strip() for i in range(buttons.count())] == \
        ["A is better", "Tie", "B is better", "Both bad"]
    box = buttons.first.bounding_box()
    assert box and box["width"] > 60 and 0 <= box["y"] < 900 * 3  # drawn as words, on the page
    assert not IDENTITY.search(visible_tab_text(page)), IDENTITY.findall(visible_tab_text(page))
    page.screenshot(path=str(ARTIFACTS / "chat-blind-before-vote.png"), full_page=True)
    page.get_by_role("button", name="A is better").click()
    page.wait_for_function("document.querySelector('#chat-status').innerText.includes('Vote saved')")
    reveal = page.locator("#chat-status").inner_text()
    assert re.search(r"Model A was the (tuned|base) model", reveal), reveal
    page.screenshot(path=str(ARTIFACTS / "chat-blind-after-vote.png"), full_page=True)
    lines = (run.path / "votes.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["winner"] for line in lines] == ["A"]
    assert "1 blind votes" in render_markdown(gather(run, with_curve=False))  # the stakeholder report counts it
    page.context.close()
