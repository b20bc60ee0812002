"""Data tab: pick a sample or upload a file, map its columns, see what the model will learn.

A file goes in once (a sample click, or an upload copied into the server's
uploads folder under a generated name) and comes back as one view: detected
format and counts, every issue with its row number, label counts, token-length
histograms, duplicates and train/held-out leakage, a preview of normalised
rows and one example rendered through the chat template with the trained
(completion) tokens told apart from the masked prompt tokens.

When the file is usable the view also sets ``ctx.data_state`` (the dict of
RunConfig data fields the Train tab reads); otherwise ``data_state`` is None
and the status line says what to fix. The handlers below are plain functions
(tests call them); ``build`` only lays out widgets and wires them.

    .venv/bin/python -m pytest -q tests/test_ui_data.py
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

from finetune_core.data.checks import find_duplicates, find_leakage
from finetune_core.data.stats import ensure_chat_template, token_stats
from finetune_core.data.dataset import FORMATS, DataOptions, DataReport, prepare_data, split_rows
from finetune_core.models.sources import ModelError, load_tokenizer
from finetune_core.data.samples import SAMPLES

from .context import DATA_EXTENSIONS, AppContext
from .data_uploads import display_name, save_upload, uploads_dir  # noqa: F401 (part of this tab's API)
from .data_views import (ISSUE_COLUMNS, LABEL_COLUMNS, MASKED, PREVIEW_ROWS, SPLIT_SEED, TRAINED,  # noqa: F401
                         example_spans, issues_frame,
                         labels_frame, length_figure, md_text, preview_frame, status_text, summary_text)
from .errors import page_error, shows_errors

EXAMPLE_COLOURS = {TRAINED: "#16a34a", MASKED: "#d1d5db"}
FORMAT_CHOICES = [("auto-detect", "auto")] + [(f.replace("_", " / ", 1) if f == "prompt_completion" else f, f)
                                              for f in FORMATS]
NO_COLUMN = ("(none)", "")
EMPTY_STATUS = "No dataset chosen yet: load a sample or upload a file."


# -- tokenizers ---------------------------------------------------------------------
class TokenizerCache:
    """Tokenizers for token statistics, by model source: one per app (made in ``build``),
    shared read-only between users; a lock so two clicks do not load the same one twice."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str, progress: Callable[[str], None] | None = None):
        with self._lock:
            if source in self._items:
                self._items.move_to_end(source)
                return self._items[source]
            tok = load_tokenizer(source, progress)
            ensure_chat_template(tok)  # mutate once here, before other threads can see it
            self._items[source] = tok
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return tok


def stats_tokenizer(cache: TokenizerCache, source: str | None, default: str,
                    progress: Callable[[str], None] | None = None) -> tuple[Any, str]:
    """(tokenizer or None, problem text). A bad model choice only costs the token
    statistics: the rest of the data view does not depend on it."""
    source = (source or "").strip() or default
    try:
        return cache.get(source, progress), ""
    except ModelError as exc:
        return None, str(exc)


# -- what the user chose ------------------------------------------------------------
@dataclass
class Mapping:
    """The mapping controls' values (classification: prompt = text column, completion = label column)."""

    format: str = "auto"
    prompt_column: str = ""
    completion_column: str = ""
    prompt_template: str = ""
    completion_template: str = ""
    system_prompt: str = ""
    held_out_pct: float = 10.0
    drop_bad_rows: bool = True

    @property
    def eval_fraction(self) -> float:
        return round(max(0.0, min(50.0, float(self.held_out_pct or 0))) / 100, 4)

    def options(self, path: str, max_file_mb: float) -> DataOptions:
        return DataOptions(
            path=path, format=self.format or "auto", prompt_column=self.prompt_column or "",
            completion_column=self.completion_column or "", prompt_template=self.prompt_template or "",
            completion_template=self.completion_template or "", system_prompt=self.system_prompt or "",
            max_file_mb=max_file_mb, drop_bad_rows=bool(self.drop_bad_rows),
        )


