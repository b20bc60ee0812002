"""Data tab, "From the Hugging Face Hub": a dataset id, its config and split, a row limit; Look up, then Load.

"Look up" fills the config and split pickers (finetune_core/data/hub.py:
``list_configs`` / ``list_splits``). "Load" streams the split's first rows (up
to the row limit) into the uploads folder under a server-made name, shows them
as they are (first rows, every column), and then the same view as an upload:
``inspect_new_copy`` with a fresh mapping, so mapping, validation, statistics
and split are the upload's own (row N in an issue is the split's row N,
counted from 1). The source dict carries ``hub_source``, which ``inspect_data``
puts in the mapping, so the run records where its data came from.

Only a Hub id reaches the server from the page (checked against 'owner/name');
a local folder standing in for the Hub (``local_root``) is an argument of the
plain functions below that the wiring never passes: tests use it, visitors
cannot. The token is the signed-in user's (HF OAuth); the server's own
``HF_TOKEN`` only where ``STUDIO_ALLOW_SERVER_TOKEN`` lends it to this visitor
(ui/export_tab.py), else none is sent (public datasets only).

    .venv/bin/python -m pytest -q tests/test_data_hub.py
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import pandas as pd

from finetune_core.data.hub import (HubRequest, default_rows, describe, fetch_to_file, list_configs,
                                    list_splits)
from finetune_core.data.mapping import DataMapping
from finetune_core.limits import limits

from .access import oauth_token, visitor
from .data_tab import DataView, inspect_new_copy, kept_choices, view_values
from .data_uploads import uploads_dir
from .errors import shows_errors
from .export_tab import server_token_lent

PREVIEW_CELL_CHARS = 200
INTRO = ("Type a dataset id (as in huggingface.co/datasets/**owner/name**), press **Look up** for its subsets and "
         "splits, then **Load**: the split's first rows are read (a large dataset is never downloaded whole) and "
         "checked like an upload. Private or gated datasets need you signed in with Hugging Face.")


def hub_token(request: gr.Request | None) -> str | bool:
    """The token for this visitor's Hub reads: their own (HF OAuth), else the server's where it is lent to
    them, else False (no token is sent: the server's is never spent on a visitor's behalf)."""
    token = oauth_token(request)
    if token:
        return token
    if server_token_lent(visitor(request)):
        return os.environ["HF_TOKEN"].strip()
    return False


def look_up(dataset_id: str, config: str | None = None, token: str | bool = False,
            local_root=None) -> tuple[list[str], str, list[str], str]:
    """(configs, the config chosen, its splits, the split chosen): the current config where the dataset has it,
    else its first; "train" where the config has it, else its first split."""
    configs = list_configs(dataset_id, token, local_root)
    chosen = config if config in configs else configs[0]
    splits = list_splits(dataset_id, chosen, token, local_root)
    return configs, chosen, splits, (splits[0] if splits else "train")


def rows_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """The first rows as read (before any mapping), numbered like the dataset's rows, cells as short text."""
    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text if len(text) <= PREVIEW_CELL_CHARS else text[:PREVIEW_CELL_CHARS] + "…"

    return pd.DataFrame([{"row": n, **{c: cell(r.get(c)) for c in columns}} for n, r in enumerate(rows, start=1)],
                        columns=["row", *columns])


def load_hub(dataset_id: str, config: str | None, split: str | None, limit: Any, token: str | bool = False,
             tokenizer=None, mapping: DataMapping | None = None, max_length: int = 512, max_file_mb: float = 100.0,
             folder: Path | None = None, token_problem: str = "", local_root=None) -> tuple[DataView, pd.DataFrame, str]:
    """Read the split's first rows into the uploads folder and inspect them as an upload (a fresh mapping
    keeping the split, seed, drop and system-prompt choices). Returns the data view, the rows as read and
    a line saying what was read."""
    got = fetch_to_file(HubRequest(dataset_id, config or "", split or "train", limit), folder or uploads_dir(),
                        token, local_root, max_file_mb)
    source = {"path": str(got.path), "name": got.name, "sample": "", "eval_path": "", "eval_name": "",
              "hub_source": got.source}
    chosen = replace(kept_choices(mapping), hub_source=got.source)
    view = inspect_new_copy(source, "path", chosen, tokenizer, max_length, max_file_mb, token_problem)
    read = f"Read {got.rows:,} rows of {describe(got.source)}; row numbers below are the split's, from 1."
    notes = "".join(f" Note: {note}." for note in got.notes)
    return view, rows_frame(got.preview, got.columns), read + notes


