"""Guided demo: one button walks a first-time user through the whole studio.

Loads the customer-intents sample (Data tab), trains it with the "Quick demo
(CPU)" preset (Train tab, live curve), scores base vs tuned on the held-out
rows (Evaluate tab), then opens Chat with a held-out example typed in. Each
step calls the same functions as the tabs' own buttons, and moves the page
along as it finishes.

A reload, or a second page of the same browser, picks the walk up where it is:
each visitor's walk (their anonymous browser key, see ui/access.py) is kept on
the AppContext with the step it reached and the page now driving it. A page
that loads while a walk is unfinished takes it over; the page it took over from
stops at its next step, so no step runs twice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from finetune_core.config import PRESETS, RunConfig
from finetune_core.inference.chat import example_prompts
from finetune_core.runs.store import default_run_name, get_run

from . import chat_tab, eval_tab
from .access import require_user, visitor
from .context import AppContext, Page
from .errors import shows_errors
from .train_tab import data_fields, start_training

SAMPLE = "Customer intents (classification)"
PRESET = "Quick demo (CPU)"
POLL_S = 2.0
WELCOME = ("**New here?** The guided demo loads a sample dataset, fine-tunes the bundled model for about three "
           "minutes, compares base and tuned, and opens the side-by-side chat.")
TRAIN, EVALUATE, CHAT, DONE = 2, 3, 4, 5  # the steps a walk can be at once it has a run


@dataclass
class Walk:
    """One visitor's guided demo: its run, the step it reached, and the page (session) driving it."""

    driver: str
    run_id: str = ""
    step: int = 1
    evaluating: bool = False  # step 3's evaluation is running (in whichever page started it)


def demo_config(ctx: AppContext, data_state: dict) -> RunConfig:
    """The guided demo's RunConfig: the loaded data's fields, then the "Quick demo (CPU)" preset on top."""
    # the preset after the data: its training-row cap beats the mapping's default (all rows)
    base = RunConfig(model=ctx.settings.default_model).with_overrides(data_fields(data_state))
    return base.with_overrides(PRESETS[PRESET])


def wait_for_run(ctx: AppContext, run_id: str):
    """Yield (step, total) while the run trains; return its final status."""
    while True:
        running = ctx.queue.running()
        status = get_run(run_id).status()
        if status.get("state") != "waiting" and (running is None or running.id != run_id):
            return status
        yield int(status.get("step") or 0), int(status.get("total_steps") or 0)
        time.sleep(POLL_S)


def banner() -> tuple[gr.Markdown, gr.Button]:
    """The first-visit banner (placed above the tabs); `wire` connects it once the tabs exist."""
    with gr.Row(elem_id="guide-banner"):
        status = gr.Markdown(WELCOME, elem_id="guide-status")
        button = gr.Button("▶ Run the guided demo", variant="primary", scale=0, min_width=240, elem_id="guide-button")
    return status, button


def unfinished_walk(ctx: AppContext, key: str) -> Walk | None:
    """This visitor's walk when it has a run and has not finished, else None."""
    walk = ctx.guides.get(key)
    return walk if walk is not None and TRAIN <= walk.step < DONE and walk.run_id else None


