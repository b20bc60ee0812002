"""Back finished runs up to a Hub repo, and bring them back after a rebuild.

A Space without persistent storage loses its runs at every rebuild. When the owner names a repo
(``STUDIO_SYNC_REPO``, e.g. a private dataset repo "owner/studio-runs"), the app uploads each finished
run (FINAL_STATES) there under ``runs/<run id>/``, and on start downloads the runs the repo has and the
runs folder lacks. Settings (the owner's, server-side; never a visitor's):

    STUDIO_SYNC_REPO        the repo id; unset: no sync
    STUDIO_SYNC_TOKEN       a write token for it (else HF_TOKEN, else the saved login)
    STUDIO_SYNC_REPO_TYPE   dataset (default) or model
    STUDIO_SYNC_MINUTES     time between syncs in the app, default 5 (0: only once, on start)
    STUDIO_SYNC_PUBLIC=1    allow a public repo (runs hold visitors' data: refused by default)

What travels: the run's top-level files (run.yaml, status.json, metrics.jsonl, log.txt, name.json,
owner.json, votes.jsonl...) and the folders in sync_files.SYNCED_DIRS (adapter; the data split, which
evaluation needs; evaluation results, checks, report, export records). Never checkpoints/ nor hidden or
temporary files. Each run records what it sent in ``.synced.json`` (its files' sizes and times): an
unchanged run is not sent again, a changed one sends only what changed. ``<runs root>/.sync.json`` lists
the runs each repo holds from here (so a run deleted here is deleted from the repo at the next sync, and
not restored) and the last outcome, which the page shows (sync_files.py keeps these books). A restore
never overwrites a local run, refuses ids that are not run ids and paths that are not what a run holds,
and renames each run into place whole. Failures are reported, never raised into the app, and never touch
local runs. By hand:

    python -m finetune_core sync            # upload finished runs now
    python -m finetune_core sync --restore  # download runs missing here
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from finetune_core.errors import StudioError, one_line
from finetune_core.runs.store import FINAL_STATES, RUN_ID_RE, Run, runs_root, write_json_atomic
from finetune_core.runs.sync_files import (MARKER, REPO_DIR, books, check_relpath, last_status, plan_restore,
                                           read_json, runs_in, syncable_files)

log = logging.getLogger(__name__)

DEFAULT_MINUTES = 5.0
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class SyncError(StudioError):
    """The sync settings cannot be used; the message names the setting."""


@dataclass(frozen=True)
class SyncTarget:
    """The repo runs are synced with. `endpoint` None means the Hub (``HF_ENDPOINT``); the token is never shown."""

    repo_id: str
    token: str | None = field(default=None, repr=False)
    endpoint: str | None = None
    repo_type: str = "dataset"

    def __post_init__(self):
        if not _REPO_ID.match(self.repo_id or ""):
            raise SyncError(f"STUDIO_SYNC_REPO: {self.repo_id!r} is not a repo id; write it as owner/name.")
        if self.repo_type not in ("dataset", "model"):
            raise SyncError(f"STUDIO_SYNC_REPO_TYPE: {self.repo_type!r}; use dataset or model.")

    @classmethod
    def from_env(cls) -> "SyncTarget | None":
        """The target the environment names now (repo, token, ``HF_ENDPOINT``), or None when ``STUDIO_SYNC_REPO``
        is unset."""
        repo = (os.environ.get("STUDIO_SYNC_REPO") or "").strip()
        if not repo:
            return None
        token = os.environ.get("STUDIO_SYNC_TOKEN") or os.environ.get("HF_TOKEN") or None
        # HF_ENDPOINT read now: huggingface_hub.constants read it once, when the client was imported
        return cls(repo, token, (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None,
                   (os.environ.get("STUDIO_SYNC_REPO_TYPE") or "dataset").strip())

    def api(self):
        """An HfApi for this target (endpoint passed explicitly: huggingface_hub reads HF_ENDPOINT at import)."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token)


