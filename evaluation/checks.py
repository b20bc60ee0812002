"""Where a run's extra checks are kept: runs/<id>/checks/<name>.json.

The held-out evaluation owns runs/<id>/eval/ and replaces that whole folder
each time, so the general-skill benchmarks and the judge keep their results
beside it, one JSON file each ("benchmarks", "judge"), each written
atomically and fully replaced by the next check of its kind. File names are
made here from a fixed set, never from user text.

    >>> from types import SimpleNamespace
    >>> checks_dir(SimpleNamespace(path=Path("runs/r1"))).as_posix()
    'runs/r1/checks'
    >>> read_check(SimpleNamespace(path=Path("runs/no-such-run")), "judge") is None
    True
"""
from __future__ import annotations

import json
from pathlib import Path

CHECKS_DIR = "checks"
CHECK_NAMES = ("benchmarks", "judge")


def checks_dir(run) -> Path:
    """The run's checks folder (runs/<id>/checks); it may not exist yet."""
    return Path(run.path) / CHECKS_DIR


def _check_path(run, name: str) -> Path:
    if name not in CHECK_NAMES:
        raise ValueError(f"unknown check {name!r}; the checks are {', '.join(CHECK_NAMES)}")
    return checks_dir(run) / f"{name}.json"


def read_check(run, name: str) -> dict | None:
    """The saved result of check `name` ("benchmarks" or "judge"), or None when there is none yet.
    A file that is not a JSON object counts as none (the next check of that kind replaces it)."""
    path = _check_path(run, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):  # missing (no check yet) or unreadable
        return None
    return data if isinstance(data, dict) else None


def write_check(run, name: str, data: dict) -> Path:
    """Save `data` as checks/<name>.json (temporary name, then renamed: a reader never sees half a file)
    and return its path. ValueError for an unknown name or a value JSON cannot hold (NaN, infinity)."""
    from finetune_core.runs.store import write_json_atomic

    path = _check_path(run, name)
    json.dumps(data, allow_nan=False)  # a NaN would make the file unreadable for browsers: refuse it here
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    return path