def sample_source(name: str, mapping: Mapping | None = None) -> tuple[dict, Mapping]:
    """The source dict and mapping for a sample (keeps the user's split and drop choices)."""
    if name not in SAMPLES:
        raise gr.Error(f"Unknown sample {name!r}; choose one of: {', '.join(SAMPLES)}.")
    entry = SAMPLES[name]
    base = mapping or Mapping()
    chosen = Mapping(
        format=entry.get("format", "auto"), prompt_column=entry.get("prompt_column", ""),
        completion_column=entry.get("completion_column", ""), prompt_template=entry.get("prompt_template", ""),
        completion_template=entry.get("completion_template", ""), system_prompt=entry.get("system_prompt", ""),
        held_out_pct=base.held_out_pct, drop_bad_rows=base.drop_bad_rows,
    )
    source = {"path": entry["path"], "name": name, "sample": name, "eval_path": "", "eval_name": ""}
    return source, chosen


def upload_source(file_path: str | None, max_mb: float, folder: Path | None = None) -> dict:
    """Copy the upload into the uploads folder; the source dict names the copy."""
    dest = save_upload(file_path, max_mb, folder)
    return {"path": str(dest), "name": display_name(Path(file_path).name), "sample": "", "eval_path": "",
            "eval_name": ""}


def with_eval_file(source: dict | None, file_path: str | None, max_mb: float, folder: Path | None = None) -> dict:
    """The source with a separate evaluation file attached (copied like any upload), or detached when None."""
    if not source:
        raise gr.Error("Load a training file (sample or upload) before adding an evaluation file.")
    if not file_path:
        return {**source, "eval_path": "", "eval_name": ""}
    dest = save_upload(file_path, max_mb, folder)
    return {**source, "eval_path": str(dest), "eval_name": display_name(Path(file_path).name)}


