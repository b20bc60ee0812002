"""Retention: old and oversize files in the server's scratch folders are removed.

A public Space never restarts on its own, so every upload, download and vote
file it writes stays until the disk is full. The app owns a `Sweeper` (started
by ``app.py``) that sweeps these folders every few minutes:

    uploads        copies of uploaded data files (``STUDIO_UPLOADS_DIR``)
    exports        downloads made by the Export and Evaluate tabs (``STUDIO_EXPORTS_DIR``)
    gradio-cache   Gradio's own cache: raw uploads, files handlers returned, vote files
                   (``GRADIO_TEMP_DIR``, else ``<system temp>/gradio``)

Runs are never swept: a run is removed only by its owner or an admin.

The unit removed is one top-level entry of a folder (a file, or a folder such
as one export's ``<token>/``), so a download never loses half its files. An
entry's age is that of its newest file. A sweep removes, oldest first, the
entries older than the age limit, then more until the folder fits its size
cap, but never an entry younger than the grace period (it may still be being
written or downloaded) nor one holding a protected path (the data file of the
job that is training now).

Settings (read at each sweep; ``<AREA>`` is UPLOADS, EXPORTS or GRADIO_CACHE and
overrides the general setting for that folder):

    STUDIO_RETENTION_HOURS / STUDIO_RETENTION_<AREA>_HOURS   max age, default 24 (0: no age limit)
    STUDIO_RETENTION_MB / STUDIO_RETENTION_<AREA>_MB         size cap per folder, default 5000 (0: no cap)
    STUDIO_RETENTION_GRACE_MINUTES                           never remove younger entries, default 10
    STUDIO_SWEEP_MINUTES                                     time between sweeps, default 10 (0: never)

There is no per-user cap: uploads, exports and vote files carry no owner (their
names are server-made tokens), so the per-folder cap is what bounds one
visitor's share. One sweep of a folder, by hand:

    python -c "from pathlib import Path; from finetune_core.retention import Area, sweep
    print(sweep(Area('uploads', Path('uploads'))))"
"""
from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger(__name__)

DEFAULTS = {"HOURS": 24.0, "MB": 5000.0, "GRACE_MINUTES": 10.0, "SWEEP_MINUTES": 10.0}


def gradio_cache_dir() -> Path:
    """Where Gradio keeps uploads and the files handlers return: Gradio's own rule
    (``gradio.utils.get_upload_folder``), repeated here because the core never
    imports gradio; tests/test_disk.py checks that both agree."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def fresh_folder(root: Path, prefix: str = "") -> Path:
    """A new folder with an unguessable name under `root` (one download each: one
    visitor's link never reveals another's file)."""
    folder = Path(root) / f"{prefix}{secrets.token_urlsafe(16)}"
    folder.mkdir(parents=True)
    return folder


def _setting(name: str, area: str = "") -> float:
    """A number from ``STUDIO_RETENTION_<AREA>_<NAME>``, else ``STUDIO_RETENTION_<NAME>``,
    else the default; a value that is not a finite number >= 0 counts as unset."""
    keys = ([f"STUDIO_RETENTION_{area.upper().replace('-', '_')}_{name}"] if area else [])
    keys.append(f"STUDIO_RETENTION_{name}" if name != "SWEEP_MINUTES" else "STUDIO_SWEEP_MINUTES")
    for key in keys:
        try:
            value = float(os.environ.get(key, "").strip())
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return DEFAULTS[name]


@dataclass(frozen=True)
class Policy:
    """What one folder may keep: entries up to `max_age_s` old (0: any age), up to
    `max_bytes` in all (0: no cap); nothing younger than `grace_s` is removed."""

    max_age_s: float = DEFAULTS["HOURS"] * 3600
    max_bytes: int = int(DEFAULTS["MB"] * 1024 * 1024)
    grace_s: float = DEFAULTS["GRACE_MINUTES"] * 60

    @classmethod
    def from_env(cls, area: str = "") -> "Policy":
        """The policy the environment sets now for `area` (a name such as "uploads"; "" for the general one)."""
        return cls(max_age_s=_setting("HOURS", area) * 3600, max_bytes=int(_setting("MB", area) * 1024 * 1024),
                   grace_s=_setting("GRACE_MINUTES") * 60)


@dataclass(frozen=True)
class Area:
    """One swept folder; `policy` None means "read the settings at each sweep"."""

    name: str
    path: Path
    policy: Policy | None = None

    def current_policy(self) -> Policy:
        """The fixed policy if one was given, else the environment's as it stands now."""
        return self.policy or Policy.from_env(self.name)


@dataclass
class Entry:
    """One top-level entry of a swept folder: its path, total size in bytes, and age stamp (seconds since epoch)."""

    path: Path
    size: int
    mtime: float  # of the newest file or folder inside


@dataclass
class SweepReport:
    """What one sweep of `area` did: names removed, bytes freed, and bytes the folder still holds."""

    area: str
    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_bytes: int = 0


