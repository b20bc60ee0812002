"""Fine-tuning studio: the Gradio app (Hugging Face Space entry point).

    make run            # or: .venv/bin/python app.py

Builds the Blocks from the tab modules in ui/ and launches it on
GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (default 127.0.0.1:7860).
Environment: STUDIO_RUNS_DIR (runs root), STUDIO_MODEL_CACHE (converted
models), STUDIO_MAX_UPLOAD_MB, APP_AUTH=user:pass (password login),
STUDIO_REQUIRE_LOGIN=1 (refuse training/evaluation/export without a user;
runs are per user), STUDIO_PUBLIC=1 (a shared public deployment: catalogue
models only, a size ceiling, no local folders), STUDIO_ADMINS=a,b,
STUDIO_MODEL_ALLOWLIST=a/b,c/d, STUDIO_MAX_PARAMS_B, STUDIO_LIMIT_*,
STUDIO_ALLOW_SERVER_TOKEN=1, STUDIO_UPLOADS_DIR (copies of uploaded files),
STUDIO_EXPORTS_DIR (the only folder files are served from), STUDIO_SYNC_REPO
(back finished runs up to a Hub repo, restore them on start). The README's
"Deployment settings" table says what each does.
"""
from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from finetune_core.config import ConfigError  # noqa: E402
from finetune_core.deploy_settings import apply_settings_file  # noqa: E402
from finetune_core.models.sources import hub_timeouts  # noqa: E402
from finetune_core.runs.store import runs_root  # noqa: E402
from finetune_core.runs.sync import Syncer  # noqa: E402
from ui import (chat_tab, data_tab, eval_tab, export_tab, guide, runs_tab, settings_tab, storage_note,  # noqa: E402
                train_tab)
from finetune_core.runs.ownership import Policy  # noqa: E402
from ui.access import parse_auth, visitor  # noqa: E402
from ui.context import AppContext, Page, Shared  # noqa: E402
from ui.errors import shows_errors  # noqa: E402
from ui.middleware import middleware  # noqa: E402
from ui.widgets import with_ctx  # noqa: E402

TITLE = "Fine-tuning Studio"
INTRO = (
    "Upload examples, fine-tune a small language model with LoRA (TRL SFT, or DPO/KTO on preferences and "
    "blind votes), then see what changed: base vs tuned scores on held-out rows, and both models side by "
    "side in chat. "
    "Runs offline on a laptop CPU with the bundled SmolLM2-135M-Instruct."
)
CSS = """
.gradio-container {max-width: 1400px !important;}
#studio-header h1 {margin-bottom: 0;}
.studio-progress {margin: 4px 0 8px 0;}
#guide-banner {background: #eef2ff; border-radius: 8px; padding: 6px 10px; align-items: center;
               flex-wrap: wrap; row-gap: 8px;}
/* On a phone the button goes under the text instead of squeezing it to one word a line. */
#guide-banner > #guide-status {flex: 1 1 320px; min-width: min(100%, 320px);}
/* Upload boxes (every gr.File that takes a file): the label on its own line above the drop area, and the
   drop area only as tall as its text, so neither covers the other and nothing is cut off at the bottom. */
.gradio-container .block:has(> .upload-container) {height: auto !important; min-height: 0 !important;}
.block:has(> .upload-container) > label[data-testid=block-label] {position: static;
    margin: var(--block-label-margin) 0 0 var(--block-label-margin);}
.block > .upload-container {height: auto !important;}
.upload-container [data-testid=upload-text] {min-height: 0; height: auto; padding: 4px 0 12px;}
/* An accordion's closed arrow is turned sideways: room for it inside the header's box. */
.label-wrap {padding-right: var(--size-2);}
/* The runs table keeps readable columns on a phone and scrolls sideways instead of breaking words. */
#runs-table table {min-width: 720px;}
"""


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    """The whole page: header, sharing notice, login button on a login-only Space, guide banner and the five
    tabs, queued. Each tab gets the shared components made before it and returns what it exposes; the
    events that span tabs are wired once every tab exists (see ui/context.py). `ctx` (one per app, shared
    by all sessions) is made when not given and kept as `demo.studio_context`. Builds only: `main` launches."""
    ctx = ctx or AppContext()
    with gr.Blocks(title=TITLE) as demo:
        data_state, run_state = gr.State(None), gr.State("")
        gr.Markdown(f"# {TITLE}\n{INTRO}", elem_id="studio-header")
        notice = Policy.from_env().notice()
        if notice:  # who sees what, said plainly on a shared or multi-user deployment
            gr.Markdown(notice, elem_id="studio-sharing")
        storage_note.build(ctx, demo)  # where runs are kept; a warning when a rebuild would lose them
        if ctx.settings.require_login and os.environ.get("SPACE_ID"):
            # On a Space with `hf_oauth: true` in the README front matter: sign in with Hugging Face.
            gr.LoginButton()
        guide_status, guide_button = guide.banner()
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # a phone sees all five steps, not "…"
            shared = Shared(blocks=demo, tabs=tabs, data_state=data_state, run_state=run_state)
            with gr.Tab("1 · Data", id="data") as data_ui:
                data = data_tab.build(ctx, shared)
            with gr.Tab("2 · Train", id="train"):
                train = train_tab.build(ctx, shared)
            with gr.Tab("3 · Evaluate", id="evaluate") as evaluate:
                evaluate_parts = eval_tab.build(ctx, shared)
            with gr.Tab("4 · Chat", id="chat") as chat:
                chat_parts = chat_tab.build(ctx, shared)
            with gr.Tab("5 · Export", id="export"):
                export = export_tab.build(ctx, shared)
            with gr.Tab("Runs", id="runs"):  # the queue, sweeps and comparisons: beside the five steps
                runs = runs_tab.build(ctx, shared, train)
            settings_tab.build(ctx, shared)  # the owner's view of the deployment settings, admins only
        page = Page(shared, data, train, evaluate_parts, chat_parts, export, runs)
        refresh_pickers_on_select(ctx, page, evaluate, chat)
        # votes cast in Chat since the page was opened: back on Data, their run is offered
        data_ui.select(page.data.vote_runs, page.data.votes, page.data.votes, api_visibility="private", queue=False)
        guide.wire(ctx, page, guide_status, guide_button)
    demo.queue(max_size=int(os.environ.get("STUDIO_QUEUE_MAX", "64")), default_concurrency_limit=4)
    demo.studio_context = ctx  # for tests and scripts that drive the app in-process
    demo.studio_page = page  # the same, for the page's cross-tab components
    return demo


