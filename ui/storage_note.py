"""The page's storage line: where runs are kept, whether they survive a Space rebuild, and the last backup.

One short line under the header for every visitor; a visible warning when the
app runs as a Space without persistent storage (its runs are lost at every
rebuild and restart). The facts come from finetune_core.runs.storage and
finetune_core.runs.sync; this module only words them. app.build_app places it:

    storage_note.build(ctx, demo)
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import gradio as gr

from finetune_core.runs.storage import StorageReport, storage_report
from finetune_core.runs.sync import last_status

if TYPE_CHECKING:  # only a type here: the note needs nothing from the context (and stays quick to import)
    from .context import AppContext


def _backup_line(report: StorageReport, status: dict) -> str:
    """How finished runs are backed up to the Hub repo, and how the last sync or restore went."""
    if not report.synced_to:
        return ""
    line = f"Finished runs are backed up to the Hub repo `{report.synced_to}` and restored on start."
    last = [s for s in (status.get("last_sync"), status.get("last_restore")) if s]
    if last:
        latest = max(last, key=lambda s: s.get("at") or 0)
        when = time.strftime("%H:%M", time.localtime(latest.get("at") or 0))
        line += (f" Last at {when}: {latest.get('summary', '')}." if latest.get("ok")
                 else f" ⚠️ Last attempt at {when} failed ({latest.get('summary', '')}); it is retried.")
    return line


def note_text(report: StorageReport, status: dict) -> str:
    """The Markdown for `report` (storage_report) and `status` (sync.last_status)."""
    backup = _backup_line(report, status)
    if report.warn:
        head = (f"⚠️ **Runs are kept in `{report.path}`, which this Space loses at every rebuild or restart**: "
                f"{report.why}.")
        fix = ("Turn on persistent storage in the Space's settings to keep them (runs then go to /data/runs)"
               + ("." if backup else ", or set STUDIO_SYNC_REPO to back finished runs up to a Hub repo."))
        return f"{head} {fix} {backup}".strip()
    where = {"yes": "survives a rebuild", "unknown": "on this machine's disk"}.get(report.survives, report.why)
    return f"Runs are kept in `{report.path}` ({where}). {backup}".strip()


def current_note() -> str:
    """The note as it stands now (read again at each page load: the last sync changes)."""
    return note_text(storage_report(), last_status())


def build(ctx: AppContext, blocks: gr.Blocks) -> gr.Markdown:
    """Place the storage line here, refreshed on each page load of `blocks`. (Takes the Blocks rather than
    ui.context.Shared: the line sits under the header, before the tabs and Shared exist.)"""
    note = gr.Markdown(current_note(), elem_id="studio-storage")
    blocks.load(current_note, None, note, api_visibility="private", queue=False)
    return note
