"""Sources for the Data tab: a sample, an upload, or the votes of a run.

A source is a dict ``{"path", "name", "sample", "eval_path", "eval_name"}`` whose
paths the server made: an upload is copied into the server's uploads folder
under a generated name (only the extension survives, to pick the parser), after
the extension and size limit are checked, and nothing is written for a refused
file; a run's votes are its votes.jsonl, found from a run id the visitor may use
(their own runs; every run on a local app), never from text sent by the page.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr

from finetune_core.data.mapping import DataMapping
from finetune_core.data.samples import SAMPLES, sample_mapping
from finetune_core.inference.votes import votes_path
from finetune_core.runs.ownership import Policy, Visitor, can_change, visible_runs

from .context import DATA_EXTENSIONS
from .widgets import open_run


def uploads_dir() -> Path:
    """Where uploads are copied: ``STUDIO_UPLOADS_DIR``, else ./uploads (read per call,
    like ``runs_root``, so tests and deployments can move it)."""
    return Path(os.environ.get("STUDIO_UPLOADS_DIR") or "uploads").resolve()


def display_name(filename: str) -> str:
    """A safe display name from a user's file name: its stem, reduced to [A-Za-z0-9._-]."""
    stem = Path(str(filename or "").replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:60] or "upload"


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 100 * 1024 else f"{size / 1024:.1f} KB"


def save_upload(src: str | os.PathLike | None, max_mb: float, folder: Path | None = None) -> Path:
    """Copy an uploaded file into the uploads folder under a server-made name.

    Only the extension of the user's file name survives (it picks the parser);
    the name itself never becomes part of a path. The extension and the size
    limit are checked before anything is written.
    """
    if not src:
        raise gr.Error("No file was received; try the upload again.")
    src_path = Path(src)
    ext = src_path.suffix.lower()
    if ext not in DATA_EXTENSIONS:
        raise gr.Error(f"{ext or 'Files without an extension'} files are not accepted here. "
                       f"Upload one of: {', '.join(DATA_EXTENSIONS)}.")
    try:
        info = src_path.stat()
    except OSError as exc:
        raise gr.Error("The uploaded file could not be read; try the upload again.") from exc
    if not stat.S_ISREG(info.st_mode):
        raise gr.Error("The upload is not a regular file.")
    limit = int(max_mb * 1024 * 1024)
    if info.st_size > limit:
        raise gr.Error(f"The file is {_mb(info.st_size)}, over this server's {max_mb:g} MB upload limit.")
    folder = folder or uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}{ext}"
    copied = 0
    try:
        # "xb": never overwrite; counting while copying also catches a file that grew after stat().
        with open(src_path, "rb") as fin, open(dest, "xb") as fout:
            while chunk := fin.read(1 << 20):
                copied += len(chunk)
                if copied > limit:
                    raise gr.Error(f"The file is over this server's {max_mb:g} MB upload limit.")
                fout.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def sample_source(name: str, mapping: DataMapping | None = None) -> tuple[dict, DataMapping]:
    """The source dict and mapping for a sample (keeps the user's split, seed and drop choices)."""
    if name not in SAMPLES:
        raise gr.Error(f"Unknown sample {name!r}; choose one of: {', '.join(SAMPLES)}.")
    base = mapping or DataMapping()
    chosen = replace(sample_mapping(name), eval_fraction=base.eval_fraction, seed=base.seed,
                     drop_bad_rows=base.drop_bad_rows)
    source = {"path": chosen.data_path, "name": name, "sample": name, "eval_path": "", "eval_name": ""}
    return source, chosen


def upload_source(file_path: str | None, max_mb: float, folder: Path | None = None) -> dict:
    """Copy the upload into the uploads folder; the source dict names the copy."""
    dest = save_upload(file_path, max_mb, folder)
    return {"path": str(dest), "name": display_name(Path(file_path).name), "sample": "", "eval_path": "",
            "eval_name": ""}


def with_eval_file(source: dict | None, file_path: str | None, max_mb: float, folder: Path | None = None) -> dict:
    """The source with a separate evaluation file attached (copied like any upload), or detached when None."""
    if not source:
        raise gr.Error("Load a training file (sample or upload) before adding an evaluation file.")
    if not file_path:
        return {**source, "eval_path": "", "eval_name": ""}
    dest = save_upload(file_path, max_mb, folder)
    return {**source, "eval_path": str(dest), "eval_name": display_name(Path(file_path).name)}


def _vote_count(path: Path) -> int:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def vote_run_choices(who: Visitor | None = None) -> list[tuple[str, str]]:
    """(label with the vote count, run id) of the runs whose votes `who` may train on, newest first:
    runs with saved votes that they may change (their own; any run on a local app or for an admin).
    On a shared public app every run is visible, but others' votes stay theirs."""
    who, policy = who or Visitor(), Policy.from_env()
    choices = []
    for run in visible_runs(who, policy):
        count = _vote_count(votes_path(run))
        if count and can_change(run.path, who, policy):
            choices.append((f"{run.label()} · {count} vote{'s' if count != 1 else ''}", run.id))
    return choices


def votes_source(run_id, who: Visitor | None = None) -> dict:
    """The source for a run's votes: the server's path to its votes.jsonl. The id comes from the
    page, so it is checked like any run id, and only a run the visitor may change is used."""
    who = who or Visitor()
    run = open_run(run_id, "Pick a run whose votes to use.", who)
    if not can_change(run.path, who):
        raise gr.Error(f"Only the person who started run {run.id} (or an admin) can train on its votes.")
    if not _vote_count(votes_path(run)):
        raise gr.Error(f"Run {run.id} has no saved votes yet: vote in the Chat tab's blind mode first.")
    return {"path": str(votes_path(run)), "name": f"votes of {run.name}", "sample": "", "eval_path": "",
            "eval_name": "", "votes_of": run.id}
