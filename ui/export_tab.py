"""Export tab: take a trained run elsewhere, and show it to people who will not open the app.

Pick a run (the tab follows the run chosen in the other tabs) and get:
the adapter zip, the merged standalone model (zipped), a GGUF file for
llama.cpp-based tools with its Ollama Modelfile, the stakeholder report
(HTML + Markdown + loss curve), or push the adapter / merged model to the
Hugging Face Hub with a generated model card. Every merged model and GGUF file
ends with a parity verdict (finetune_core/export/parity.py: does it answer the
held-out prompts as the app's model does?) shown under the downloads, and the
tab says how to run the run's downloads elsewhere (ui/export_views.py).

Every file the browser downloads is written under `ctx.settings.exports_dir`
(the only folder the app serves) in a fresh server-made folder; runs/ is
never served. Each handler checks the user first (`require_user`) and that the
visitor may see the run (finetune_core/runs/ownership.py); merging and GGUF export
load the model, so they queue on the GPU lane.

The Hub token is the visitor's own: the one typed into the form, else the
signed-in user's Hugging Face OAuth token. The server's ``HF_TOKEN`` is lent
only where ``STUDIO_ALLOW_SERVER_TOKEN=1`` says so, and then only to admins
(or to the single user of a local app without login); a public deployment
never spends it on a visitor's behalf. A token is passed to the upload only,
never logged or shown, and the field is cleared after a push. An existing repo
is written to only when "Overwrite" is ticked.
The work itself is `finetune_core.export.artifacts`: the handlers below are plain
functions (tests call them), wired in `build`.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

import gradio as gr

from evaluation.model_card import card_files
from finetune_core.export import artifacts as export
from finetune_core.export.gguf import QTYPES
from finetune_core.export.parity import PARITY_PROMPTS, ParityResult
from evaluation.report import report
from finetune_core.runs.ownership import Policy, Visitor, admins
from finetune_core.runs.store import Run

from .access import oauth_token, require_user, visitor
from .context import GPU_QUEUE, AppContext, ExportParts, Shared
from .errors import page_error, shows_errors
from .export_views import gguf_checked, merged_zip_checked, parity_panel, serving_markdown
from .widgets import open_run as open_any_run
from .widgets import pick_run, run_name_md
from .widgets import run_choices as adapter_runs

Progress = Callable[[float, str], None]


# -- runs and folders ---------------------------------------------------------------------------
def run_choices(who: Visitor | None = None) -> list[tuple[str, str]]:
    """(label, run id) for the runs with a saved adapter that `who` may see, newest first."""
    return adapter_runs(who)


def runs_dropdown(*wanted: str | None, who: Visitor | None = None) -> gr.Dropdown:
    """Fresh choices, selecting the first wanted id that exists, else the newest run."""
    choices = run_choices(who)
    return gr.Dropdown(choices=choices, value=pick_run(choices, *wanted))


def open_run(run_id: str | None, request: gr.Request | None = None) -> Run:
    """A run with a saved adapter that the visitor may see, behind an id from the
    browser (see widgets.open_run)."""
    run = open_any_run(run_id, empty_message="Pick a run from the list first.", visitor=visitor(request))
    if not run.has_adapter():
        raise gr.Error(f"Run “{run.name}” has no saved adapter yet: let it finish training first.")
    return run


def export_folder(ctx: AppContext) -> Path:
    """A fresh, unguessable folder under the exports dir for one download."""
    folder = ctx.settings.exports_dir / secrets.token_urlsafe(16)
    folder.mkdir(parents=True)
    return folder


def gpu_busy(ctx: AppContext) -> str:
    """Why a model cannot be loaded now ("" when it can): a training job holds the GPU."""
    run = ctx.queue.gpu_run()
    if run is None:
        return ""
    return f"Training run “{run.name}” is using the GPU. Export when it finishes or is stopped (Train tab)."


def _guarded(folder: Path | None, work: Callable[[], object], what: str):
    """Run `work`, removing a half-filled folder when it fails; the page gets `page_error`'s
    message (a StudioError's own words, or "Internal error" with the traceback logged)."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - the folder goes whatever the failure
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        error = page_error(exc, what)
        if error is exc:
            raise
        raise error from None


# -- handlers -----------------------------------------------------------------------------------
def download_adapter(ctx: AppContext, run_id: str | None, request: gr.Request | None = None) -> list[str]:
    """Zip the run's adapter, run.yaml and model card into a fresh export folder; returns [the zip's path].
    gr.Error when login is required and missing, or the visitor may not open the run or it has no adapter."""
    require_user(request)
    run = open_run(run_id, request)
    folder = export_folder(ctx)
    path = _guarded(folder, lambda: export.adapter_zip(run, folder / f"{run.id}-adapter.zip",
                                                       card_files=card_files(run, "adapter", curve=False)),
                    "adapter zip")
    return [str(path)]


def download_merged(ctx: AppContext, run_id: str | None, request: gr.Request | None = None,
                    progress: Progress | None = None, parity_prompts: int = PARITY_PROMPTS
                    ) -> tuple[list[str], ParityResult]:
    """Merge the adapter into the base weights, check the merged model against the app's (parity, on
    `parity_prompts` held-out prompts) and zip it in a fresh export folder; returns ([the zip's path], the
    parity result). gr.Error when the run cannot be opened or training holds the GPU. Slow (loads the full
    model twice); `progress(fraction, text)` follows the merge and the check."""
    require_user(request)
    run = open_run(run_id, request)
    busy = gpu_busy(ctx)
    if busy:
        raise gr.Error(busy)
    say = progress or (lambda *_: None)
    say(0.1, "Merging the adapter into the base weights...")
    folder = export_folder(ctx)
    path, result = _guarded(folder, lambda: merged_zip_checked(run, folder, parity_prompts, say), "merge")
    return [str(path)], result


def download_gguf(ctx: AppContext, run_id: str | None, qtype: str = "f16", request: gr.Request | None = None,
                  progress: Progress | None = None, parity_prompts: int = PARITY_PROMPTS
                  ) -> tuple[list[str], ParityResult]:
    """Merge the run's adapter and write it as one GGUF file of `qtype` with its Ollama Modelfile in a fresh
    export folder, then check the file in llama.cpp (parity); returns ([the GGUF path, the Modelfile path],
    the parity result). gr.Error when the visitor may not open the run, it has no adapter, the type is not
    offered, the GPU is training or the export fails (its folder is then removed)."""
    require_user(request)
    run = open_run(run_id, request)
    if qtype not in QTYPES:
        raise gr.Error(f"Choose a GGUF type: {', '.join(QTYPES)}.")
    busy = gpu_busy(ctx)
    if busy:
        raise gr.Error(busy)
    say = progress or (lambda *_: None)
    say(0.1, f"Merging and writing GGUF ({qtype})...")
    folder = export_folder(ctx)
    target = folder / f"{run.id}-{qtype}.gguf"
    paths, result = _guarded(folder, lambda: gguf_checked(run, target, qtype, parity_prompts, say), "GGUF export")
    return [str(p) for p in paths], result


def compare_choices(who: Visitor | None = None) -> list[tuple[str, str]]:
    """(the run's name and time, run id) of every run this visitor may see: the report may compare
    the exported run with any of them, trained to the end or not."""
    from finetune_core.runs.ownership import visible_runs

    return [(run.label(), run.id) for run in visible_runs(who or Visitor())]


def run_views(run_id: str | None, qtype: str = "f16", request: gr.Request | None = None) -> tuple[str, str]:
    """(the "How to run it" commands, the recorded parity verdicts) for the picked run; ("", "") when none
    is picked or the visitor may not see it (a pick is not an action: no error pops up)."""
    if not run_id:
        return "", ""
    try:
        run = open_run(run_id, request)
    except gr.Error:
        return "", ""
    return serving_markdown(run, qtype if qtype in QTYPES else "f16"), parity_panel(run)


def download_report(ctx: AppContext, run_id: str | None, request: gr.Request | None = None,
                    compare_ids: list[str] | None = None) -> list[str]:
    """Write the stakeholder report (HTML, Markdown, loss curve PNG) into a fresh export folder, with the
    runs of `compare_ids` (that the visitor may see) compared beside it when given; returns the paths of
    every file written there."""
    require_user(request)
    run = open_run(run_id, request)
    others = [open_run(i, request) for i in (compare_ids or []) if i and i != run.id]
    if len(others) > 7:
        raise gr.Error(f"Compare with at most 7 other runs; {len(others)} are picked.")
    folder = export_folder(ctx)
    _guarded(folder, lambda: report(run, folder, compare_with=others), "report")
    return [str(p) for p in sorted(folder.iterdir())]


def server_token_allowed() -> bool:
    """The owner allowed lending the server's HF_TOKEN (STUDIO_ALLOW_SERVER_TOKEN=1), and there is one."""
    return (os.environ.get("STUDIO_ALLOW_SERVER_TOKEN", "") not in ("", "0")
            and bool(os.environ.get("HF_TOKEN", "").strip()))


def server_token_lent(who: Visitor, policy: Policy | None = None) -> bool:
    """Whether this visitor may push with the server's own HF_TOKEN: only where allowed,
    and then only to admins, or to the one user of a local app (no login, not public)."""
    return server_token_allowed() and (who.admin or (policy or Policy.from_env()).local)


def push_token(typed: str | None, request: gr.Request | None) -> str:
    """The token a push uses: typed, else the visitor's own OAuth token, else (where
    lent) the server's. Never the server's on a visitor's behalf."""
    token = (typed or "").strip() or oauth_token(request) or ""
    if not token and server_token_lent(visitor(request)):
        token = os.environ["HF_TOKEN"].strip()
    if not token:
        raise gr.Error("Paste a Hugging Face token with write access (or sign in with Hugging Face): "
                       "this server does not lend its own token.")
    return token


def push(ctx: AppContext, run_id: str | None, repo_id: str, token: str | None, what: str = "adapter",
         private: bool = True, overwrite: bool = False, request: gr.Request | None = None) -> tuple[str, dict]:
    """Upload to the Hub; returns (status markdown, an update clearing the token field).
    An existing repo is refused unless `overwrite` is set."""
    require_user(request)
    run = open_run(run_id, request)
    token = push_token(token, request)
    busy = gpu_busy(ctx) if what == "merged" else ""
    if busy:
        raise gr.Error(busy)
    try:
        url = export.push_to_hub(run, repo_id, token, what=what, private=bool(private), overwrite=bool(overwrite),
                                 card_files=card_files(run, what, repo_id=export.check_repo_id(repo_id)))
    except Exception as exc:  # noqa: BLE001 - ExportError messages are token-free; a bug's log and line are redacted
        raise page_error(exc, "push to the Hub", redact=(token,)) from None
    visibility = "private" if private else "public"
    repo = run_name_md(repo_id)
    return (f"Pushed the {what} of run **{run_name_md(run.label())}** to {visibility} repo [{repo}]({url}).",
            gr.update(value=""))


def hub_note() -> str:
    """Markdown hint under the Hub push form: offline, or where the token comes from in this deployment."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "*This server runs offline: pushing to the Hub will not work. Download the files instead.*"
    if server_token_allowed() and Policy.from_env().local:  # a local app: its one user may use it
        return "*The server has an HF_TOKEN it lends here: leave the token field empty to use it.*"
    if server_token_allowed() and admins():
        return ("*Paste a token with write access, or sign in with Hugging Face (admins may leave it empty to "
                "use the server's token).*")
    return ("*Paste a token with write access, or sign in with Hugging Face; it is used for this upload only "
            "and never stored.*")


def size_text(size: int) -> str:
    """A byte count in words ("1.5 GB", "12.0 MB", "3.2 KB", "512 B")."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def files_note(paths: list[str]) -> str:
    """The status line after a download is made: each file with its size (a merged
    model is hundreds of MB; say so before the browser starts fetching it)."""
    sizes = ", ".join(f"`{Path(p).name}` ({size_text(Path(p).stat().st_size)})" for p in paths)
    return f"Ready to download: {sizes}."


# -- layout and wiring --------------------------------------------------------------------------
def build(ctx: AppContext, shared: Shared) -> ExportParts:
    """Build the Export tab inside the caller's `gr.Tab`; its picker follows and sets shared.run_state."""
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
                                 info="f16: the reference; bf16: same size; q8_0: about half the size. For Llama, Mistral, "
                                      "Qwen2/3, SmolLM3, Phi-3 and Gemma 3 (docs/model-matrix.md)")
                gguf_btn = gr.Button("GGUF for llama.cpp and Ollama (with its Modelfile)")
            report_btn = gr.Button("Report for stakeholders (HTML + Markdown)", variant="primary")
            # optional: the report then has a "Compared runs" section (evaluation/run_compare.py)
            compare = gr.Dropdown(choices=[], value=[], multiselect=True, max_choices=7,
                                  label="Compare with runs (optional)", elem_id="export-compare",
                                  info="The report adds their metrics and the settings that differ.")
        with gr.Column():
            gr.Markdown("**Push to the Hugging Face Hub**")
            repo = gr.Textbox(label="Repo id", placeholder="your-name/model-name", max_lines=1,
                              elem_id="export-repo")
            token = gr.Textbox(label="Token (write access)", type="password", placeholder="hf_...", max_lines=1)
            what = gr.Radio(list(export.WHAT), value="adapter", label="Upload")
            with gr.Row():  # min widths: on a phone each label wraps between words instead of being cut
                private = gr.Checkbox(value=True, label="Private repo", min_width=160)
                overwrite = gr.Checkbox(value=False, label="Overwrite an existing repo", min_width=240,
                                        info="off: a repo that already exists is left alone")
            push_btn = gr.Button("Push to Hub")
            gr.Markdown(hub_note())
    status = gr.Markdown(elem_id="export-status")
    # shown once there is something to download (an empty file box is a large blank area)
    downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, visible=False,
                        elem_id="export-files")
    # the parity verdict of the export just made (or the run's recorded ones): does it answer like the app?
    parity = gr.Markdown(elem_id="export-parity")
    with gr.Accordion("How to run it elsewhere", open=False):
        serving = gr.Markdown(elem_id="export-serving")

    @shows_errors
    def on_adapter(run_id, request: gr.Request):
        paths = download_adapter(ctx, run_id, request)
        return gr.update(value=paths, visible=True), files_note(paths)

    @shows_errors
    def on_merged(run_id, request: gr.Request, progress=gr.Progress()):
        paths, result = download_merged(ctx, run_id, request, lambda f, text: progress(f, desc=text))
        return gr.update(value=paths, visible=True), files_note(paths), parity_panel(None, result)

    @shows_errors
    def on_gguf(run_id, kind, request: gr.Request, progress=gr.Progress()):
        paths, result = download_gguf(ctx, run_id, kind, request, lambda f, text: progress(f, desc=text))
        return gr.update(value=paths, visible=True), files_note(paths), parity_panel(None, result)

    @shows_errors
    def on_pick(run_id, kind, request: gr.Request):
        return run_views(run_id, kind, request)

    @shows_errors
    def on_report(run_id, compare_ids, request: gr.Request):
        paths = download_report(ctx, run_id, request, compare_ids)
        return gr.update(value=paths, visible=True), files_note(paths)

    @shows_errors
    def on_push(run_id, repo_id, secret, kind, is_private, replace, request: gr.Request):
        return push(ctx, run_id, repo_id, secret, kind, is_private, replace, request)

    @shows_errors
    def on_runs(first, second, request: gr.Request):
        return runs_dropdown(first, second, who=visitor(request))

    gpu = {"concurrency_id": GPU_QUEUE, "concurrency_limit": 1}  # these load the model
    private_api = {"api_visibility": "private"}
    files = [downloads, status]  # the status line names each file with its size
    adapter_btn.click(on_adapter, [run_dd], files, api_name="export_adapter")
    merged_btn.click(on_merged, [run_dd], files + [parity], api_name="export_merged", **gpu)
    gguf_btn.click(on_gguf, [run_dd, qtype], files + [parity], api_name="export_gguf", **gpu)
    run_dd.change(on_pick, [run_dd, qtype], [serving, parity], **private_api)
    qtype.change(on_pick, [run_dd, qtype], [serving, parity], **private_api)
    report_btn.click(on_report, [run_dd, compare], files, api_name="export_report")
    push_btn.click(on_push, [run_dd, repo, token, what, private, overwrite], [status, token], api_name="export_push", **gpu)
    run_state = shared.run_state
    refresh.click(on_runs, [run_dd, run_state], run_dd, **private_api)
    # .input fires only for the user's own pick, so following the shared run cannot loop back
    run_dd.input(lambda run_id: run_id or "", run_dd, run_state, **private_api)
    run_state.change(on_runs, [run_state, run_dd], run_dd, **private_api)
    shared.blocks.load(on_runs, [run_state, run_dd], run_dd, **private_api)  # fresh run list on each page load

    @shows_errors
    def on_compare_runs(request: gr.Request):
        return gr.update(choices=compare_choices(visitor(request)))

    for event in (refresh.click, shared.blocks.load):  # the runs the report may be compared with
        event(on_compare_runs, None, compare, **private_api)
    return ExportParts(run=run_dd)


__all__ = ["build", "download_adapter", "download_merged", "download_gguf", "download_report", "push", "run_views",
           "run_choices", "runs_dropdown", "export_folder"]
