"""Deployment settings: the registry, their sources (default / environment / file), secrets, the file's errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from finetune_core import deploy_settings as ds
from finetune_core.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# a name the code reads: STUDIO_ then capitals; one ending in "_" is the prefix of names made in code
# (STUDIO_LIMIT_<NAME>, STUDIO_RETENTION_<AREA>_<NAME>)
NAME = re.compile(r"\bSTUDIO_[A-Z0-9_]*")


def _row(rows, env):
    return next(r for r in rows if r["env"] == env)


def test_every_studio_variable_in_the_code_has_one_entry():
    names = {s.env for s in ds.registry()}
    assert len(names) == len(ds.registry()), "a setting is listed twice"
    found = {}
    for folder in ("finetune_core", "evaluation", "ui", "app.py"):
        target = ROOT / folder
        for path in ([target] if target.is_file() else target.rglob("*.py")):
            for name in NAME.findall(path.read_text(encoding="utf-8")):
                found.setdefault(name, path.relative_to(ROOT))
    assert "STUDIO_ADMINS" in found  # the scan works
    for name, where in sorted(found.items()):
        if name.endswith("_"):  # a prefix: some listed setting starts with it
            assert any(n.startswith(name) for n in names), f"{where} reads {name}*: no setting in the registry"
        else:
            assert name in names, f"{where} reads {name}: add it to finetune_core/deploy_settings.py"


def test_limits_and_retention_areas_are_listed():
    names = {s.env for s in ds.registry()}
    assert {"STUDIO_LIMIT_CHAT_MESSAGE_TOKENS", "STUDIO_LIMIT_DATA_ROWS", "STUDIO_RETENTION_UPLOADS_HOURS",
            "STUDIO_RETENTION_GRADIO_CACHE_MB", "STUDIO_SYNC_REPO", "STUDIO_PERSISTENT_DIR"} <= names
    groups = [s.group for s in ds.registry()]
    assert groups == sorted(groups, key=ds.GROUPS.index)  # grouped, in the tab's order


def test_sources_default_environment_file(tmp_path):
    settings = tmp_path / "studio.yaml"
    settings.write_text("STUDIO_ADMINS: [alice, bob]\nSTUDIO_PUBLIC: true\nSTUDIO_RETENTION_HOURS: 48\n")
    env = {"STUDIO_SETTINGS_FILE": str(settings), "STUDIO_PUBLIC": "0"}
    applied = ds.apply_settings_file(environ=env)
    assert applied == {"STUDIO_ADMINS": "alice,bob", "STUDIO_RETENTION_HOURS": "48"}  # the environment wins
    assert env["STUDIO_ADMINS"] == "alice,bob" and env["STUDIO_PUBLIC"] == "0"
    rows = ds.settings_in_force(env)
    assert _row(rows, "STUDIO_ADMINS")["source"] == "file"
    assert _row(rows, "STUDIO_PUBLIC") | {} == {**_row(rows, "STUDIO_PUBLIC"), "value": "0", "source": "environment"}
    assert _row(rows, "STUDIO_RETENTION_HOURS")["value"] == "48"
    default = _row(rows, "STUDIO_QUEUE_MAX")
    assert default["source"] == "default" and default["value"] == "64"
    assert _row(rows, "STUDIO_SETTINGS_FILE")["source"] == "environment"


def test_default_file_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ds.apply_settings_file(environ={}) == {}  # none: nothing happens
    (tmp_path / "studio-settings.yaml").write_text("STUDIO_MAX_UPLOAD_MB: 20\n")
    env = {}
    assert ds.apply_settings_file(environ=env) == {"STUDIO_MAX_UPLOAD_MB": "20"}
    assert _row(ds.settings_in_force(env), "STUDIO_MAX_UPLOAD_MB")["source"] == "file"


def test_secrets_show_only_whether_they_are_set(tmp_path):
    settings = tmp_path / "s.yaml"
    settings.write_text("STUDIO_SYNC_TOKEN: hf_file_secret\n")
    env = {"STUDIO_JUDGE_KEY": "sk-very-secret", "STUDIO_SETTINGS_FILE": str(settings)}
    ds.apply_settings_file(environ=env)
    rows = ds.settings_in_force(env)
    assert _row(rows, "STUDIO_JUDGE_KEY")["value"] == "set"
    assert _row(rows, "STUDIO_SYNC_TOKEN")["value"] == "set" and _row(rows, "STUDIO_SYNC_TOKEN")["source"] == "file"
    assert _row(rows, "APP_AUTH")["value"] == "not set"
    assert "sk-very-secret" not in repr(rows) and "hf_file_secret" not in repr(rows)


def test_unknown_key_names_the_key_and_its_line(tmp_path):
    settings = tmp_path / "studio-settings.yaml"
    settings.write_text("# owner's settings\nSTUDIO_PUBLIC: 1\nSTUDIO_ADMIN: alice\n")
    with pytest.raises(ConfigError, match=r"studio-settings.yaml line 3: unknown setting 'STUDIO_ADMIN'\. "
                                          r"Did you mean STUDIO_ADMINS\?"):
        ds.apply_settings_file(settings, environ={})
    settings.write_text("STUDIO_ADMINS: {a: 1}\n")
    with pytest.raises(ConfigError, match="line 1: STUDIO_ADMINS must be"):
        ds.read_settings_file(settings)
    with pytest.raises(ConfigError, match="not a file"):
        ds.apply_settings_file(environ={"STUDIO_SETTINGS_FILE": str(tmp_path / "missing.yaml")})
