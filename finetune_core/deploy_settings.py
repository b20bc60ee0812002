"""The deployment settings: every STUDIO_* environment variable the app reads, listed once.

Each `Setting` has its environment variable, group (login & access, public mode,
models, limits, retention, storage, sync, judge, hardware...), default and a line
of help. The environment stays the one place the code reads: an optional
settings file only fills the variables the environment leaves unset.

The file is ``STUDIO_SETTINGS_FILE``, else ``./studio-settings.yaml`` when it
exists; keys are the variable names, values scalars (a list is joined with commas):

    STUDIO_ADMINS: [alice, bob]
    STUDIO_REQUIRE_LOGIN: true
    STUDIO_RETENTION_HOURS: 48

`apply_settings_file()` (called once by app.py's main, before anything reads a
setting) puts them into ``os.environ`` with setdefault and remembers which came
from the file; `settings_in_force()` then gives each setting's value and source
("default", "environment", "file"). Secrets show as "set" / "not set".

    python -c "from finetune_core.deploy_settings import settings_in_force as s; print(*s(), sep='\\n')"
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from finetune_core.config import ConfigError, read_config_yaml
from finetune_core.limits import Limits

FILE_ENV = "STUDIO_SETTINGS_FILE"
DEFAULT_FILE = "studio-settings.yaml"
# which variables came from the file: kept in the environment like the settings themselves (a process
# launched for training inherits it); the name does not start with STUDIO_ as it is not a setting
FROM_FILE_ENV = "FINETUNE_STUDIO_FROM_FILE"
GROUPS = ("Login & access", "Public mode", "Models", "Limits", "Retention", "Storage", "Sync", "Judge",
          "Evaluation", "Hardware", "Server")


@dataclass(frozen=True)
class Setting:
    """One deployment setting: its environment variable, group, default (as text) and help; a secret's
    value is never shown."""

    env: str
    group: str
    default: str
    help: str
    secret: bool = False


BASE = (
    Setting("STUDIO_REQUIRE_LOGIN", "Login & access", "off", "1: training, evaluation and export need a signed-in "
            "user (HF OAuth or APP_AUTH); runs are per user."),
    Setting("APP_AUTH", "Login & access", "none", "Password login: user:pass[,user2:pass2], or a file of such lines.",
            secret=True),
    Setting("STUDIO_ADMINS", "Login & access", "none", "Signed-in users (comma separated) who may do everything and "
            "see this tab."),
    Setting("STUDIO_PUBLIC", "Public mode", "off", "1: a shared public deployment: catalogue models only, a size "
            "ceiling, no local folders, every run visible to everyone."),
    Setting("STUDIO_QUEUE_MAX", "Public mode", "64", "Requests that may wait in Gradio's queue."),
    Setting("STUDIO_DEFAULT_MODEL", "Models", "bundled", "The model the Train tab and Chat start from."),
    Setting("STUDIO_MODEL_ALLOWLIST", "Models", "any id (public: the catalogue)", "Hub model ids (comma separated) "
            "that may be loaded."),
    Setting("STUDIO_MAX_PARAMS_B", "Models", "none (public: 4)", "Largest model, in billions of parameters."),
    Setting("STUDIO_SPEEDUPS", "Models", "auto", "off: train and generate on the libraries' own code paths only."),
    Setting("STUDIO_ALLOW_SERVER_TOKEN", "Models", "off", "1: visitors may push to the Hub with the server's "
            "HF_TOKEN."),
    Setting("STUDIO_MAX_UPLOAD_MB", "Limits", "100", "Largest uploaded file, in MB."),
    Setting("STUDIO_RETENTION_HOURS", "Retention", "24", "Age after which uploads, exports and Gradio's cache are "
            "removed (0: no age limit)."),
    Setting("STUDIO_RETENTION_MB", "Retention", "5000", "Size cap of each of those folders, in MB (0: no cap)."),
    Setting("STUDIO_RETENTION_GRACE_MINUTES", "Retention", "10", "Nothing younger is ever removed."),
    Setting("STUDIO_SWEEP_MINUTES", "Retention", "10", "Time between sweeps (0: never)."),
    Setting("STUDIO_RUNS_DIR", "Storage", "./runs", "Where runs live (on a Space: under /data to survive a "
            "rebuild)."),
    Setting("STUDIO_PERSISTENT_DIR", "Storage", "/data when present", "The Space's persistent storage, where "
            "runs are kept across rebuilds."),
    Setting("STUDIO_UPLOADS_DIR", "Storage", "./uploads", "Copies of uploaded data files."),
    Setting("STUDIO_EXPORTS_DIR", "Storage", "Gradio's cache/studio-exports", "The only folder files are served "
            "from."),
    Setting("STUDIO_MODEL_CACHE", "Storage", "~/.cache/finetune-studio/models", "Converted models."),
    Setting("STUDIO_BENCHMARK_DIR", "Storage", "../shared/datasets when present", "Local copies of the benchmark "
            "data sets."),
    Setting("STUDIO_SETTINGS_FILE", "Storage", f"./{DEFAULT_FILE} when present", "This settings file."),
    Setting("STUDIO_SYNC_REPO", "Sync", "none", "Hub repo that finished runs are copied to, and restored from on "
            "start."),
    Setting("STUDIO_SYNC_TOKEN", "Sync", "HF_TOKEN", "Token that writes to the sync repo.", secret=True),
    Setting("STUDIO_SYNC_REPO_TYPE", "Sync", "dataset", "The sync repo's type: dataset or model."),
    Setting("STUDIO_SYNC_MINUTES", "Sync", "5", "Time between syncs of finished runs (0: only once, on start)."),
    Setting("STUDIO_SYNC_PUBLIC", "Sync", "off", "1: allow a public sync repo (runs hold visitors' data)."),
    Setting("STUDIO_JUDGE_URL", "Judge", "none", "OpenAI-compatible endpoint of the LLM judge."),
    Setting("STUDIO_JUDGE_KEY", "Judge", "none", "The judge endpoint's API key.", secret=True),
    Setting("STUDIO_JUDGE_MODEL", "Judge", "gpt-4o-mini", "The judge endpoint's model name."),
    Setting("STUDIO_HUB_METRICS", "Evaluation", "off", "1: metrics may be fetched from the Hub and run here "
            "(never on a public deployment)."),
    Setting("STUDIO_ZEROGPU_CALL_S", "Hardware", "60", "On ZeroGPU: seconds one training call holds the GPU."),
)

LIMIT_HELP = {
    "chat_message_tokens": "Tokens in one chat message.", "system_prompt_tokens": "Tokens in the chat's system "
    "prompt.", "max_new_tokens": "Tokens in one generated answer.", "chats_per_user": "Chat generations one user "
    "may have running or queued.", "chat_context_tokens": "Tokens of one chat turn's prompt (oldest turns dropped).",
    "data_rows": "Rows in a data file.", "data_columns": "Columns in a data file.", "data_bytes": "Bytes of a data "
    "file once decoded.", "json_depth": "Nesting of JSON in one row or file.", "cell_chars": "Characters in one "
    "cell.", "template_chars": "Characters of a prompt/completion template.", "template_placeholders": "{column} "
    "placeholders in one template.", "duplicates_listed": "Duplicate groups shown in a data report.",
    "run_yaml_bytes": "Bytes of a config file (run.yaml, this settings file).",
    "queued_runs_per_user": "Runs one visitor may have waiting in the run queue.",
}
RETENTION_AREAS = ("UPLOADS", "EXPORTS", "GRADIO_CACHE")


def registry() -> list[Setting]:
    """Every setting, grouped in `GROUPS` order: the fixed ones, one per limit (``STUDIO_LIMIT_<NAME>``)
    and the per-folder retention overrides."""
    limits = Limits()
    items = list(BASE)
    items += [Setting(limits.setting(f.name), "Limits", f"{getattr(limits, f.name):,}",
                      LIMIT_HELP.get(f.name, f.name.replace("_", " ").capitalize() + ".")) for f in fields(Limits)]
    for area in RETENTION_AREAS:
        words = area.lower().replace("_", " ")
        items += [Setting(f"STUDIO_RETENTION_{area}_HOURS", "Retention", "STUDIO_RETENTION_HOURS",
                          f"Max age of {words}, overriding the general one."),
                  Setting(f"STUDIO_RETENTION_{area}_MB", "Retention", "STUDIO_RETENTION_MB",
                          f"Size cap of {words}, overriding the general one.")]
    return sorted(items, key=lambda s: GROUPS.index(s.group))


def by_name() -> dict[str, Setting]:
    """The registry by environment variable."""
    return {s.env: s for s in registry()}


def settings_file(environ=None) -> Path | None:
    """The settings file in force: ``STUDIO_SETTINGS_FILE`` (ConfigError when it is missing), else
    ./studio-settings.yaml when present, else None."""
    env = environ if environ is not None else os.environ
    named = env.get(FILE_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{FILE_ENV} names {path}, which is not a file.")
        return path
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*['\"]?{re.escape(key)}['\"]?\s*:", line):
            return number
    return None


def _as_text(key: str, value, where: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)
    raise ConfigError(f"{where}: {key} must be a text, a number, true/false or a list of them.")


def read_settings_file(path: str | os.PathLike) -> dict[str, str]:
    """The file's settings as environment values; ConfigError names an unknown key and its line."""
    path = Path(path)
    loaded = read_config_yaml(path, what="settings file")
    text = path.read_text(encoding="utf-8")
    known = by_name()
    values = {}
    for key, value in loaded.items():
        line = _line_of(text, str(key))
        where = f"{path.name} line {line}" if line else path.name
        if key == FILE_ENV:
            raise ConfigError(f"{where}: {FILE_ENV} names this file: set it in the environment, not in the file.")
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" Did you mean {close[0]}?" if close else " The Settings tab lists every setting."
            raise ConfigError(f"{where}: unknown setting {key!r}.{hint}")
        if value is not None:
            values[key] = _as_text(key, value, where)
    return values