def refresh_pickers_on_select(ctx: AppContext, page: Page, evaluate: gr.Tab, chat: gr.Tab) -> None:
    """A run finished since the page was opened: opening Evaluate or Chat lists it
    (and selects the run the session last trained or picked)."""
    private = {"api_visibility": "private", "queue": False}
    run_state, eval_run, chat_run = page.shared.run_state, page.evaluate.run, page.chat.run

    @shows_errors
    def eval_runs(shared, current, request: gr.Request):
        return eval_tab.runs_dropdown(shared, current, visitor(request))

    evaluate.select(eval_runs, [run_state, eval_run], eval_run, **private)
    # the visitor's own pick in Chat (base alone included) is kept over the latest run
    chat.select(with_ctx(chat_tab.follow_shared_run, ctx), [run_state, chat_run, page.chat.picked], chat_run,
                **private)


def launch_kwargs(ctx: AppContext) -> dict:
    """Launch settings that keep a public deployment safe (see issue on security)."""
    exports = ctx.settings.exports_dir
    exports.mkdir(parents=True, exist_ok=True)
    return {
        "max_file_size": f"{ctx.settings.max_upload_mb:g}mb",
        "allowed_paths": [str(exports)],
        "blocked_paths": [str(runs_root()), str(data_tab.uploads_dir())],
        "auth": parse_auth(os.environ.get("APP_AUTH")),
        "share": False,
        "show_error": False,
        "css": CSS,
        "theme": gr.themes.Soft(),
        "app_kwargs": {"middleware": middleware()},  # visitor cookie, downloads as attachments
    }


def main() -> None:
    """Launch the app: Hub timeouts, one AppContext, the retention sweeper and runs sync threads, then Gradio's server
    (blocks until it stops)."""
    try:  # the settings file fills what the environment leaves unset, before anything reads a setting
        apply_settings_file()
    except ConfigError as exc:  # an unknown key, a bad value: say which, in one line
        raise SystemExit(f"Cannot start: {exc}") from None
    hub_timeouts()
    ctx = AppContext()
    demo = build_app(ctx)
    ctx.start_sweeper()  # retention of uploads, exports and Gradio's cache (finetune_core/retention.py)
    Syncer().start()  # with STUDIO_SYNC_REPO: restore runs, then back finished ones up (finetune_core/runs/sync.py)
    ctx.queue.start()  # the run queue's dispatcher: waiting runs start one after another (training/queue.py)
    demo.launch(**launch_kwargs(ctx))


if __name__ == "__main__":
    main()
