"""What a run sends to the sync repo, and the books the sync keeps (finetune_core/runs/sync.py talks to the Hub).

A run sends its top-level files and the folders in SYNCED_DIRS, plain names
only: never checkpoints/, hidden or temporary files (`check_relpath`,
`syncable_files`). The same rule refuses what a repo may hold that no run
does when restoring (`plan_restore`). The books, all on disk beside the runs:

    <run>/.synced.json      MARKER: the repo, commit and {path: [size, mtime_ns]} last sent or restored
    <runs root>/.sync.json  LEDGER: {"repos": {repo id: [run ids it holds from here]}, "last_sync": ...,
                            "last_restore": {at, ok, repo, summary}}
    <runs root>/.sync.lock  LOCK: one sync or restore at a time, across the app and the CLI
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from finetune_core.runs.store import RUN_ID_RE, Run, runs_root, write_json_atomic

SYNCED_DIRS = ("adapter", "data", "eval", "checks", "report", "export")  # never checkpoints/
MARKER = ".synced.json"  # in each run: what was sent where
LEDGER = ".sync.json"  # in the runs root: the runs each repo holds from here, the last outcome
LOCK = ".sync.lock"
REPO_DIR = "runs"  # the runs' folder in the repo
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=-]{0,127}$")  # one path component: no "..", no hidden names
MAX_DEPTH = 6  # path components below the run's folder


# -- what a run sends ----------------------------------------------------------------------------
def check_relpath(rel: str) -> str:
    """Why `rel` (a path inside a run, "/"-separated) is not something a run holds, or "" when it is: a top-level
    file or a file under SYNCED_DIRS, plain names only (no "..", hidden or odd characters).

    >>> check_relpath("adapter/adapter_config.json"), check_relpath("run.yaml")
    ('', '')
    >>> check_relpath("../x"), check_relpath("checkpoints/checkpoint-2/a.bin")
    ("'../x' has an odd part", "'checkpoints/checkpoint-2/a.bin' is not a file a run keeps")
    """
    parts = rel.split("/")
    if not all(_PART.match(p) for p in parts) or rel.endswith(".tmp"):
        return f"{rel!r} has an odd part"
    if len(parts) > MAX_DEPTH or (len(parts) > 1 and parts[0] not in SYNCED_DIRS):
        return f"{rel!r} is not a file a run keeps"
    return ""


def syncable_files(run_path: Path) -> dict[str, list[int]]:
    """The files of a run that are synced, as {relative path: [size, mtime_ns]}; links are not followed."""
    found: dict[str, list[int]] = {}
    for folder, dirs, files in os.walk(run_path):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]  # a link could point anywhere
        for name in files:
            path = here / name
            rel = path.relative_to(run_path).as_posix()
            if path.is_symlink() or check_relpath(rel):
                continue
            st = path.stat()
            found[rel] = [st.st_size, st.st_mtime_ns]
    return found


def read_json(path: Path) -> dict:
    """A JSON object from `path`; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- the ledger and the lock ---------------------------------------------------------------------
@contextmanager
def locked(root: Path) -> Iterator[bool]:
    """Hold the runs root's sync lock (one sync or restore at a time across the app and the CLI); yields False
    when another process holds it."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def held_runs(ledger: dict, repo_id: str) -> set[str]:
    """The run ids the ledger says `repo_id` holds from this runs root."""
    held = ledger.get("repos", {}).get(repo_id, []) if isinstance(ledger.get("repos"), dict) else []
    return {rid for rid in held if isinstance(rid, str)} if isinstance(held, list) else set()


def save_ledger(root: Path, ledger: dict, repo_id: str, held: set[str], kind: str, summary: str, ok: bool) -> None:
    """Record the runs `repo_id` holds and the outcome of this `kind` ("sync" or "restore") in the ledger."""
    ledger.setdefault("repos", {})[repo_id] = sorted(held)
    ledger[f"last_{kind}"] = {"at": time.time(), "ok": ok, "repo": repo_id, "summary": summary}
    write_json_atomic(root / LEDGER, ledger)


@contextmanager
def books(root: Path, repo_id: str, report, kind: str) -> Iterator[set[str] | None]:
    """One sync or restore's books: the lock (None when another holds it, and the report says so), then
    the runs the repo holds from here, a set the caller updates, saved with the outcome when it ends."""
    with locked(root) as got:
        if not got:
            report.error = "another sync or restore is running; try again in a moment"
            yield None
            return
        ledger = read_json(root / LEDGER)
        held = held_runs(ledger, repo_id)
        try:
            yield held
        finally:
            save_ledger(root, ledger, repo_id, held, kind, report.summary(), report.ok)


def last_status(root: Path | None = None) -> dict:
    """The last sync's and restore's outcome, as recorded in the runs root: {"last_sync": {at, ok, repo,
    summary}, "last_restore": {...}} (keys missing when none happened)."""
    ledger = read_json((root or runs_root()) / LEDGER)
    return {k: v for k, v in ledger.items() if k in ("last_sync", "last_restore") and isinstance(v, dict)}


def runs_in(root: Path) -> dict[str, Run]:
    """The run folders under `root`, by id (as store.list_runs finds them)."""
    if not root.is_dir():
        return {}
    return {p.name: Run(p) for p in root.iterdir() if RUN_ID_RE.match(p.name) and (p / "run.yaml").is_file()}


def plan_restore(paths: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Group a repo's file paths by run: ({run id: [paths inside the run]}, {refused name: why}). Files outside
    ``runs/`` are ignored; a run with any odd path is refused whole, as is one without run.yaml.

    >>> plan_restore(["README.md", "runs/20250101-000000-a-abcdef/run.yaml", "runs/x/run.yaml"])
    ({'20250101-000000-a-abcdef': ['run.yaml']}, {'x': 'not a run id'})
    """
    runs: dict[str, list[str]] = {}
    refused: dict[str, str] = {}
    for path in paths:
        parts = path.split("/")
        if parts[0] != REPO_DIR or len(parts) < 2:
            continue
        run_id, rel = parts[1], "/".join(parts[2:])
        if not RUN_ID_RE.match(run_id):
            refused[run_id] = "not a run id"
        elif not rel or check_relpath(rel):
            refused[run_id] = check_relpath(rel) if rel else "a file where a run folder should be"
        else:
            runs.setdefault(run_id, []).append(rel)
    for run_id, rels in list(runs.items()):
        if run_id in refused or "run.yaml" not in rels:
            refused.setdefault(run_id, "no run.yaml")
            del runs[run_id]
    return runs, refused


__all__ = ["LEDGER", "LOCK", "MARKER", "REPO_DIR", "SYNCED_DIRS", "check_relpath", "held_runs", "last_status",
           "locked", "plan_restore", "read_json", "runs_in", "save_ledger", "syncable_files"]