class Guide:
    """The demo's steps for one page (its components in `page`), as generators of page updates."""

    def __init__(self, ctx: AppContext, page: Page, status: gr.Markdown):
        self.ctx, self.page, self.status = ctx, page, status
        shared = page.shared
        self.outputs = [status, shared.tabs, shared.run_state, page.evaluate.run, page.chat.run, page.chat.message,
                        *page.data.outputs, *page.evaluate.view]

    def say(self, text: str, updates: dict | None = None) -> dict:
        """The banner's text plus other updates, as one page update."""
        return {self.status: text, **(updates or {})}

    def data_step(self):
        """Step 1: load the sample into the Data tab; yields updates, returns the data state."""
        data_outputs = self.page.data.outputs
        yield self.say("**Step 1/4 · Data** — loading the customer-intents sample...",
                       {self.page.shared.tabs: gr.Tabs(selected="data")})
        values = self.page.data.load_sample(SAMPLE)
        if not values[0]:
            raise gr.Error("The sample dataset could not be loaded.")
        yield self.say(f"**Step 1/4 · Data** — {values[0]['rows']} labelled customer messages, five intents the "
                       "base model has never seen. Next: training.", dict(zip(data_outputs, values)))
        return values[0]

    def train_step(self, walk: Walk, who):
        """Step 2: follow the run on the Train tab until it ends; a run that did not complete ends the walk."""
        run_id = walk.run_id
        yield self.say(f"**Step 2/4 · Train** — run “{get_run(run_id).name}” is training (LoRA, "
                       f"{PRESETS[PRESET]['max_steps']} steps). Watch the loss fall.",
                       {self.page.shared.tabs: gr.Tabs(selected="train"), self.page.shared.run_state: run_id})
        for step, total in wait_for_run(self.ctx, run_id):
            yield self.say(f"**Step 2/4 · Train** — step {step}/{total or '?'}; the curve updates live.")
        final = get_run(run_id).status()
        if final.get("state") != "completed":
            walk.step = DONE
            yield self.say(f"**The demo stopped:** the run is {final.get('state')} ({final.get('reason', '')}).")
            return
        walk.step = EVALUATE

    def evaluate_step(self, walk: Walk, who, request: gr.Request):
        """Step 3: score base and tuned on the held-out rows (or wait for the page already doing it)."""
        run_id, page = walk.run_id, self.page
        yield self.say("**Step 3/4 · Evaluate** — scoring base (adapter off) and tuned (adapter on) on held-out "
                       "rows...", {page.shared.tabs: gr.Tabs(selected="evaluate"), page.shared.run_state: run_id,
                                   page.evaluate.run: eval_tab.runs_dropdown(run_id, None, who)})
        if walk.evaluating:  # a page this one took over is evaluating: wait for its results
            while walk.evaluating:
                time.sleep(POLL_S / 4)
            view = eval_tab.show_run(run_id, who=who)
        else:
            walk.evaluating = True
            try:
                view = eval_tab.evaluate(self.ctx, run_id, request=request)
            finally:
                walk.evaluating = False
        walk.step = CHAT
        yield self.say("**Step 3/4 · Evaluate** — done: see accuracy before and after, and the biggest wins. "
                       "Next: chat.", dict(zip(page.evaluate.view, view)))
        time.sleep(POLL_S * 2)

    def chat_step(self, walk: Walk, request: gr.Request):
        """Step 4: open Chat on the run with a held-out message typed in."""
        prompts = example_prompts(get_run(walk.run_id), n=1)
        walk.step = DONE
        page = self.page
        yield self.say("**Step 4/4 · Chat** — a held-out message is typed in: press **Send** to see base and "
                       "tuned answer side by side.",
                       {page.shared.tabs: gr.Tabs(selected="chat"), page.shared.run_state: walk.run_id,
                        page.chat.run: chat_tab.follow_shared_run(self.ctx, walk.run_id, None, request),
                        page.chat.message: prompts[0] if prompts else ""})

    def walk_on(self, walk: Walk, who, request: gr.Request):
        """Steps 2 to 4 from where `walk` is; stops as soon as another page drives the walk."""
        page_id = walk.driver
        steps = {TRAIN: lambda: self.train_step(walk, who), EVALUATE: lambda: self.evaluate_step(walk, who, request),
                 CHAT: lambda: self.chat_step(walk, request)}
        while walk.step in steps and walk.driver == page_id:
            for update in steps[walk.step]():
                if walk.driver != page_id:
                    return  # a reload or another page took the walk over: it shows the rest
                yield update

    def run(self, request: gr.Request):
        """The banner button: a new walk for this visitor, from step 1."""
        require_user(request)
        who = visitor(request)
        walk = Walk(driver=request.session_hash or "")
        self.ctx.guides[who.key] = walk
        data_state = yield from self.data_step()
        time.sleep(POLL_S)
        cfg = demo_config(self.ctx, data_state)
        walk.run_id = start_training(self.ctx, cfg, label="guided-demo", who=who,
                                     name=default_run_name("Customer intents", PRESET))
        walk.step = TRAIN
        yield from self.walk_on(walk, who, request)

    def resume(self, request: gr.Request):
        """Page load: take over this visitor's unfinished walk (after a reload, or in a second page)."""
        who = visitor(request)
        walk = unfinished_walk(self.ctx, who.key)
        if walk is None:
            yield {self.status: gr.skip()}
            return
        walk.driver = request.session_hash or ""
        values = self.page.data.load_sample(SAMPLE)  # the new page's Data tab shows the demo's data again
        yield self.say("**Guided demo resumed** after the page reloaded.", dict(zip(self.page.data.outputs, values)))
        yield from self.walk_on(walk, who, request)


def wire(ctx: AppContext, page: Page, status: gr.Markdown, button: gr.Button) -> None:
    """Wire the banner's button once every tab is built, and the page load that resumes an unfinished walk."""
    guide = Guide(ctx, page, status)
    # Mostly waiting on the training thread: its own queue, so chat and evaluation stay available.
    queue = {"concurrency_id": "guide", "concurrency_limit": 4, "show_progress": "hidden"}
    button.click(shows_errors(guide.run), None, guide.outputs, api_name="guided_demo", **queue)
    page.shared.blocks.load(shows_errors(guide.resume), None, guide.outputs, api_visibility="private", **queue)
