"""Export tab: take a trained run elsewhere, and show it to people who will not open the app.

Pick a run (the tab follows the run chosen in the other tabs) and get:
the adapter zip, the merged standalone model (zipped), a GGUF file for
llama.cpp-based tools (Llama-architecture models), the stakeholder report
(HTML + Markdown + loss curve), or push the adapter / merged model to the
Hugging Face Hub with a generated model card.

Every file the browser downloads is written under `ctx.settings.exports_dir`
(the only folder the app serves) in a fresh server-made folder; runs/ is
never served. Each handler checks the user first (`require_user`); merging
and GGUF export load the model, so they queue on the GPU lane. The Hub token
comes from the password field or the server's HF_TOKEN; it is passed to the
upload only, never logged or shown, and the field is cleared after a push.
The work itself is `finetune_core.export`: the handlers below are plain
functions (tests call them), wired in `build`.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import gradio as gr
from gradio.context import Context

from finetune_core import export
from finetune_core.gguf_export import QTYPES
from finetune_core.models import ModelError
from finetune_core.report import report
from finetune_core.runs import Run, RunError, list_runs

from .access import require_user
from .context import GPU_QUEUE, AppContext
from .widgets import open_run as open_any_run
from .widgets import pick_run, user_error

log = logging.getLogger(__name__)

USER_ERRORS = (ValueError, RunError, ModelError, FileNotFoundError)  # ExportError/GGUFExportError are ValueErrors
Progress = Callable[[float, str], None]


# -- runs and folders ---------------------------------------------------------------------------
def run_choices() -> list[tuple[str, str]]:
    """(label, run id) for the runs with a saved adapter, newest first."""
    return [(f"{run.id} · {run.summary().get('model') or '?'}", run.id) for run in list_runs() if run.has_adapter()]


def runs_dropdown(*wanted: str | None) -> gr.Dropdown:
    """Fresh choices, selecting the first wanted id that exists, else the newest run."""
    choices = run_choices()
    return gr.Dropdown(choices=choices, value=pick_run(choices, *wanted))


def open_run(run_id: str | None) -> Run:
    """A run with a saved adapter, behind an id from the browser (see widgets.open_run)."""
    run = open_any_run(run_id, empty_message="Pick a run from the list first.")
    if not run.has_adapter():
        raise gr.Error(f"Run {run.id} has no saved adapter yet: let it finish training first.")
    return run


def export_folder(ctx: AppContext) -> Path:
    """A fresh, unguessable folder under the exports dir for one download."""
    folder = ctx.settings.exports_dir / secrets.token_urlsafe(16)
    folder.mkdir(parents=True)
    return folder


def gpu_busy(ctx: AppContext) -> str:
    """Why a model cannot be loaded now ("" when it can): a training job holds the GPU."""
    run = ctx.slot.gpu_run()
    if run is None:
        return ""
    return f"Training run {run.id} is using the GPU. Export when it finishes or is stopped (Train tab)."


def _guarded(folder: Path | None, work: Callable[[], object], what: str):
    """Run `work`, turning failures into one-line page errors and removing a half-filled folder."""
    try:
        return work()
    except gr.Error:
        raise
    except Exception as exc:  # noqa: BLE001 - the page gets one line, the server log the traceback
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if not isinstance(exc, USER_ERRORS):
            log.exception("%s failed", what)
        raise user_error(exc) from None


# -- handlers -----------------------------------------------------------------------------------
def download_adapter(ctx: AppContext, run_id: str | None, request: gr.Request | None = None) -> list[str]:
    require_user(request)
    run = open_run(run_id)
    folder = export_folder(ctx)
    path = _guarded(folder, lambda: export.adapter_zip(run, folder / f"{run.id}-adapter.zip"), "adapter zip")
    return [str(path)]


def _merged_zip(run: Run, folder: Path) -> Path:
    """Merge in a private temp folder, then zip it into the export folder."""
    work = Path(tempfile.mkdtemp(prefix="studio-merge-"))
    try:
        merged = export.merge(run, work / f"{run.id}-merged")
        return Path(shutil.make_archive(str(folder / f"{run.id}-merged"), "zip", merged.parent, merged.name))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download_merged(ctx: AppContext, run_id: str | None, request: gr.Request | None = None,
                    progress: Progress | None = None) -> list[str]:
    require_user(request)
    run = open_run(run_id)
    busy = gpu_busy(ctx)
    if busy:
        raise gr.Error(busy)
    (progress or (lambda *_: None))(0.1, "Merging the adapter into the base weights...")
    folder = export_folder(ctx)
    return [str(_guarded(folder, lambda: _merged_zip(run, folder), "merge"))]


def download_gguf(ctx: AppContext, run_id: str | None, qtype: str = "f16", request: gr.Request | None = None,
                  progress: Progress | None = None) -> list[str]:
    require_user(request)
    run = open_run(run_id)
    if qtype not in QTYPES:
        raise gr.Error(f"Choose a GGUF type: {', '.join(QTYPES)}.")
    busy = gpu_busy(ctx)
    if busy:
        raise gr.Error(busy)
    (progress or (lambda *_: None))(0.1, f"Merging and writing GGUF ({qtype})...")
    folder = export_folder(ctx)
    target = folder / f"{run.id}-{qtype}.gguf"
    return [str(_guarded(folder, lambda: export.export_gguf(run, target, qtype), "GGUF export"))]


def download_report(ctx: AppContext, run_id: str | None, request: gr.Request | None = None) -> list[str]:
    require_user(request)
    run = open_run(run_id)
    folder = export_folder(ctx)
    _guarded(folder, lambda: report(run, folder), "report")
    return [str(p) for p in sorted(folder.iterdir())]


def push(ctx: AppContext, run_id: str | None, repo_id: str, token: str | None, what: str = "adapter",
         private: bool = True, request: gr.Request | None = None) -> tuple[str, dict]:
    """Upload to the Hub; returns (status markdown, an update clearing the token field)."""
    require_user(request)
    run = open_run(run_id)
    token = (token or "").strip() or os.environ.get("HF_TOKEN", "").strip()
    busy = gpu_busy(ctx) if what == "merged" else ""
    if busy:
        raise gr.Error(busy)
    try:
        url = export.push_to_hub(run, repo_id, token, what=what, private=bool(private))
    except USER_ERRORS as exc:
        raise gr.Error(str(exc)) from None  # ExportError messages are already token-free
    except Exception as exc:  # noqa: BLE001 - no traceback: it could quote the token
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise gr.Error(f"Push failed: {text.replace(token, '***') if token else text}"[:300]) from None
    visibility = "private" if private else "public"
    return f"Pushed the {what} of run `{run.id}` to {visibility} repo [{repo_id}]({url}).", gr.update(value="")


# -- layout and wiring --------------------------------------------------------------------------
def hub_note() -> str:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "*This server runs offline: pushing to the Hub will not work. Download the files instead.*"
    if os.environ.get("HF_TOKEN"):
        return "*The server has an HF_TOKEN: leave the token field empty to use it.*"
    return "*Paste a token with write access; it is used for this upload only and never stored.*"


def build(ctx: AppContext) -> None:
    """Build the Export tab inside the caller's `gr.Tab`."""
    gr.Markdown("Take a trained run elsewhere, or show the result to people who will not open the app.")
    with gr.Row():
        # custom values allowed: runs made after page load; every handler checks the id with get_run()
        run_dd = gr.Dropdown(choices=[], value=None, label="Run (runs with a trained adapter)", scale=4,
                             elem_id="export-run", allow_custom_value=True)
        refresh = gr.Button("↻ Refresh runs", scale=1)
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Files**")
            adapter_btn = gr.Button("Adapter (zip: adapter, tokenizer, run.yaml)")
            merged_btn = gr.Button("Merged model (zip: safetensors, tokenizer, generation config)")
            with gr.Row():
                qtype = gr.Radio(list(QTYPES), value="f16", label="GGUF type",
                                 info="f16: exact; q8_0: about half the size (Llama models only)")
                gguf_btn = gr.Button("GGUF for llama.cpp")
            report_btn = gr.Button("Report for stakeholders (HTML + Markdown)", variant="primary")
        with gr.Column():
            gr.Markdown("**Push to the Hugging Face Hub**")
            repo = gr.Textbox(label="Repo id", placeholder="your-name/model-name", max_lines=1,
                              elem_id="export-repo")
            token = gr.Textbox(label="Token (write access)", type="password", placeholder="hf_...", max_lines=1)
            with gr.Row():
                what = gr.Radio(list(export.WHAT), value="adapter", label="Upload")
                private = gr.Checkbox(value=True, label="Private repo")
            push_btn = gr.Button("Push to Hub")
            gr.Markdown(hub_note())
    status = gr.Markdown(elem_id="export-status")
    downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="export-files")

    def on_adapter(run_id, request: gr.Request):
        return download_adapter(ctx, run_id, request)

    def on_merged(run_id, request: gr.Request, progress=gr.Progress()):
        return download_merged(ctx, run_id, request, lambda f, text: progress(f, desc=text))

    def on_gguf(run_id, kind, request: gr.Request, progress=gr.Progress()):
        return download_gguf(ctx, run_id, kind, request, lambda f, text: progress(f, desc=text))

    def on_report(run_id, request: gr.Request):
        return download_report(ctx, run_id, request)

    def on_push(run_id, repo_id, secret, kind, is_private, request: gr.Request):
        return push(ctx, run_id, repo_id, secret, kind, is_private, request)

    gpu = {"concurrency_id": GPU_QUEUE, "concurrency_limit": 1}  # these load the model
    private_api = {"api_visibility": "private"}
    adapter_btn.click(on_adapter, [run_dd], downloads, api_name="export_adapter")
    merged_btn.click(on_merged, [run_dd], downloads, api_name="export_merged", **gpu)
    gguf_btn.click(on_gguf, [run_dd, qtype], downloads, api_name="export_gguf", **gpu)
    report_btn.click(on_report, [run_dd], downloads, api_name="export_report")
    push_btn.click(on_push, [run_dd, repo, token, what, private], [status, token], api_name="export_push", **gpu)
    refresh.click(lambda current, shared: runs_dropdown(current, shared),
                  [run_dd, ctx.run_state if ctx.run_state is not None else run_dd], run_dd, **private_api)
    if ctx.run_state is not None:
        # .input fires only for the user's own pick, so following the shared run cannot loop back
        run_dd.input(lambda run_id: run_id or "", run_dd, ctx.run_state, **private_api)
        ctx.run_state.change(lambda shared, current: runs_dropdown(shared, current), [ctx.run_state, run_dd],
                             run_dd, **private_api)
    root = Context.root_block
    if root is not None:  # fresh run list on each page load
        shared = ctx.run_state if ctx.run_state is not None else run_dd
        root.load(lambda s, current: runs_dropdown(s, current), [shared, run_dd], run_dd, **private_api)
    ctx.components["export_run"] = run_dd


__all__ = ["build", "download_adapter", "download_merged", "download_gguf", "download_report", "push",
           "run_choices", "runs_dropdown", "export_folder"]