# -- one sweep -----------------------------------------------------------------------------------
def measure(path: Path) -> Entry:
    """Size and age stamp of a file or folder tree, links not followed. The stamp is the
    newest mtime or ctime inside: copies made with copy2 keep an old mtime, but their
    ctime says when they arrived (Gradio's own cache cleaner ages files by ctime too)."""
    st = path.lstat()
    size, newest = (0 if path.is_dir() and not path.is_symlink() else st.st_size), max(st.st_mtime, st.st_ctime)
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    inner = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue  # removed while we looked: it no longer counts
                newest = max(newest, inner.st_mtime, inner.st_ctime)
                size += 0 if name in dirs else inner.st_size
    return Entry(path, size, newest)


def _holds(path: Path, others: Iterable[Path]) -> bool:
    """True when `path` is one of `others` or a folder holding one."""
    return any(other.is_relative_to(path) for other in others)


def entries(folder: Path, skip: Iterable[Path] = ()) -> list[Entry]:
    """The top-level entries of `folder`, minus those holding a path in `skip`
    (another swept folder nested inside this one)."""
    skip = [Path(p).resolve() for p in skip]
    found = []
    for path in folder.iterdir():
        if _holds(path.resolve(), skip):
            continue
        try:
            found.append(measure(path))
        except OSError:
            continue  # removed while we looked
    return found


def plan(found: list[Entry], policy: Policy, now: float, protected: Iterable[Path] = ()) -> list[Entry]:
    """Entries to remove, oldest first: those past the age limit, then more until the
    folder fits its cap. Young and protected entries stay even if the cap is not met."""
    protected = [Path(p).resolve() for p in protected]
    movable = sorted((e for e in found if now - e.mtime >= policy.grace_s
                      and not _holds(e.path.resolve(), protected)), key=lambda e: e.mtime)
    doomed = [e for e in movable if policy.max_age_s and now - e.mtime > policy.max_age_s]
    total = sum(e.size for e in found) - sum(e.size for e in doomed)
    for entry in movable:
        if not policy.max_bytes or total <= policy.max_bytes:
            break
        if entry not in doomed:
            doomed.append(entry)
            total -= entry.size
    return sorted(doomed, key=lambda e: e.mtime)


def remove(path: Path) -> bool:
    """Delete a file, link or folder tree; False when some of it could not be removed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return not os.path.lexists(path)


def sweep(area: Area, protected: Iterable[Path] = (), skip: Iterable[Path] = (),
          now: float | None = None) -> SweepReport:
    """Apply the area's policy once; a missing folder is an empty one. The runs root is
    never touched, even when a deployment puts it inside a swept folder."""
    from finetune_core.runs.store import runs_root

    report = SweepReport(area.name)
    if not area.path.is_dir() or area.path.resolve().is_relative_to(runs_root()):
        return report
    found = entries(area.path, [*skip, runs_root()])
    doomed = plan(found, area.current_policy(), time.time() if now is None else now, protected)
    for entry in doomed:
        if remove(entry.path):
            report.removed.append(entry.path.name)
            report.freed_bytes += entry.size
    report.kept_bytes = sum(e.size for e in found) - report.freed_bytes
    return report


def sweep_all(areas: list[Area], protected: Iterable[Path] = (), now: float | None = None) -> list[SweepReport]:
    """Sweep every area; an area nested in another (exports inside Gradio's cache) is
    swept by its own policy only."""
    protected = list(protected)
    reports = []
    for area in areas:
        skip = [other.path for other in areas if other is not area and other.path != area.path]
        reports.append(sweep(area, protected, skip, now))
    return reports


# -- the app's sweeper ---------------------------------------------------------------------------
class Sweeper:
    """Sweeps `areas` every `interval_s` seconds (default: ``STUDIO_SWEEP_MINUTES``) in a
    daemon thread. `protect()` names the paths in use right now (the training job's data)."""

    def __init__(self, areas: list[Area], protect: Callable[[], Iterable[Path]] = lambda: (),
                 interval_s: float | None = None):
        self.areas = list(areas)
        self.protect = protect
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a sweep by hand and the thread's never overlap
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> list[SweepReport]:
        """Sweep every area now, in the calling thread; safe beside the sweeper thread (the two never overlap).

        Logs each removal; returns one report per area."""
        with self._lock:
            reports = sweep_all(self.areas, list(self.protect()))
        for rep in reports:
            if rep.removed:
                log.info("retention: removed %d entries (%.1f MB) from %s", len(rep.removed),
                         rep.freed_bytes / 2**20, rep.area)
        return reports

    def start(self) -> bool:
        """Start the thread (once); False when sweeping is switched off or already running."""
        interval = self.interval_s if self.interval_s is not None else _setting("SWEEP_MINUTES") * 60
        if interval <= 0 or (self._thread is not None and self._thread.is_alive()):
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="retention-sweeper", daemon=True)
        self._thread.start()
        return True

    def _loop(self, interval: float) -> None:
        while True:
            try:
                self.sweep_once()
            except Exception:  # noqa: BLE001 - a failed sweep must not end the sweeping
                log.exception("retention sweep failed")
            if self._stop.wait(interval):
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to `timeout` seconds for it; a no-op when it never started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


__all__ = ["Area", "Entry", "Policy", "SweepReport", "Sweeper", "fresh_folder", "gradio_cache_dir", "measure",
           "plan", "remove", "sweep", "sweep_all"]