@dataclass
class SyncReport:
    """What one sync did: runs uploaded, runs unchanged, runs deleted from the repo (deleted here), runs that
    failed (id -> why), and `error`, a failure of the whole sync ("" when it worked)."""

    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the sync reached the repo and every run it tried was sent."""
        return not self.error and not self.failed

    def summary(self) -> str:
        """One line for a log, a terminal or the page."""
        if self.error:
            return f"sync failed: {self.error}"
        text = (f"synced {len(self.uploaded)} run(s), {len(self.unchanged)} unchanged"
                + (f", {len(self.deleted)} deleted from the repo" if self.deleted else ""))
        if self.failed:
            text += "; failed: " + "; ".join(f"{rid}: {why}" for rid, why in self.failed.items())
        return text


@dataclass
class RestoreReport:
    """What one restore did: runs downloaded, runs already here (never overwritten), runs skipped because they
    were deleted here, entries refused (name -> why), and `error`, a failure of the whole restore."""

    restored: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    deleted_here: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        """True when the restore read the repo (refused entries are reported, not failures)."""
        return not self.error

    def summary(self) -> str:
        """One line for a log, a terminal or the page."""
        if self.error:
            return f"restore failed: {self.error}"
        text = f"restored {len(self.restored)} run(s), {len(self.present)} already here"
        if self.refused:
            text += "; refused: " + "; ".join(f"{name}: {why}" for name, why in self.refused.items())
        return text


# -- upload --------------------------------------------------------------------------------------
def _sync_one(api, target: SyncTarget, run: Run, remote: Callable[[], set[str]]) -> bool:
    """Send what changed in one finished run since its marker (for this repo); False when nothing did.
    Files sent before and gone since are deleted from the repo when it still has them (`remote()`)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    marker = read_json(run.path / MARKER)
    before = marker.get("files", {}) if marker.get("repo") == target.repo_id else {}
    now = syncable_files(run.path)
    if now == before or not now:  # unchanged, or deleted while we looked
        return False
    base = f"{REPO_DIR}/{run.id}"
    ops = [CommitOperationAdd(f"{base}/{rel}", str(run.path / rel)) for rel, stamp in sorted(now.items())
           if before.get(rel) != stamp]
    gone = [f"{base}/{rel}" for rel in sorted(set(before) - set(now))]
    ops += [CommitOperationDelete(path) for path in gone if path in remote()]
    state = run.status().get("state")
    info = api.create_commit(target.repo_id, ops, commit_message=f"Sync run {run.id} ({state})",
                             repo_type=target.repo_type)
    write_json_atomic(run.path / MARKER, {"repo": target.repo_id, "commit": info.oid, "at": time.time(),
                                          "updated": run.status().get("updated"), "files": now})
    return True


def _remote_files(api, target: SyncTarget) -> Callable[[], set[str]]:
    """The repo's file paths, listed once, when first asked (only deletions need them)."""
    listed: list[set[str]] = []

    def files() -> set[str]:
        if not listed:
            listed.append(set(api.list_repo_files(target.repo_id, repo_type=target.repo_type)))
        return listed[0]
    return files


def _check_repo(api, target: SyncTarget) -> None:
    """Make the repo (private) when missing; refuse a public one unless the owner allows it."""
    api.create_repo(target.repo_id, repo_type=target.repo_type, private=True, exist_ok=True)
    if os.environ.get("STUDIO_SYNC_PUBLIC", "") in ("", "0"):
        if api.repo_info(target.repo_id, repo_type=target.repo_type).private is False:
            raise SyncError(f"The repo {target.repo_id} is public and runs hold visitors' data: make it private, "
                            "or set STUDIO_SYNC_PUBLIC=1.")


