"""Guided demo: one button walks a first-time user through the whole studio.

Loads the customer-intents sample (Data tab), trains it with the "Quick demo
(CPU)" preset (Train tab, live curve), scores base vs tuned on the held-out
rows (Evaluate tab), then opens Chat with a held-out example typed in. Each
step calls the same functions as the tabs' own buttons, and moves the page
along as it finishes.
"""
from __future__ import annotations

import time

import gradio as gr

from finetune_core.inference.chat import example_prompts
from finetune_core.config import PRESETS, RunConfig
from finetune_core.runs.store import get_run

from . import chat_tab, eval_tab
from .access import require_user, visitor
from .context import AppContext, Page
from .errors import shows_errors
from .train_tab import data_fields, start_training

SAMPLE = "Customer intents (classification)"
PRESET = "Quick demo (CPU)"
POLL_S = 2.0


def demo_config(ctx: AppContext, data_state: dict) -> RunConfig:
    """The guided demo's RunConfig: the loaded data's fields, then the "Quick demo (CPU)" preset on top."""
    # the preset after the data: its training-row cap beats the mapping's default (all rows)
    base = RunConfig(model=ctx.settings.default_model).with_overrides(data_fields(data_state))
    return base.with_overrides(PRESETS[PRESET])


def wait_for_run(ctx: AppContext, run_id: str):
    """Yield (step, total) while the run trains; return its final status."""
    while True:
        job = ctx.slot.active()
        status = get_run(run_id).status()
        if job is None or job.run.id != run_id:
            return status
        yield int(status.get("step") or 0), int(status.get("total_steps") or 0)
        time.sleep(POLL_S)


def banner() -> tuple[gr.Markdown, gr.Button]:
    """The first-visit banner (placed above the tabs); `wire` connects it once the tabs exist."""
    with gr.Row(elem_id="guide-banner"):
        status = gr.Markdown("**New here?** The guided demo loads a sample dataset, fine-tunes the bundled model "
                             "for about three minutes, compares base and tuned, and opens the side-by-side chat.",
                             elem_id="guide-status")
        button = gr.Button("▶ Run the guided demo", variant="primary", scale=0, min_width=240, elem_id="guide-button")
    return status, button


def wire(ctx: AppContext, page: Page, status: gr.Markdown, button: gr.Button) -> None:
    """Wire the banner's button once every tab is built: the demo fills the Data, Evaluate
    and Chat tabs' components in `page`, sets the session's run and moves the tab strip."""
    tabs, run_state = page.shared.tabs, page.shared.run_state
    data_outputs = page.data.outputs
    eval_view = page.evaluate.view
    eval_run, chat_run, chat_message = page.evaluate.run, page.chat.run, page.chat.message
    outputs = [status, tabs, run_state, eval_run, chat_run, chat_message, *data_outputs, *eval_view]

    def say(text: str, updates: dict | None = None) -> dict:
        return {status: text, **(updates or {})}

    @shows_errors
    def run_demo(request: gr.Request):
        require_user(request)
        who = visitor(request)
        yield say("**Step 1/4 · Data** — loading the customer-intents sample...", {tabs: gr.Tabs(selected="data")})
        values = page.data.load_sample(SAMPLE)
        data_state = values[0]
        if not data_state:
            raise gr.Error("The sample dataset could not be loaded.")
        yield say(f"**Step 1/4 · Data** — {data_state['rows']} labelled customer messages, five intents the base "
                  "model has never seen. Next: training.", dict(zip(data_outputs, values)))
        time.sleep(POLL_S)
        run_id = start_training(ctx, demo_config(ctx, data_state), label="guided-demo", who=who)
        yield say(f"**Step 2/4 · Train** — run `{run_id}` started (LoRA, {PRESETS[PRESET]['max_steps']} steps). "
                  "Watch the loss fall.", {tabs: gr.Tabs(selected="train"), run_state: run_id})
        final = None
        for step, total in wait_for_run(ctx, run_id):
            yield say(f"**Step 2/4 · Train** — step {step}/{total or '?'}; the curve updates live.")
        final = get_run(run_id).status()
        if final.get("state") != "completed":
            yield say(f"**The demo stopped:** the run is {final.get('state')} ({final.get('reason', '')}).")
            return
        yield say("**Step 3/4 · Evaluate** — scoring base (adapter off) and tuned (adapter on) on held-out rows...",
                  {tabs: gr.Tabs(selected="evaluate"), eval_run: eval_tab.runs_dropdown(run_id, None, who)})
        view = eval_tab.evaluate(ctx, run_id, request=request)
        yield say("**Step 3/4 · Evaluate** — done: see accuracy before and after, and the biggest wins. "
                  "Next: chat.", dict(zip(eval_view, view)))
        time.sleep(POLL_S * 2)
        prompts = example_prompts(get_run(run_id), n=1)
        yield say("**Step 4/4 · Chat** — a held-out message is typed in: press **Send** to see base and tuned "
                  "answer side by side.", {tabs: gr.Tabs(selected="chat"),
                                            chat_run: chat_tab.follow_shared_run(ctx, run_id, None, request),
                                            chat_message: prompts[0] if prompts else ""})

    # Mostly waiting on the training thread: its own queue, so chat and evaluation stay available.
    button.click(run_demo, None, outputs, concurrency_id="guide", concurrency_limit=2, api_name="guided_demo",
                 show_progress="hidden")
