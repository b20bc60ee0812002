"""Where runs live, and whether that storage survives a Space rebuild.

A Hugging Face Space's own disk is lost at every rebuild and restart; only its
persistent storage, mounted at ``/data`` when the owner turns it on, survives.
So on a Space (``SPACE_ID`` set) with ``/data`` present and writable, runs
default to ``/data/runs``; anywhere else to ./runs. ``STUDIO_RUNS_DIR`` still
comes first (store.runs_root), and ``STUDIO_PERSISTENT_DIR`` moves the place
looked at instead of ``/data`` (tests, other hosts).

`storage_report()` says where runs are and whether they survive a rebuild
("yes", "no" or "unknown") and why; the page shows it (ui/storage_note.py):

    python -c "from finetune_core.runs.storage import storage_report; print(storage_report())"
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

PERSISTENT_DIR = "/data"  # where a Space mounts its persistent storage
PERSISTENT_ENV = "STUDIO_PERSISTENT_DIR"  # another place to treat as persistent storage


def on_space() -> bool:
    """Whether the app runs as a Hugging Face Space (the Space runtime sets ``SPACE_ID``)."""
    return bool(os.environ.get("SPACE_ID"))


def persistent_dir() -> Path:
    """Where persistent storage would be mounted: ``STUDIO_PERSISTENT_DIR``, else /data (read at each call)."""
    return Path(os.environ.get(PERSISTENT_ENV) or PERSISTENT_DIR)


def persistent_storage() -> Path | None:
    """The persistent storage folder when this is a Space and it is mounted and writable, else None."""
    folder = persistent_dir()
    if on_space() and folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
        return folder.resolve()
    return None


def default_runs_dir() -> Path:
    """The runs root when ``STUDIO_RUNS_DIR`` is not set: <persistent storage>/runs on a Space that has it,
    else ./runs (relative: store.runs_root resolves it)."""
    storage = persistent_storage()
    return storage / "runs" if storage is not None else Path("runs")


@dataclass(frozen=True)
class StorageReport:
    """Where runs live and whether they survive a rebuild: `survives` is "yes", "no" or "unknown", `why` says
    why in a sentence, `warn` is True when runs will be lost (a Space without persistent storage), and
    `synced_to` names the Hub repo finished runs are backed up to ("" when sync is off)."""

    path: str
    survives: str
    why: str
    warn: bool
    synced_to: str = ""

    def as_dict(self) -> dict:
        """The report as a plain dict (for JSON and the settings page)."""
        return asdict(self)

    def __str__(self) -> str:
        lost = " A Space's own disk is lost at every rebuild and restart." if self.warn else ""
        backup = f" Finished runs are backed up to the Hub repo {self.synced_to}." if self.synced_to else ""
        return f"Runs are kept in {self.path}; survives a rebuild: {self.survives} — {self.why}.{lost}{backup}"


def _survives(root: Path) -> tuple[str, str]:
    """("yes"/"no"/"unknown", why) for a runs root at `root`."""
    if not on_space():
        return "unknown", "not running as a Hugging Face Space: the runs last as long as this machine's disk"
    storage = persistent_storage()
    if storage is not None and root.is_relative_to(storage):
        return "yes", f"inside the Space's persistent storage ({storage})"
    if storage is not None:
        return "no", f"STUDIO_RUNS_DIR points outside the Space's persistent storage ({storage})"
    if persistent_dir().exists():
        return "no", f"{persistent_dir()} exists but this process cannot write to it"
    return "no", f"no persistent storage is mounted at {persistent_dir()}"


def storage_report() -> StorageReport:
    """Where runs live now (store.runs_root) and whether that storage survives a Space rebuild, and why."""
    from finetune_core.runs.store import runs_root  # store imports this module for its default

    root = runs_root()
    survives, why = _survives(root)
    repo = (os.environ.get("STUDIO_SYNC_REPO") or "").strip()  # see finetune_core/runs/sync.py
    return StorageReport(path=str(root), survives=survives, why=why, warn=survives == "no", synced_to=repo)


__all__ = ["PERSISTENT_DIR", "PERSISTENT_ENV", "StorageReport", "default_runs_dir", "on_space", "persistent_dir",
           "persistent_storage", "storage_report"]