def sync_runs(target: SyncTarget, root: Path | None = None) -> SyncReport:
    """Upload every finished run under the runs root that changed since it was last sent to `target`, one commit
    per run, and delete from the repo the runs this folder sent and has since deleted. Never raises for the
    Hub's failures: they are in the report (and recorded for the page)."""
    root = root or runs_root()
    report = SyncReport()
    with books(root, target.repo_id, report, "sync") as held:
        if held is None:
            return report
        try:
            api = target.api()
            _check_repo(api, target)
            local, remote = runs_in(root), _remote_files(api, target)
            gone = held - set(local)
            report.deleted = _delete_gone(api, target, gone, remote)
            held -= gone
            for run in local.values():
                if run.status().get("state") not in FINAL_STATES:
                    continue  # running or waiting: sent once it ends
                try:
                    (report.uploaded if _sync_one(api, target, run, remote) else report.unchanged).append(run.id)
                    held.add(run.id)
                except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
                    report.failed[run.id] = one_line(exc)
        except Exception as exc:  # noqa: BLE001 - the Hub down, a bad token, offline: reported, never raised
            report.error = one_line(exc)
    return report


def _delete_gone(api, target: SyncTarget, gone: set[str], remote: Callable[[], set[str]]) -> list[str]:
    """Delete from the repo the runs this folder sent and no longer has (deleted by their owner), those the repo
    still holds; returns their ids."""
    from huggingface_hub import CommitOperationDelete

    if not gone:
        return []
    held = {path.split("/")[1] for path in remote() if path.startswith(f"{REPO_DIR}/") and path.count("/") > 1}
    gone_there = sorted(rid for rid in gone if RUN_ID_RE.match(rid) and rid in held)
    if gone_there:
        ops = [CommitOperationDelete(f"{REPO_DIR}/{rid}/", is_folder=True) for rid in gone_there]
        api.create_commit(target.repo_id, ops, repo_type=target.repo_type,
                          commit_message=f"Delete {len(gone_there)} run(s) deleted in the studio")
    return gone_there