# -- layout and wiring -------------------------------------------------------------
@dataclass
class HubWidgets:
    """The section's widgets (built by `build_section`, wired by `wire`)."""

    dataset_id: gr.Textbox
    config: gr.Dropdown
    split: gr.Dropdown
    limit: gr.Number
    look_up: gr.Button
    load: gr.Button
    note: gr.Markdown
    preview: gr.Dataframe


def build_section() -> HubWidgets:
    """Lay out the section (a closed accordion) where the caller is."""
    with gr.Accordion("From the Hugging Face Hub", open=False, elem_id="data-hub"):
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            dataset_id = gr.Textbox(label="Dataset id", placeholder="owner/name", max_length=200, scale=4,
                                    elem_id="data-hub-id")
            look_up_btn = gr.Button("Look up", size="sm", scale=0, min_width=90, elem_id="data-hub-lookup")
        with gr.Row():
            config = gr.Dropdown([], value=None, label="Config (subset)", allow_custom_value=True,
                                 elem_id="data-hub-config")
            split = gr.Dropdown(["train"], value="train", label="Split", allow_custom_value=True,
                                elem_id="data-hub-split")
            limit = gr.Number(default_rows(), precision=0, minimum=1, maximum=limits().data_rows,
                              label="Rows (from the start)", elem_id="data-hub-limit")
        load_btn = gr.Button("Load", variant="secondary", elem_id="data-hub-load")
        note = gr.Markdown(elem_id="data-hub-note")
        preview = gr.Dataframe(label="First rows as read", interactive=False, wrap=True, max_height=300,
                               elem_id="data-hub-preview")
    return HubWidgets(dataset_id, config, split, limit, look_up_btn, load_btn, note, preview)


def wire(w: HubWidgets, inputs: set, outputs: list, max_file_mb: float, prepare: Callable[[dict], tuple]) -> None:
    """Wire the section: ``inputs``/``outputs`` are the tab's (mapping widgets in, the data view out);
    ``prepare(raw)`` gives (tokenizer, token problem, current mapping, max length) from the raw inputs."""

    @shows_errors
    def on_look_up(dataset_id: str, config: str | None, request: gr.Request):
        configs, chosen, splits, split = look_up(dataset_id, config, hub_token(request))
        return (gr.update(choices=configs, value=chosen), gr.update(choices=splits, value=split),
                f"{len(configs)} config{'s' if len(configs) != 1 else ''}; splits of **{chosen}**: "
                + ", ".join(splits))

    @shows_errors
    def on_config(dataset_id: str, config: str | None, request: gr.Request):
        if not (dataset_id or "").strip() or not config:
            return gr.skip()
        splits = list_splits(dataset_id, config, hub_token(request))
        return gr.update(choices=splits, value=splits[0] if splits else "train")

    @shows_errors
    def on_load(raw: dict, request: gr.Request):
        tokenizer, problem, mapping, max_length = prepare(raw)
        view, rows, read = load_hub(raw[w.dataset_id], raw[w.config], raw[w.split], raw[w.limit], hub_token(request),
                                    tokenizer, mapping, max_length, max_file_mb, token_problem=problem)
        return (*view_values(view), rows, read)

    w.look_up.click(on_look_up, [w.dataset_id, w.config], [w.config, w.split, w.note], api_name="data_hub_look_up")
    w.dataset_id.submit(on_look_up, [w.dataset_id, w.config], [w.config, w.split, w.note],
                        api_visibility="private")
    w.config.input(on_config, [w.dataset_id, w.config], w.split, api_visibility="private")
    w.load.click(on_load, set(inputs) | {w.dataset_id, w.config, w.split, w.limit}, [*outputs, w.preview, w.note],
                 api_name="data_hub_load")


__all__ = ["HubWidgets", "build_section", "hub_token", "load_hub", "look_up", "rows_frame", "wire"]
