"""The Settings tab: the deployment settings in force, for the owner; it reads, never writes.

A table of every setting (finetune_core/deploy_settings.py) with its value and
where it came from (default, environment, settings file), grouped, and the
hardware line: ZeroGPU or not, and what the app does with training there
(finetune_core/zerogpu.py). Secrets show only as set / not set.

Who sees it: the admins (``STUDIO_ADMINS``, signed in). On a local app (no login,
not public) the person at the page is the owner, so everyone sees it and the tab
says so. Hiding the tab is not protection (an API client can call any event), so
each handler checks the visitor itself and hands a non-admin nothing.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from finetune_core import zerogpu
from finetune_core.deploy_settings import settings_in_force
from finetune_core.runs.ownership import Policy, Visitor

from .access import visitor
from .context import AppContext, SettingsParts, Shared
from .errors import shows_errors

COLUMNS = ["Group", "Setting", "Value", "Source", "Default", "What it does"]
REFUSED = ("The Settings tab is for the owner of this deployment: sign in as one of the admins named in "
           "STUDIO_ADMINS.")


def may_see(who: Visitor, policy: Policy | None = None) -> bool:
    """Admins always; everyone on a local app (no login, not public), whose user is its owner."""
    policy = policy or Policy.from_env()
    return who.admin or policy.local


def audience(policy: Policy | None = None) -> str:
    """Who sees this tab, in words."""
    policy = policy or Policy.from_env()
    if policy.local:
        return ("Shown to whoever opens this page: this is a local app (no login, not public), so its user is "
                "its owner. On a shared deployment, turn login on and name the admins (STUDIO_ADMINS): "
                "then only they see it.")
    return "Shown only to the admins named in STUDIO_ADMINS."


def settings_frame(environ=None) -> pd.DataFrame:
    """Every setting in force as a table, in group order."""
    rows = [[r["group"], r["env"], r["value"], r["source"], r["default"], r["help"]]
            for r in settings_in_force(environ)]
    return pd.DataFrame(rows, columns=COLUMNS)


def header() -> str:
    """The hardware line, where the settings come from, and who sees the tab."""
    return (f"**Hardware:** {zerogpu.training_summary()}\n\n"
            "Values come from the environment (Space secrets and variables), else the settings file "
            "(STUDIO_SETTINGS_FILE, else ./studio-settings.yaml), else the default. Secrets show only as set "
            "or not set. Change them in the Space's settings and restart: this page only reads.\n\n"
            f"{audience()}")


@shows_errors
def show_settings(request: gr.Request = None):
    """Refresh button: the header and the table, for a visitor allowed to see them; raises gr.Error otherwise."""
    if not may_see(visitor(request)):
        raise gr.Error(REFUSED)
    return header(), settings_frame()


@shows_errors
def on_load(request: gr.Request = None):
    """Each page load: the tab shown (and filled) for an admin, hidden and empty for anyone else."""
    if not may_see(visitor(request)):
        return gr.Tab(visible=False), "", pd.DataFrame(columns=COLUMNS)
    return gr.Tab(visible=True), header(), settings_frame()


def build(ctx: AppContext, shared: Shared) -> SettingsParts:
    """The Settings tab (hidden until a page load shows it to an admin), inside the app's gr.Tabs."""
    with gr.Tab("Settings", id="settings", visible=False) as tab:
        intro = gr.Markdown("")
        table = gr.Dataframe(value=pd.DataFrame(columns=COLUMNS), headers=COLUMNS, interactive=False, wrap=True,
                             elem_id="settings-table")
        refresh = gr.Button("Refresh", size="sm")
    private = {"api_visibility": "private", "queue": False}
    shared.blocks.load(on_load, None, [tab, intro, table], **private)
    refresh.click(show_settings, None, [intro, table], **private)
    return SettingsParts(tab=tab, intro=intro, table=table)