def apply_settings_file(path: str | os.PathLike | None = None, environ=None) -> dict[str, str]:
    """Put the settings file's values into the environment where it does not set them already (so every
    reader of os.environ sees them), remember which, and return those. No file: nothing happens."""
    env = environ if environ is not None else os.environ
    path = Path(path) if path else settings_file(env)
    if path is None:
        return {}
    applied = {k: v for k, v in read_settings_file(path).items() if k not in env}
    for key, value in applied.items():
        env.setdefault(key, value)
    env[FROM_FILE_ENV] = ",".join(sorted(applied))
    return applied


def shown_value(setting: Setting, raw: str | None) -> str:
    """What the Settings tab shows: a secret as set / not set, an unset value as its default."""
    if setting.secret:
        return "set" if raw else "not set"
    return raw if raw is not None else setting.default


def settings_in_force(environ=None) -> list[dict]:
    """Each setting with its value in force and source ("default", "environment", "file"), grouped."""
    env = environ if environ is not None else os.environ
    from_file = set(filter(None, env.get(FROM_FILE_ENV, "").split(",")))
    rows = []
    for setting in registry():
        raw = env.get(setting.env)
        raw = raw if raw is None or raw.strip() else None  # an empty variable counts as unset, as readers do
        source = "default" if raw is None else ("file" if setting.env in from_file else "environment")
        rows.append({"group": setting.group, "env": setting.env, "value": shown_value(setting, raw),
                     "source": source, "default": setting.default, "help": setting.help, "secret": setting.secret})
    return rows