# -- restore -------------------------------------------------------------------------------------
def _download_run(target: SyncTarget, revision: str, run_id: str, rels: list[str], root: Path) -> None:
    """Download one run into a hidden folder beside the runs, then rename it in (whole or not at all)."""
    from huggingface_hub import hf_hub_download

    tmp = root / f".restore-{run_id}-{secrets.token_hex(4)}"
    try:
        for rel in rels:
            hf_hub_download(target.repo_id, f"{REPO_DIR}/{run_id}/{rel}", repo_type=target.repo_type,
                            revision=revision, local_dir=tmp, endpoint=target.endpoint, token=target.token)
        folder = tmp / REPO_DIR / run_id
        if (root / run_id).exists():
            raise FileExistsError(f"run {run_id} appeared here meanwhile")
        folder.rename(root / run_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = syncable_files(root / run_id)
    write_json_atomic(root / run_id / MARKER, {"repo": target.repo_id, "commit": revision, "at": time.time(),
                                               "restored": True, "files": files})


def restore_runs(target: SyncTarget, root: Path | None = None) -> RestoreReport:
    """Download the runs `target` holds and the runs root lacks; never overwrites a local run, nor brings back
    one deleted here. Never raises for the Hub's failures: they are in the report."""
    from huggingface_hub.errors import RepositoryNotFoundError

    root = root or runs_root()
    report = RestoreReport()
    with books(root, target.repo_id, report, "restore") as held:
        if held is None:
            return report
        try:
            api = target.api()
            info = api.repo_info(target.repo_id, repo_type=target.repo_type)
            paths = api.list_repo_files(target.repo_id, repo_type=target.repo_type, revision=info.sha)
            runs, report.refused = plan_restore(paths)
            for run_id, rels in sorted(runs.items()):
                if (root / run_id).exists():
                    report.present.append(run_id)
                elif run_id in held:
                    report.deleted_here.append(run_id)  # sent from here, then deleted: the next sync removes it
                else:
                    try:
                        _download_run(target, info.sha, run_id, rels, root)
                        report.restored.append(run_id)
                        held.add(run_id)
                    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
                        report.refused[run_id] = one_line(exc)
        except RepositoryNotFoundError:
            pass  # nothing synced yet: the first sync makes the repo
        except Exception as exc:  # noqa: BLE001 - the Hub down, a bad token, offline: reported, never raised
            report.error = one_line(exc)
    return report


def sync_now(target: SyncTarget | None = None) -> SyncReport:
    """Sync now with `target` (default: the environment's); a report with an error when sync is off."""
    try:
        target = target or SyncTarget.from_env()
    except SyncError as exc:
        return SyncReport(error=str(exc))
    if target is None:
        return SyncReport(error="sync is off: set STUDIO_SYNC_REPO to a Hub repo id (owner/name)")
    return sync_runs(target)


# -- the app's sync loop -------------------------------------------------------------------------
class Syncer:
    """In a daemon thread: restore once (retried until it works), then sync finished runs every `interval_s`
    seconds (default ``STUDIO_SYNC_MINUTES``). `target` is read at each pass (default: the environment's)."""

    def __init__(self, target: Callable[[], SyncTarget | None] = SyncTarget.from_env,
                 interval_s: float | None = None):
        self.target = target
        self.interval_s = interval_s
        self.restored = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> tuple[RestoreReport | None, SyncReport | None]:
        """One pass in the calling thread: the restore until one worked, then a sync. (None, None) when sync is off."""
        target = self.target()
        if target is None:
            return None, None
        restored = None
        if not self.restored:
            restored = restore_runs(target)
            self.restored = restored.ok
            log.info("runs sync: %s", restored.summary())
        synced = sync_runs(target)
        (log.info if synced.ok else log.warning)("runs sync: %s", synced.summary())
        return restored, synced

    def start(self) -> bool:
        """Start the thread (once); False when sync is off (no STUDIO_SYNC_REPO) or already running."""
        if self._thread is not None and self._thread.is_alive():
            return False
        try:
            if self.target() is None:
                return False
        except SyncError as exc:
            log.error("runs sync is off: %s", exc)
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="runs-sync", daemon=True)
        self._thread.start()
        return True

    def _interval(self) -> float:
        if self.interval_s is not None:
            return self.interval_s
        try:
            return max(0.0, float(os.environ.get("STUDIO_SYNC_MINUTES") or DEFAULT_MINUTES)) * 60
        except ValueError:
            return DEFAULT_MINUTES * 60

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a failed pass must not end the loop
                log.exception("runs sync failed")
            interval = self._interval()
            if interval <= 0 and self.restored:
                return  # restore on start only
            if self._stop.wait(interval or DEFAULT_MINUTES * 60):
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to `timeout` seconds; a no-op when it never started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


# -- command line --------------------------------------------------------------------------------
def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sync` command's flags."""
    parser.add_argument("--restore", action="store_true", help="Download the runs the repo has and this folder lacks.")
    parser.add_argument("--repo", help="The repo (owner/name); default STUDIO_SYNC_REPO.")


def cmd_sync(args: argparse.Namespace) -> int:
    """Sync (or restore) now and print what happened; 0 when it worked, 1 when it did not."""
    env = SyncTarget.from_env()  # a SyncError (bad setting) is reported by the CLI's main
    if args.repo:
        env = SyncTarget(args.repo, env.token if env else (os.environ.get("HF_TOKEN") or None),
                         repo_type=env.repo_type if env else "dataset")
    if env is None:
        raise SyncError("Nothing to sync with: set STUDIO_SYNC_REPO or pass --repo owner/name.")
    report = restore_runs(env) if args.restore else sync_runs(env)
    print(report.summary())
    return 0 if report.ok else 1


__all__ = ["RestoreReport", "SyncError", "SyncReport", "SyncTarget", "Syncer",
           "add_sync_arguments", "check_relpath", "cmd_sync", "last_status", "plan_restore", "restore_runs",
           "sync_now", "sync_runs"]
