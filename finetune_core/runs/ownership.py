"""Who may see and change a run: owners, admins and showcase runs.

A run belongs to the visitor who started it. Its owner is written beside the
run as ``owner.json`` (never inside run.yaml, which travels with exports):

    {"user": "alice"}                 signed in (HF OAuth or password login)
    {"browser": "<sha256 of a key>"}  anonymous, on a deployment without login
    {"showcase": true}                added by an admin: read-only for everyone

Three deployment modes decide what others may do (`Policy`):

* local (no login, not public): one person's tool, everything allowed;
* login on (``STUDIO_REQUIRE_LOGIN`` / ``APP_AUTH`` / HF OAuth): each run is its
  owner's; others neither list nor open it, unless an admin made it a showcase
  (then anyone may view it, chat with it and vote, but not stop, resume,
  evaluate over or delete it);
* public without login (``STUDIO_PUBLIC=1``): everything is visible to everyone
  (the page says so), and changing a run needs the browser that started it.

Admins are named by ``STUDIO_ADMINS=user1,user2`` and may do everything.
This module never imports gradio: the ui turns a request into a `Visitor`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from finetune_core.errors import StudioError

OWNER_FILE = "owner.json"


class AccessError(StudioError, PermissionError):
    """The visitor may not do this to the run; the message is for the user."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def admins() -> set[str]:
    """User names from ``STUDIO_ADMINS`` (comma separated), read from the environment at each call."""
    return {x.strip() for x in os.environ.get("STUDIO_ADMINS", "").split(",") if x.strip()}


@dataclass(frozen=True)
class Visitor:
    """The person behind a request: a signed-in user, an anonymous browser, or neither
    (a script or the local single-user app)."""

    user: str | None = None
    browser: str | None = None  # sha256 hex of the anonymous browser's secret key

    @classmethod
    def from_browser_key(cls, key: str | None, user: str | None = None) -> "Visitor":
        """A visitor from the browser's secret key (stored only as its sha256) and the signed-in user, if any."""
        digest = hashlib.sha256(key.encode()).hexdigest() if key else None
        return cls(user=user or None, browser=digest)

    @property
    def admin(self) -> bool:
        """Whether the visitor is signed in as a user named in ``STUDIO_ADMINS``."""
        return bool(self.user) and self.user in admins()

    @property
    def key(self) -> str:
        """A stable name for per-visitor limits and records."""
        if self.user:
            return f"user:{self.user}"
        return f"browser:{self.browser}" if self.browser else "local"

    def owner_record(self) -> dict:
        """What owner.json records for a run this visitor starts: the user, else the browser hash, else {}."""
        if self.user:
            return {"user": self.user}
        return {"browser": self.browser} if self.browser else {}


@dataclass(frozen=True)
class Policy:
    """The deployment's access mode, read from the environment."""

    login: bool = False  # runs are per signed-in user
    public: bool = False  # shared anonymous deployment

    @classmethod
    def from_env(cls) -> "Policy":
        """The mode the environment sets now (``STUDIO_REQUIRE_LOGIN``/``APP_AUTH`` for login, ``STUDIO_PUBLIC``)."""
        login = _flag("STUDIO_REQUIRE_LOGIN") or bool(os.environ.get("APP_AUTH"))
        return cls(login=login, public=_flag("STUDIO_PUBLIC"))

    @property
    def local(self) -> bool:
        """One person's tool (neither login nor public): nothing is checked."""
        return not (self.login or self.public)

    @property
    def shared(self) -> bool:
        """Everything is visible to everyone (a public deployment without login)."""
        return self.public and not self.login

    def notice(self) -> str:
        """What the page should say about who sees what ("" for a local app)."""
        if self.login:
            return ("Your runs, uploads and exports are yours: other visitors cannot see or change them "
                    "(showcase runs are shared read-only).")
        if self.public:
            return ("**Everything here is shared**: every visitor sees every run and its results. Only the "
                    "browser that started a run can stop, resume, re-evaluate or delete it. Do not upload "
                    "private data.")
        return ""


def read_owner(run_path: Path) -> dict:
    """The run's owner.json as a dict; {} when it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads((Path(run_path) / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_owner(run_path: Path, record: dict) -> None:
    """Write `record` as the run's owner.json (atomically: readers never see half a file)."""
    from finetune_core.runs.store import write_json_atomic

    write_json_atomic(Path(run_path) / OWNER_FILE, record)


def is_owner(record: dict, visitor: Visitor) -> bool:
    """Whether `record` (an owner.json) names this visitor: by user when both have one, else by browser."""
    if visitor.user and record.get("user"):
        return record["user"] == visitor.user
    if visitor.browser and record.get("browser"):
        return record["browser"] == visitor.browser
    return False


def can_view(run_path: Path, visitor: Visitor, policy: Policy | None = None) -> bool:
    """Whether the visitor may list and open the run: always on a local or shared deployment and for admins,
    else only its owner or, for a showcase run, anyone. `policy` None: read from the environment."""
    policy = policy or Policy.from_env()
    if policy.local or policy.shared or visitor.admin:
        return True
    record = read_owner(run_path)
    return bool(record.get("showcase")) or is_owner(record, visitor)


def can_change(run_path: Path, visitor: Visitor, policy: Policy | None = None) -> bool:
    """Stop, resume, evaluate over, delete: the owner or an admin (anyone on a local app)."""
    policy = policy or Policy.from_env()
    if policy.local or visitor.admin:
        return True
    return is_owner(read_owner(run_path), visitor)


def require_view(run_path: Path, visitor: Visitor, policy: Policy | None = None) -> None:
    """Raise AccessError unless the visitor may view the run; the message is that of a missing run."""
    if not can_view(run_path, visitor, policy):
        # the same words as a missing run: others' run ids are not confirmed to exist
        raise AccessError(f"Run {Path(run_path).name} does not exist.")


def require_change(run_path: Path, visitor: Visitor, action: str, policy: Policy | None = None) -> None:
    """Raise AccessError unless the visitor may view and change the run; `action` (e.g. "stop") goes in the message."""
    require_view(run_path, visitor, policy)
    if not can_change(run_path, visitor, policy):
        raise AccessError(f"Only the person who started run {Path(run_path).name} (or an admin) can {action} it.")


def visible_runs(visitor: Visitor, policy: Policy | None = None) -> list:
    """The runs this visitor may list, newest first."""
    from finetune_core.runs.store import list_runs

    policy = policy or Policy.from_env()
    return [run for run in list_runs() if can_view(run.path, visitor, policy)]


def set_showcase(run_path: Path, visitor: Visitor, on: bool) -> dict:
    """An admin shares a run read-only with every visitor (or stops sharing it)."""
    if not visitor.admin:
        raise AccessError("Only admins (STUDIO_ADMINS) can make a run a showcase.")
    record = {**read_owner(run_path), "showcase": bool(on)}
    write_owner(run_path, record)
    return record


__all__ = ["AccessError", "Policy", "Visitor", "admins", "can_change", "can_view", "read_owner", "require_change",
           "require_view", "set_showcase", "visible_runs", "write_owner", "OWNER_FILE"]
