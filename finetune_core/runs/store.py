"""The run directory: what a training run is on disk.

    runs/<id>/run.yaml        the RunConfig (+ resolved device/dtype)
    runs/<id>/status.json     state, step, total steps, reason, timestamps
    runs/<id>/metrics.jsonl   one JSON event per log step
    runs/<id>/log.txt         human-readable log
    runs/<id>/data/           train.jsonl, heldout.jsonl, report.json (the split)
    runs/<id>/checkpoints/    Trainer checkpoints (retention-limited)
    runs/<id>/adapter/        final adapter (or full model) + tokenizer
    runs/<id>/eval/           evaluation results
    runs/<id>/votes.jsonl     blind A/B votes from the Chat tab (see inference/votes.py)
    runs/<id>/name.json       the run's human name (editable; the id never changes)

run.yaml and status.json carry ``schema_version`` (SCHEMA_VERSION). A file
without one was written before versions existed: it reads as version 1 and is
migrated in memory (`migrate_run_yaml`, `migrate_status`), so old run
directories open unchanged on disk until the run is next written.

Run ids are made here, never taken from user text (a person sees the run's
human name, `Run.name`, beside or instead of it); `get_run` only opens ids
that match the id pattern and exist under the runs root. The root defaults to
./runs, to /data/runs on a Space with persistent storage (storage.py), and
``STUDIO_RUNS_DIR`` moves it anywhere.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_core.config import RunConfig, read_config_yaml
from finetune_core.errors import StudioError
from finetune_core.runs.storage import default_runs_dir

# waiting: in the run queue (training/queue.py); queued: made and about to start; cancelled: taken off the queue
STATES = ("waiting", "queued", "running", "completed", "stopped", "failed", "interrupted", "cancelled")
FINAL_STATES = ("completed", "stopped", "failed", "interrupted", "cancelled")
NAME_MAX = 80  # characters of a run's human name
RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[a-z0-9-]{1,40}-[0-9a-f]{6}$")
SCHEMA_VERSION = 2  # of run.yaml, status.json and votes.jsonl lines; bumped with each format change


class RunError(StudioError):
    """A run could not be found or used; the message is for the user."""


def runs_root() -> Path:
    """Where run directories live: ``STUDIO_RUNS_DIR``, else /data/runs on a Space with persistent storage,
    else ./runs (storage.default_runs_dir), as an absolute path (read at each call)."""
    return Path(os.environ.get("STUDIO_RUNS_DIR") or default_runs_dir()).resolve()


def _slug(text: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")
    return (text or "run")[:40].strip("-") or "run"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary name, then rename: readers never see half a file. A failed
    write (disk full...) removes its temporary file and leaves the old file as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=2, ensure_ascii=False))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def schema_version(data: dict) -> int:
    """The format version a run file was written in; 1 for files from before versions.

    >>> schema_version({"state": "queued"}), schema_version({"schema_version": 2})
    (1, 2)
    """
    version = data.get("schema_version", 1)
    return version if isinstance(version, int) and not isinstance(version, bool) and version >= 1 else 1


def migrate_run_yaml(data: dict) -> dict:
    """run.yaml's mapping brought to SCHEMA_VERSION (a new dict; the file is not touched).

    Version 1 -> 2 only adds the version: the fields themselves did not change.

    >>> migrate_run_yaml({"model": "bundled"})
    {'model': 'bundled', 'schema_version': 2}
    """
    data = dict(data)
    if schema_version(data) < 2:
        data["schema_version"] = 2
    return data


def migrate_status(data: dict) -> dict:
    """status.json's mapping brought to SCHEMA_VERSION (a new dict; the file is not touched).

    Version 1 -> 2 only adds the version: the states and keys did not change.

    >>> migrate_status({"state": "completed", "step": 3})["schema_version"]
    2
    """
    data = dict(data)
    if schema_version(data) < 2:
        data["schema_version"] = 2
    return data


def check_run_name(name: Any) -> str:
    """A run name from a person, cleaned (spaces collapsed); a RunError names the field when it is
    empty, too long or has control characters.

    >>> check_run_name("  emotion   · lr 2e-4 ")
    'emotion · lr 2e-4'
    """
    if not isinstance(name, str) or not name.strip():
        raise RunError("Run name: type a name (any words, up to 80 characters).")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise RunError("Run name: it has control characters (line breaks or tabs); use plain words.")
    name = " ".join(name.split())
    if len(name) > NAME_MAX:
        raise RunError(f"Run name: {len(name)} characters; keep it to {NAME_MAX}.")
    return name


def default_run_name(data_label: str, preset: str = "", when: float | None = None) -> str:
    """The name a run gets unless a person gives one: dataset · preset · day and time.

    >>> default_run_name("customer_intents.jsonl", "Quick demo (CPU)", 0.0)[:35]
    'customer_intents · Quick demo (CPU)'
    """
    stem = Path(data_label or "").stem if "." in (data_label or "") else (data_label or "")
    parts = [p for p in (stem.strip() or "run", (preset or "").strip()) if p]
    stamp = time.strftime("%d %b %H:%M", time.localtime(time.time() if when is None else when))
    return check_run_name(" · ".join([*parts, stamp])[-NAME_MAX:])


@dataclass
class Run:
    """One run directory on disk (see the module docstring); reads and writes its files, holds nothing in memory."""

    path: Path

    @property
    def id(self) -> str:
        """The run's id: its directory name."""
        return self.path.name

    # -- well-known places ---------------------------------------------------
    @property
    def adapter_dir(self) -> Path:
        """Where the final adapter (or full model) and its tokenizer are saved."""
        return self.path / "adapter"

    @property
    def checkpoints_dir(self) -> Path:
        """Where the Trainer writes its checkpoints."""
        return self.path / "checkpoints"

    @property
    def data_dir(self) -> Path:
        """The run's data split: train.jsonl, heldout.jsonl and report.json."""
        return self.path / "data"

    @property
    def eval_dir(self) -> Path:
        """Where evaluation results are written."""
        return self.path / "eval"

    @property
    def log_path(self) -> Path:
        """The human-readable log, log.txt."""
        return self.path / "log.txt"

    # -- name, config and status ----------------------------------------------
    @property
    def name(self) -> str:
        """The run's human name (name.json); a run made before names existed reads as its id."""
        try:
            data = json.loads((self.path / "name.json").read_text(encoding="utf-8"))
            return check_run_name(data.get("name"))
        except (OSError, ValueError, AttributeError, RunError):
            return self.id

    def rename(self, name: str) -> str:
        """Give the run a new human name (checked by `check_run_name`); returns it. Its own file, so a
        rename during training never races the trainer's writes to run.yaml or status.json."""
        name = check_run_name(name)
        write_json_atomic(self.path / "name.json", {"name": name, "schema_version": SCHEMA_VERSION})
        return name

    def label(self) -> str:
        """How a person sees the run in lists: its name, then the id's time and random tail, which tell
        apart two runs with the same name."""
        if self.name == self.id:
            return self.id
        return f"{self.name} ({self.id[:15]}…{self.id[-6:]})"


    def config(self) -> RunConfig:
        """The run's RunConfig from run.yaml (recorded facts such as the resolved device are ignored)."""
        return RunConfig.load(self.path / "run.yaml")

    def run_yaml(self) -> dict:
        """run.yaml as a dict (config fields + resolved facts), read by the size- and alias-safe loader
        and migrated to the current schema version."""
        return migrate_run_yaml(read_config_yaml(self.path / "run.yaml"))

    def status(self) -> dict:
        """status.json as a dict; a missing or unreadable one reads as state "failed" with a reason."""
        try:
            status = json.loads((self.path / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"state": "failed", "reason": "status.json is missing or unreadable"}
        return migrate_status(status) if isinstance(status, dict) else status

    def record_facts(self, **facts: Any) -> None:
        """Add facts found while running (resolved device, speed-ups applied...) to run.yaml;
        `RunConfig.load` ignores them."""
        import yaml

        data = {**(self.run_yaml() if (self.path / "run.yaml").is_file() else {}), **facts}
        tmp = self.path / f".run.yaml.{os.getpid()}.tmp"
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        tmp.replace(self.path / "run.yaml")

    def set_status(self, **fields: Any) -> dict:
        """Merge `fields` into status.json (stamping "updated"), write it atomically in the current schema
        version, and return the new status."""
        status = {**self.status(), **fields, "updated": time.time(), "schema_version": SCHEMA_VERSION}
        write_json_atomic(self.path / "status.json", status)
        return status

    # -- metrics and log -------------------------------------------------------
    def append_metric(self, event: dict) -> None:
        """Append one event as a line of metrics.jsonl."""
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")

    def metrics(self) -> list[dict]:
        """Every event in metrics.jsonl, in order; [] when there is none. Lines that are not JSON are skipped."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash mid-write: skip it, keep the rest
        return out

    def log(self, message: str) -> None:
        """Append `message` to log.txt, stamped with the local time of day."""
        stamp = time.strftime("%H:%M:%S")
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"[{stamp}] {message}\n")

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of log.txt ("" when there is no log yet)."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def has_adapter(self) -> bool:
        """Whether training saved a final adapter or full model (its config file is in adapter/)."""
        return (self.adapter_dir / "adapter_config.json").is_file() or (self.adapter_dir / "config.json").is_file()

    def summary(self) -> dict:
        """One row for the runs list: id, name, state, steps, model, method, objective (sft for runs from
        before objectives), parent (the parent run's id, or ""), data file name, the Hub dataset it was
        read from (hub_source, or ""), created, reason.

        A damaged run.yaml leaves model and method None (and data "") rather than raising."""
        st = self.status()
        cfg = {}
        try:
            cfg = self.run_yaml()
        except (OSError, ValueError):  # a damaged run.yaml must not break the runs list
            pass
        return {
            "id": self.id, "name": self.name, "state": st.get("state"), "step": st.get("step", 0),
            "total_steps": st.get("total_steps", 0), "model": cfg.get("model"),
            "method": cfg.get("method"), "objective": cfg.get("objective") or "sft",
            "parent": str(cfg.get("parent_run") or ""), "data": Path(cfg.get("data_path") or "").name,
            "hub_source": str(cfg.get("hub_source") or ""),
            "created": st.get("created"), "reason": st.get("reason", ""),
        }


def create_run(cfg: RunConfig, label: str = "", extra: dict | None = None, owner: dict | None = None,
               name: str = "") -> Run:
    """Make a new run directory with run.yaml, its human `name` (default: dataset · time) and a queued
    status. `owner` (see ownership.py) is written first: the run is never listed without it."""
    name = check_run_name(name) if name else default_run_name(label or Path(cfg.data.data_path).name)
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    base = label or Path(cfg.data.data_path).stem or "run"
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(base)}-{secrets.token_hex(3)}"
    path = root / run_id
    path.mkdir()
    for sub in ("data", "checkpoints"):
        (path / sub).mkdir()
    if owner:
        write_json_atomic(path / "owner.json", owner)
    cfg.save(path / "run.yaml", extra={**(extra or {}), "schema_version": SCHEMA_VERSION})
    run = Run(path)
    run.rename(name)
    run.set_status(state="queued", step=0, total_steps=0, reason="", created=time.time(), pid=os.getpid())
    return run


def get_run(run_id: str) -> Run:
    """Open a run by id; refuses anything that is not a server-made id under the root."""
    run_id = (run_id or "").strip()
    if not RUN_ID_RE.match(run_id):
        raise RunError(f"{run_id!r} is not a run id.")
    path = runs_root() / run_id
    if not (path / "run.yaml").is_file():
        raise RunError(f"Run {run_id} does not exist.")
    return Run(path)


def run_from_dir(folder: str | Path) -> Run:
    """Open a run directory given on the command line (server-side operator input)."""
    path = Path(folder).resolve()
    if not (path / "run.yaml").is_file():
        raise RunError(f"{folder} is not a run directory (no run.yaml).")
    return Run(path)


def list_runs() -> list[Run]:
    """Every run under the runs root, newest first, whoever owns it (`ownership.visible_runs` filters by visitor)."""
    root = runs_root()
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if RUN_ID_RE.match(p.name) and (p / "run.yaml").is_file()]
    return sorted(runs, key=lambda r: r.id, reverse=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_interrupted(active_run_ids: set[str] | None = None) -> list[str]:
    """Runs left 'running' or 'queued' by a process that no longer exists become 'interrupted'."""
    active = active_run_ids or set()
    changed = []
    for run in list_runs():
        st = run.status()
        if st.get("state") not in ("running", "queued") or run.id in active:
            continue
        pid = int(st.get("pid") or 0)
        if pid and pid != os.getpid() and _pid_alive(pid):
            continue  # another live process (e.g. the CLI) owns it
        run.set_status(state="interrupted", reason=f"the process running it stopped at step {st.get('step', 0)}")
        run.log("Marked interrupted: the process that ran it is gone. Resume continues from the last checkpoint.")
        changed.append(run.id)
    return changed
