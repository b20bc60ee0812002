"""Uploads for the Data tab: copy a user's file into the server's uploads folder.

The copy gets a server-made name (only the extension survives, to pick the
parser), after the extension and size limit are checked; nothing is written
for a refused file.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import time
from pathlib import Path

import gradio as gr

from .context import DATA_EXTENSIONS

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


