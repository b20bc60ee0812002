"""The Settings tab: an admin sees every setting with its source; anyone else gets nothing, whatever they call."""
from __future__ import annotations

import gradio as gr
import pytest

from ui import settings_tab
from ui_support import shared_for


def user(name: str) -> gr.Request:
    return gr.Request(username=name, session_hash=f"s-{name}", cookies={})


@pytest.fixture()
def login(monkeypatch):
    monkeypatch.setenv("STUDIO_REQUIRE_LOGIN", "1")
    monkeypatch.setenv("STUDIO_ADMINS", "alice")
    monkeypatch.setenv("STUDIO_JUDGE_KEY", "sk-owner-key")
    monkeypatch.delenv("STUDIO_PUBLIC", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)


def test_admin_sees_every_setting_with_its_source(login):
    tab, intro, table = settings_tab.on_load(user("alice"))
    assert tab.visible is True
    assert "Hardware:** No ZeroGPU" in intro and "only to the admins" in intro
    rows = {r["Setting"]: r for r in table.to_dict("records")}
    assert rows["STUDIO_ADMINS"]["Value"] == "alice" and rows["STUDIO_ADMINS"]["Source"] == "environment"
    assert rows["STUDIO_QUEUE_MAX"]["Source"] == "default"
    assert rows["STUDIO_JUDGE_KEY"]["Value"] == "set" and "sk-owner-key" not in table.to_string()
    assert list(table["Group"].drop_duplicates())[:2] == ["Login & access", "Public mode"]
    header, again = settings_tab.show_settings(user("alice"))
    assert again.equals(table)


def test_others_get_a_hidden_empty_tab_and_a_refusal(login, monkeypatch):
    for request in (user("bob"), gr.Request(session_hash="anon", cookies={}), None):
        tab, intro, table = settings_tab.on_load(request)
        assert tab.visible is False and intro == "" and table.empty
        with pytest.raises(gr.Error, match="for the owner"):
            settings_tab.show_settings(request)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")  # a public app without login: nobody is known to be the owner
    monkeypatch.delenv("STUDIO_REQUIRE_LOGIN")
    assert settings_tab.on_load(gr.Request(session_hash="anon", cookies={}))[0].visible is False


def test_local_app_shows_it_and_says_why(monkeypatch):
    for name in ("STUDIO_REQUIRE_LOGIN", "STUDIO_PUBLIC", "APP_AUTH", "STUDIO_ADMINS"):
        monkeypatch.delenv(name, raising=False)
    tab, intro, _table = settings_tab.on_load(None)
    assert tab.visible is True and "local app" in intro


def test_zerogpu_line(monkeypatch, login):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    _tab, intro, _table = settings_tab.on_load(user("alice"))
    assert "ZeroGPU" in intro and "QLoRA: refused" in intro


def test_tab_is_built_hidden_and_filled_on_load(login):
    with gr.Blocks() as demo:
        shared = shared_for(demo)
        with shared.tabs:
            parts = settings_tab.build(None, shared)
    assert parts.tab.visible is False
    handlers = {fn.fn.__name__ for fn in demo.fns.values()}
    assert {"on_load", "show_settings"} <= handlers