# -- the view ---------------------------------------------------------------------
@dataclass
class DataView:
    """Everything the tab shows for one file and mapping."""

    data_state: dict | None
    source: dict | None
    mapping: Mapping
    status: str
    summary: str = ""
    issues: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ISSUE_COLUMNS))
    labels: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LABEL_COLUMNS))
    lengths: Figure | None = None
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)
    example: list[tuple[str, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    tokens: dict | None = None
    description: str = ""
    unreadable: tuple[str, ...] = ()  # source keys ("path", "eval_path") of files that could not be read at all


def state_for(report: DataReport, source: dict, mapping: Mapping) -> dict:
    """The dict the Train tab reads (RunConfig data fields + name and rows).

    ``data_format`` is the resolved format, not "auto": the run re-reads the file
    exactly as it was inspected here.
    """
    return {
        "data_path": source["path"], "data_format": report.format,
        "prompt_column": mapping.prompt_column or "", "completion_column": mapping.completion_column or "",
        "prompt_template": mapping.prompt_template or "", "completion_template": mapping.completion_template or "",
        "system_prompt": mapping.system_prompt or "", "eval_fraction": mapping.eval_fraction,
        "eval_path": source.get("eval_path", "") or "", "drop_bad_rows": bool(mapping.drop_bad_rows),
        "name": source.get("name", "") or "data", "rows": len(report.rows),
    }


def inspect_data(source: dict | None, mapping: Mapping, tokenizer=None, max_length: int = 512,
                 max_file_mb: float = 100.0, token_problem: str = "") -> DataView:
    """Read, validate and describe ``source`` with ``mapping``; never raises on bad content."""
    if not source or not source.get("path"):
        return DataView(None, source, mapping, EMPTY_STATUS)
    max_length = int(max_length or 512)
    report = prepare_data(mapping.options(source["path"], max_file_mb))
    eval_report = None
    if source.get("eval_path"):
        eval_report = prepare_data(mapping.options(source["eval_path"], max_file_mb))
        train, held = report.rows, eval_report.rows
    else:
        train, held = split_rows(report.rows, mapping.eval_fraction, SPLIT_SEED)
    duplicates = find_duplicates(report.rows, report.row_numbers)
    leakage = find_leakage(train, held)
    tokens = token_stats(report.rows, tokenizer, max_length) if tokenizer is not None and report.rows else None
    usable = report.usable and (eval_report is None or eval_report.usable)
    view = DataView(
        data_state=state_for(report, source, mapping) if usable else None,
        source=source, mapping=mapping, status=status_text(report, eval_report, source),
        summary=summary_text(report, source, mapping, eval_report, (len(train), len(held)), duplicates, leakage,
                             tokens, token_problem),
        issues=issues_frame(report.issues, eval_report.issues if eval_report else None),
        labels=labels_frame(report.labels), lengths=length_figure(tokens) if tokens else None,
        preview=preview_frame(report.rows, report.row_numbers), columns=list(report.columns), tokens=tokens,
        description=SAMPLES.get(source.get("sample") or "", {}).get("description", ""),
        unreadable=tuple(key for key, r in (("path", report), ("eval_path", eval_report)) if r and r.unreadable),
    )
    if tokenizer is not None and report.rows:
        view.example = example_spans(report.rows[0], tokenizer, max_length)
    return view


def load_sample(name: str, tokenizer=None, mapping: Mapping | None = None, max_length: int = 512,
                max_file_mb: float = 100.0, token_problem: str = "") -> DataView:
    """One click: a sample with its own mapping."""
    source, chosen = sample_source(name, mapping)
    return inspect_data(source, chosen, tokenizer, max_length, max_file_mb, token_problem)


def load_upload(file_path: str | None, tokenizer=None, mapping: Mapping | None = None, max_length: int = 512,
                max_file_mb: float = 100.0, folder: Path | None = None, token_problem: str = "") -> DataView:
    """A new upload: copied into the uploads folder and inspected with a fresh mapping
    (auto-detect; the split, drop and system-prompt choices are kept)."""
    source = upload_source(file_path, max_file_mb, folder)
    base = mapping or Mapping()
    fresh = Mapping(system_prompt=base.system_prompt, held_out_pct=base.held_out_pct, drop_bad_rows=base.drop_bad_rows)
    return inspect_new_copy(source, "path", fresh, tokenizer, max_length, max_file_mb, token_problem)


def load_eval_upload(source: dict | None, file_path: str | None, tokenizer=None, mapping: Mapping | None = None,
                     max_length: int = 512, max_file_mb: float = 100.0, folder: Path | None = None,
                     token_problem: str = "") -> DataView:
    """A separate evaluation file attached (detached when ``file_path`` is None) and the view redone."""
    source = with_eval_file(source, file_path, max_file_mb, folder)
    if not file_path:
        return inspect_data(source, mapping or Mapping(), tokenizer, max_length, max_file_mb, token_problem)
    return inspect_new_copy(source, "eval_path", mapping or Mapping(), tokenizer, max_length, max_file_mb,
                            token_problem)


def inspect_new_copy(source: dict, key: str, mapping: Mapping, tokenizer, max_length: int, max_file_mb: float,
                     token_problem: str) -> DataView:
    """``inspect_data`` for a source whose ``key`` file was just copied into the uploads
    folder. A copy that cannot be read at all (or whose inspection fails) is deleted
    again and dropped from the source: nobody can use it, and a refused upload must
    not take disk space."""
    copy = Path(source[key])
    try:
        view = inspect_data(source, mapping, tokenizer, max_length, max_file_mb, token_problem)
    except Exception as exc:  # noqa: BLE001 - a bug must still remove the copy; page_error logs it
        copy.unlink(missing_ok=True)
        error = page_error(exc, "inspecting an uploaded file")
        if error is exc:
            raise
        raise error from None
    if key in view.unreadable:
        copy.unlink(missing_ok=True)
        view.source = None if key == "path" else {**source, "eval_path": "", "eval_name": ""}
    return view


def preview_widths(frame: pd.DataFrame) -> list[str]:
    """Narrow row and label columns, so the prompt and the completion share the width."""
    narrow = {"row": 6, "label": 14, "system": 16}
    fixed = sum(narrow.get(c, 0) for c in frame.columns)
    wide = [c for c in frame.columns if c not in narrow]
    return [f"{narrow.get(c, (100 - fixed) // max(1, len(wide)))}%" for c in frame.columns]


def _column_update(columns: list[str], value: str):
    choices = [NO_COLUMN] + [(c, c) for c in columns]
    return gr.update(choices=choices, value=value if value in columns else "")


def view_values(view: DataView) -> tuple:
    """The view in the order of the tab's output components (see ``build``: ``data_outputs``)."""
    m = view.mapping
    has_labels = not view.labels.empty
    description = f"**{md_text((view.source or {}).get('name', ''))}** — {view.description}" if view.description else ""
    return (
        view.data_state, view.source, view.status, view.summary, view.issues,
        # y from 0: with equal counts the plot's own domain would collapse and hide the bars.
        gr.update(value=view.labels, visible=has_labels, y_lim=[0, max(view.labels["count"], default=1)]), view.lengths,
        gr.update(value=view.preview, column_widths=preview_widths(view.preview)), view.example, description,
        m.format, _column_update(view.columns, m.prompt_column), _column_update(view.columns, m.completion_column),
        m.prompt_template, m.completion_template, m.system_prompt, m.drop_bad_rows,
    )


# -- layout and wiring -------------------------------------------------------------
MAPPING_FIELDS = ("format", "prompt_column", "completion_column", "prompt_template", "completion_template",
                  "system_prompt", "held_out_pct", "drop_bad_rows")


def build(ctx: AppContext) -> None:
    settings = ctx.settings
    tokenizers = TokenizerCache()  # per app, read-only for users (like ctx.models)
    file_state = gr.State(None)  # per browser: {"path", "name", "sample", "eval_path", "eval_name"}
    gr.Markdown("Start from a sample or upload your own examples (" + ", ".join(DATA_EXTENSIONS)
                + f", up to {settings.max_upload_mb:g} MB). Nothing trains here: this tab checks the file "
                "and shows what the model will learn from it.")
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("**Samples** (one click)")
            sample_buttons = {name: gr.Button(name, size="sm", elem_id=f"sample-{i}")
                              for i, name in enumerate(SAMPLES)}
            sample_info = gr.Markdown(elem_id="sample-description")
            upload = gr.File(label="Upload a training file", file_types=DATA_EXTENSIONS, type="filepath",
                             height=110, elem_id="data-upload")
            with gr.Accordion("Mapping and split", open=True):
                mapping = {
                    "format": gr.Dropdown(FORMAT_CHOICES, value="auto", label="Format", elem_id="data-format"),
                    "prompt_column": gr.Dropdown([NO_COLUMN], value="", label="Prompt column (text, for classification)",
                                                 elem_id="data-prompt-column"),
                    "completion_column": gr.Dropdown([NO_COLUMN], value="", label="Completion column (label, for classification)",
                                                     elem_id="data-completion-column"),
                    "prompt_template": gr.Textbox(label="Prompt template", lines=2, placeholder="Summarize this dialog:\n{dialogue}",
                                                  info="{column} placeholders; overrides the prompt column."),
                    "completion_template": gr.Textbox(label="Completion template", placeholder="{summary}"),
                    "system_prompt": gr.Textbox(label="System prompt (optional)", lines=1),
                    "held_out_pct": gr.Slider(0, 50, value=10, step=1, label="Held-out %",
                                              info="Rows kept aside for evaluation (stratified by label)."),
                    "drop_bad_rows": gr.Checkbox(True, label="Drop bad rows",
                                                 info="Train on the good rows; off = refuse a file with any bad row."),
                }
                eval_upload = gr.File(label="Separate evaluation file (optional, replaces the held-out %)",
                                      file_types=DATA_EXTENSIONS, type="filepath", height=90, elem_id="data-eval-upload")
            with gr.Accordion("Token statistics", open=False):
                tok_source = gr.Textbox(settings.default_model, label="Tokenizer/model for stats",
                                        info="'bundled', a Hub id or a model folder; the Train tab's model may differ.")
                max_length = gr.Number(512, precision=0, minimum=16, maximum=131072, label="Max length (tokens)")
            apply_btn = gr.Button("Apply mapping", variant="primary", elem_id="data-apply")
        with gr.Column(scale=3):
            status = gr.Markdown(EMPTY_STATUS, elem_id="data-status")
            next_btn = gr.Button("Next: the Train tab →", size="sm")
            summary = gr.Markdown(elem_id="data-summary")
            lengths = gr.Plot(label="Token lengths", show_label=False, elem_id="data-lengths")
            labels = gr.BarPlot(labels_frame(None), x="label", y="count", title="Labels", height=220,
                                visible=False, elem_id="data-labels")
            issues = gr.Dataframe(pd.DataFrame(columns=ISSUE_COLUMNS), label="Issues", interactive=False, wrap=True,
                                  column_widths=["12%", "18%", "70%"],
                                  max_height=300, elem_id="data-issues")
            example = gr.HighlightedText(label="One example as the model sees it (green = trained, grey = masked)",
                                         color_map=EXAMPLE_COLOURS, show_legend=True, combine_adjacent=True,
                                         elem_id="data-example")
            preview = gr.Dataframe(label=f"Preview (first {PREVIEW_ROWS} normalised rows)", interactive=False,
                                   wrap=True, max_height=400, elem_id="data-preview")
    outputs = [ctx.data_state, file_state, status, summary, issues, labels, lengths, preview, example, sample_info,
               mapping["format"], mapping["prompt_column"], mapping["completion_column"], mapping["prompt_template"],
               mapping["completion_template"], mapping["system_prompt"], mapping["drop_bad_rows"]]
    stats_inputs = {tok_source, max_length}

    def current(raw: dict) -> Mapping:
        return Mapping(**{name: raw[comp] for name, comp in mapping.items() if comp in raw})

    def tokenizer_for(source: str | None):
        tok, problem = stats_tokenizer(tokenizers, source, settings.default_model, gr.Info)
        if problem:
            gr.Warning(f"Token statistics skipped: {problem}")
        return tok, problem

    def load_sample_values(name: str, tokenizer_source: str | None = None, max_len: int = 512,
                           held_out_pct: float = 10, drop_bad_rows: bool = True) -> tuple:
        """For the guided demo: load a sample by name; values in the order of ``data_outputs``."""
        tok, problem = tokenizer_for(tokenizer_source)
        view = load_sample(name, tok, Mapping(held_out_pct=held_out_pct, drop_bad_rows=drop_bad_rows), max_len,
                           settings.max_upload_mb, problem)
        return view_values(view)

    def sample_handler(name: str):
        @shows_errors
        def on_sample(raw: dict):
            return load_sample_values(name, raw[tok_source], raw[max_length], raw[mapping["held_out_pct"]],
                                      raw[mapping["drop_bad_rows"]])
        return on_sample

    @shows_errors
    def on_upload(raw: dict):
        tok, problem = tokenizer_for(raw[tok_source])
        return view_values(load_upload(raw[upload], tok, current(raw), raw[max_length], settings.max_upload_mb,
                                       token_problem=problem))

    @shows_errors
    def on_upload_clear():
        return view_values(DataView(None, None, Mapping(), EMPTY_STATUS))

    @shows_errors
    def on_eval_file(raw: dict):
        if not raw[file_state] and not raw[eval_upload]:  # cleared before any training file: nothing to redo
            return tuple(gr.skip() for _ in outputs)
        tok, problem = tokenizer_for(raw[tok_source])
        return view_values(load_eval_upload(raw[file_state], raw[eval_upload], tok, current(raw), raw[max_length],
                                            settings.max_upload_mb, token_problem=problem))

    @shows_errors
    def on_apply(raw: dict):
        if not raw[file_state]:
            raise gr.Error("Load a sample or upload a file first.")
        tok, problem = tokenizer_for(raw[tok_source])
        return view_values(inspect_data(raw[file_state], current(raw), tok, raw[max_length], settings.max_upload_mb,
                                        problem))

    @shows_errors
    def on_next():
        return gr.Tabs(selected="train")

    mapping_inputs = set(mapping.values()) | stats_inputs
    for i, (name, btn) in enumerate(sample_buttons.items()):
        btn.click(sample_handler(name), stats_inputs | {mapping["held_out_pct"], mapping["drop_bad_rows"]}, outputs,
                  api_name=f"data_sample_{i}")
    upload.upload(on_upload, mapping_inputs | {upload}, outputs, api_name="data_upload")
    upload.clear(on_upload_clear, None, outputs, api_visibility="private")
    eval_upload.upload(on_eval_file, mapping_inputs | {file_state, eval_upload}, outputs, api_name="data_eval_upload")
    eval_upload.clear(on_eval_file, mapping_inputs | {file_state, eval_upload}, outputs, api_visibility="private")
    apply_btn.click(on_apply, mapping_inputs | {file_state}, outputs, api_name="data_apply")
    if ctx.components.get("tabs") is not None:
        next_btn.click(on_next, None, ctx.components["tabs"], api_visibility="private")
    ctx.components["data_load_sample"] = load_sample_values
    ctx.components["data_outputs"] = outputs
    ctx.components["data_sample_buttons"] = sample_buttons
    ctx.components["data_status"] = status


__all__ = ["build", "save_upload", "display_name", "uploads_dir", "Mapping", "DataView", "inspect_data",
           "load_sample", "load_upload", "load_eval_upload", "inspect_new_copy", "with_eval_file", "sample_source",
           "state_for", "view_values",
           "TokenizerCache", "stats_tokenizer", "example_spans", "issues_frame", "labels_frame", "preview_frame",
           "length_figure", "TRAINED", "MASKED"]
