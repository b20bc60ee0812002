"""Data tab: pick a sample, upload a file or take a run's votes, map its columns, see what the model will learn.

A file goes in once (a sample click, an upload copied into the server's uploads
folder under a generated name, the votes.jsonl of a run the visitor may use,
``ui/data_uploads.py``, or a Hub dataset's first rows, ``ui/data_hub.py``) and comes back as one view: detected
format and counts, every issue with its row number, label counts, token-length
histograms, duplicates and train/held-out leakage, a preview of normalised
rows and one example rendered through the chat template with the trained
(completion) tokens told apart from the masked prompt tokens (for a preference
pair: the chosen and the rejected answer, each as the model sees it; the rows
left out on purpose, such as tie votes, are counted in the summary).

The mapping controls make one ``DataMapping`` (finetune_core/data/mapping.py;
the held-out share is shown as a percentage and converted at the widget edge
by ``held_out_fraction``). When the file is usable the view also sets
``shared.data_state`` (``{"mapping": DataMapping fields, "name", "rows"}``, which
the Train tab reads); otherwise ``data_state`` is None and the status line
says what to fix. The inspection itself is ``inspect_mapping`` in the core. The handlers below are plain functions
(tests call them); ``build`` only lays out widgets and wires them.

    .venv/bin/python -m pytest -q tests/test_ui_data.py
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure

from finetune_core.data.dataset import FORMATS, DataReport, inspect_mapping
from finetune_core.data.mapping import DataMapping
from finetune_core.models.tokenizers import TokenizerCache
from finetune_core.data.samples import SAMPLES

from .access import visitor
from .context import DATA_EXTENSIONS, AppContext, DataParts, Shared
from .data_uploads import (display_name, sample_source, save_upload, upload_source, uploads_dir,  # noqa: F401
                           vote_run_choices, votes_source, with_eval_file)
from .data_views import (EXAMPLE_LABEL, ISSUE_COLUMNS, LABEL_COLUMNS, MASKED, PREVIEW_ROWS,  # noqa: F401
                         REJECTED_LABEL, TRAINED, column_labels, example_label, example_spans, example_views,
                         held_out_fraction, held_out_percent, issues_frame, labels_frame, length_figure, md_text,
                         preview_frame, status_text, summary_text)
from .errors import page_error, shows_errors

EXAMPLE_COLOURS = {TRAINED: "#16a34a", MASKED: "#d1d5db"}
FORMAT_CHOICES = [("auto-detect", "auto")] + [(f.replace("_", " / ", 1) if f == "prompt_completion" else f, f)
                                              for f in FORMATS]
NO_COLUMN = ("(none)", "")
EMPTY_STATUS = "No dataset chosen yet: load a sample or upload a file."


# -- what the user chose ------------------------------------------------------------
def mapping_from_widgets(values: dict[str, Any], base: DataMapping | None = None) -> DataMapping:
    """The DataMapping the mapping controls show (by field name), on top of ``base``. The
    held-out slider is a percentage: converted here, the one place. A bad or unknown
    value is a gr.Error naming the field; the templates are checked with the file
    (their problems show as issues)."""
    values = {k: v for k, v in values.items() if v is not None}
    try:
        if "eval_fraction" in values:
            values["eval_fraction"] = held_out_fraction(values["eval_fraction"])
        return DataMapping.from_dict({**(base or DataMapping()).to_dict(), **values}, check_templates=False)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None


def kept_choices(mapping: DataMapping | None) -> DataMapping:
    """A fresh mapping keeping the user's split, seed, drop and system-prompt choices (a new file's columns differ)."""
    base = mapping or DataMapping()
    return DataMapping(system_prompt=base.system_prompt, eval_fraction=base.eval_fraction, seed=base.seed,
                       drop_bad_rows=base.drop_bad_rows)


# -- the view ---------------------------------------------------------------------
@dataclass
class DataView:
    """Everything the tab shows for one file and mapping."""

    data_state: dict | None
    source: dict | None
    mapping: DataMapping
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
    data_format: str = ""  # the format the file was read in (detected or chosen); names the column pickers
    example_label: str = EXAMPLE_LABEL  # says which answer `example` shows (a pair's chosen one)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # a pair's rejected answer, rendered alike


def state_for(report: DataReport, mapping: DataMapping, source: dict) -> dict:
    """What the Train tab reads: ``{"mapping": every DataMapping field, "name", "rows"}``.

    ``data_format`` is the resolved format, not "auto": the run re-reads the file
    exactly as it was inspected here.
    """
    chosen = replace(mapping, data_format=report.format)
    return {"mapping": chosen.to_dict(), "name": source.get("name", "") or "data", "rows": len(report.rows)}


def inspect_data(source: dict | None, mapping: DataMapping, tokenizer=None, max_length: int = 512,
                 max_file_mb: float = 100.0, token_problem: str = "") -> DataView:
    """Read, validate and describe ``source`` with ``mapping`` (``inspect_mapping``); never raises on bad content."""
    if not source or not source.get("path"):
        return DataView(None, source, mapping, EMPTY_STATUS)
    max_length = int(max_length or 512)
    mapping = replace(mapping, data_path=source["path"], eval_path=source.get("eval_path", "") or "",
                      hub_source=source.get("hub_source", "") or "")  # where Hub rows came from (ui/data_hub.py)
    found = inspect_mapping(mapping, tokenizer, max_length, max_file_mb)
    report, eval_report, tokens = found.report, found.eval_report, found.tokens
    view = DataView(
        data_state=state_for(report, mapping, source) if found.usable else None,
        source=source, mapping=mapping, status=status_text(report, eval_report, source),
        summary=summary_text(report, source, mapping, eval_report, (len(found.train), len(found.held)),
                             found.duplicates, found.leakage, tokens, token_problem),
        issues=issues_frame(report.issues, eval_report.issues if eval_report else None),
        labels=labels_frame(report.labels), lengths=length_figure(tokens) if tokens else None,
        preview=preview_frame(report.rows, report.row_numbers), columns=list(report.columns), tokens=tokens,
        description=SAMPLES.get(source.get("sample") or "", {}).get("description", ""),
        unreadable=tuple(key for key, r in (("path", report), ("eval_path", eval_report)) if r and r.unreadable),
        data_format=report.format,
    )
    if tokenizer is not None and report.rows:
        shown = example_views(report.rows[0], tokenizer, max_length)
        view.example, view.example_label = shown[0][1], example_label(shown[0][0])
        view.rejected = shown[1][1] if len(shown) > 1 else []
    return view


def load_sample(name: str, tokenizer=None, mapping: DataMapping | None = None, max_length: int = 512,
                max_file_mb: float = 100.0, token_problem: str = "") -> DataView:
    """One click: a sample with its own mapping."""
    source, chosen = sample_source(name, mapping)
    return inspect_data(source, chosen, tokenizer, max_length, max_file_mb, token_problem)


def load_upload(file_path: str | None, tokenizer=None, mapping: DataMapping | None = None, max_length: int = 512,
                max_file_mb: float = 100.0, folder: Path | None = None, token_problem: str = "") -> DataView:
    """A new upload: copied into the uploads folder and inspected with a fresh mapping
    (auto-detect; the split, seed, drop and system-prompt choices are kept)."""
    source = upload_source(file_path, max_file_mb, folder)
    return inspect_new_copy(source, "path", kept_choices(mapping), tokenizer, max_length, max_file_mb, token_problem)


def load_votes(run_id, tokenizer=None, mapping: DataMapping | None = None, max_length: int = 512,
               max_file_mb: float = 100.0, who=None, token_problem: str = "") -> DataView:
    """The votes of a run as the data, read as the "votes" format with a fresh mapping (the split, seed,
    drop and system-prompt choices kept). The path is the server's (``votes_source``), and the file is
    the run's own: unlike a refused upload, it is never deleted."""
    source = votes_source(run_id, who)
    chosen = replace(kept_choices(mapping), data_format="votes")
    return inspect_data(source, chosen, tokenizer, max_length, max_file_mb, token_problem)


def load_eval_upload(source: dict | None, file_path: str | None, tokenizer=None,
                     mapping: DataMapping | None = None,
                     max_length: int = 512, max_file_mb: float = 100.0, folder: Path | None = None,
                     token_problem: str = "") -> DataView:
    """A separate evaluation file attached (detached when ``file_path`` is None) and the view redone."""
    source = with_eval_file(source, file_path, max_file_mb, folder)
    if not file_path:
        return inspect_data(source, mapping or DataMapping(), tokenizer, max_length, max_file_mb, token_problem)
    return inspect_new_copy(source, "eval_path", mapping or DataMapping(), tokenizer, max_length, max_file_mb,
                            token_problem)


def inspect_new_copy(source: dict, key: str, mapping: DataMapping, tokenizer, max_length: int, max_file_mb: float,
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
    """Narrow row and label columns, so the prompt and the completion share the width. The narrow ones
    are in pixels (as wide as their header, on a phone too: a header's word is never split); the table
    scrolls sideways where the screen is narrower than them all."""
    narrow = {"row": "60px", "label": "130px", "thumbs": "80px", "system": "16%"}
    share = 76 - (16 if "system" in frame.columns else 0)  # what the pixel columns leave, on a laptop
    wide = [c for c in frame.columns if c not in narrow]
    return [narrow.get(c, f"{share // max(1, len(wide))}%") for c in frame.columns]


def _column_update(columns: list[str], value: str, label: str):
    choices = [NO_COLUMN] + [(c, c) for c in columns]
    return gr.update(choices=choices, value=value if value in columns else "", label=label)


def view_values(view: DataView) -> tuple:
    """The view in the order of the tab's output components (see ``build``: ``data_outputs``)."""
    m = view.mapping
    prompt_label, completion_label = column_labels(view.data_format or m.data_format)
    has_labels = not view.labels.empty
    description = f"**{md_text((view.source or {}).get('name', ''))}** — {view.description}" if view.description else ""
    return (
        view.data_state, view.source, view.status, view.summary, view.issues,
        # y from 0: with equal counts the plot's own domain would collapse and hide the bars.
        gr.update(value=view.labels, visible=has_labels, y_lim=[0, max(view.labels["count"], default=1)]), view.lengths,
        gr.update(value=view.preview, column_widths=preview_widths(view.preview)),
        gr.update(value=view.example, label=view.example_label), description,
        m.data_format, _column_update(view.columns, m.prompt_column, prompt_label),
        _column_update(view.columns, m.completion_column, completion_label),
        m.prompt_template, m.completion_template, m.system_prompt, m.drop_bad_rows,
        gr.update(value=view.rejected, visible=bool(view.rejected)),
    )


# -- layout and wiring -------------------------------------------------------------
def build(ctx: AppContext, shared: Shared) -> DataParts:
    """Build the Data tab inside the caller's `gr.Tab`; returns what the guided demo uses."""
    from . import data_hub  # here, not at the top: data_hub builds on this module's handlers
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
                             elem_id="data-upload")  # sized by app.py's CSS
            with gr.Row(equal_height=True):  # filled on page load; a pick is checked by votes_source (open_run)
                votes_dd = gr.Dropdown([], value=None, label="Or train on the votes of a run", allow_custom_value=True,
                                       info="Blind votes from the Chat tab: the winner is chosen, the other "
                                            "answer rejected; ties are left out.", scale=4, elem_id="data-votes")
                votes_refresh = gr.Button("↻", size="sm", scale=0, min_width=40, elem_id="data-votes-refresh")
            hub = data_hub.build_section()  # "From the Hugging Face Hub"
            with gr.Accordion("Mapping and split", open=True):
                defaults = DataMapping()
                mapping = {  # keyed by DataMapping field: current() reads them back by name
                    "data_format": gr.Dropdown(FORMAT_CHOICES, value="auto", label="Format", elem_id="data-format"),
                    "prompt_column": gr.Dropdown([NO_COLUMN], value="", label=column_labels("auto")[0],
                                                 elem_id="data-prompt-column"),
                    "completion_column": gr.Dropdown([NO_COLUMN], value="", label=column_labels("auto")[1],
                                                     elem_id="data-completion-column"),
                    "prompt_template": gr.Textbox(label="Prompt template", lines=2, placeholder="Summarize this dialog:\n{dialogue}",
                                                  info="{column} placeholders; overrides the prompt column."),
                    "completion_template": gr.Textbox(label="Completion template", placeholder="{summary}"),
                    "system_prompt": gr.Textbox(label="System prompt (optional)", lines=1),
                    "eval_fraction": gr.Slider(0, 50, value=held_out_percent(defaults.eval_fraction), step=1,
                                               label="Held-out %",
                                               info="Rows kept aside for evaluation (stratified by label)."),
                    "seed": gr.Number(defaults.seed, precision=0, minimum=0, maximum=2**31 - 1, label="Seed",
                                      info="Picks the held-out rows; training also shuffles and initialises "
                                           "with it."),
                    "drop_bad_rows": gr.Checkbox(True, label="Drop bad rows",
                                                 info="Train on the good rows; off = refuse a file with any bad row."),
                }
                eval_upload = gr.File(label="Separate evaluation file (optional, replaces the held-out %)",
                                      file_types=DATA_EXTENSIONS, type="filepath", elem_id="data-eval-upload")
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
                                  column_widths=["60px", "110px", "76%"],  # the headers whole on a phone
                                  max_height=300, elem_id="data-issues")
            example = gr.HighlightedText(label=EXAMPLE_LABEL,
                                         color_map=EXAMPLE_COLOURS, show_legend=True, combine_adjacent=True,
                                         elem_id="data-example")
            rejected = gr.HighlightedText(label=REJECTED_LABEL, color_map=EXAMPLE_COLOURS, show_legend=True,
                                          combine_adjacent=True, visible=False, elem_id="data-rejected")
            preview = gr.Dataframe(label=f"Preview (first {PREVIEW_ROWS} normalised rows)", interactive=False,
                                   wrap=True, max_height=400, elem_id="data-preview")
    outputs = [shared.data_state, file_state, status, summary, issues, labels, lengths, preview, example, sample_info,
               mapping["data_format"], mapping["prompt_column"], mapping["completion_column"],
               mapping["prompt_template"],
               mapping["completion_template"], mapping["system_prompt"], mapping["drop_bad_rows"], rejected]
    stats_inputs = {tok_source, max_length}

    def current(raw: dict) -> DataMapping:
        return mapping_from_widgets({name: raw[comp] for name, comp in mapping.items() if comp in raw})

    def tokenizer_for(source: str | None):
        tok, problem = tokenizers.for_stats(source, settings.default_model, gr.Info)
        if problem:
            gr.Warning(f"Token statistics skipped: {problem}")
        return tok, problem

    def load_sample_values(name: str, tokenizer_source: str | None = None, max_len: int = 512,
                           chosen: DataMapping | None = None) -> tuple:
        """For the guided demo: load a sample by name (keeping ``chosen``'s split, seed and
        drop choices); values in the order of ``data_outputs``."""
        tok, problem = tokenizer_for(tokenizer_source)
        view = load_sample(name, tok, chosen, max_len, settings.max_upload_mb, problem)
        return view_values(view)

    def sample_handler(name: str):
        @shows_errors
        def on_sample(raw: dict):
            return load_sample_values(name, raw[tok_source], raw[max_length], current(raw))
        return on_sample

    @shows_errors
    def on_upload(raw: dict):
        tok, problem = tokenizer_for(raw[tok_source])
        return view_values(load_upload(raw[upload], tok, current(raw), raw[max_length], settings.max_upload_mb,
                                       token_problem=problem))

    @shows_errors
    def on_votes(raw: dict, request: gr.Request):
        if not raw[votes_dd]:  # the choice was cleared: keep what is shown
            return tuple(gr.skip() for _ in outputs)
        tok, problem = tokenizer_for(raw[tok_source])
        return view_values(load_votes(raw[votes_dd], tok, current(raw), raw[max_length], settings.max_upload_mb,
                                      visitor(request), problem))

    @shows_errors
    def on_vote_runs(current: str | None, request: gr.Request):
        """The runs whose votes this visitor may train on; the current pick kept while it is still one."""
        choices = vote_run_choices(visitor(request))
        return gr.update(choices=choices, value=current if current in {v for _, v in choices} else None)

    @shows_errors
    def on_upload_clear():
        return view_values(DataView(None, None, DataMapping(), EMPTY_STATUS))

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
    kept = {mapping[k] for k in ("eval_fraction", "seed", "drop_bad_rows")}  # what a sample click keeps
    for i, (name, btn) in enumerate(sample_buttons.items()):
        btn.click(sample_handler(name), stats_inputs | kept, outputs,
                  api_name=f"data_sample_{i}")
    upload.upload(on_upload, mapping_inputs | {upload}, outputs, api_name="data_upload")
    upload.clear(on_upload_clear, None, outputs, api_visibility="private")
    votes_dd.input(on_votes, mapping_inputs | {votes_dd}, outputs, api_name="data_votes")
    for event in (votes_refresh.click, shared.blocks.load):  # each visitor sees their own runs' votes
        event(on_vote_runs, votes_dd, votes_dd, api_visibility="private")
    eval_upload.upload(on_eval_file, mapping_inputs | {file_state, eval_upload}, outputs, api_name="data_eval_upload")
    eval_upload.clear(on_eval_file, mapping_inputs | {file_state, eval_upload}, outputs, api_visibility="private")
    apply_btn.click(on_apply, mapping_inputs | {file_state}, outputs, api_name="data_apply")
    data_hub.wire(hub, mapping_inputs, outputs, settings.max_upload_mb,  # tokenizer, its problem, mapping, max length:
                  lambda raw: (*tokenizer_for(raw[tok_source]), current(raw), raw[max_length]))
    next_btn.click(on_next, None, shared.tabs, api_visibility="private")
    return DataParts(outputs=outputs, load_sample=load_sample_values, sample_buttons=sample_buttons, status=status,
                     votes=votes_dd, vote_runs=on_vote_runs)


__all__ = ["build", "save_upload", "display_name", "uploads_dir", "mapping_from_widgets", "kept_choices", "DataView",
           "inspect_data",
           "load_sample", "load_upload", "load_eval_upload", "load_votes", "vote_run_choices", "inspect_new_copy", "with_eval_file", "sample_source",
           "state_for", "view_values",
           "TokenizerCache", "example_spans", "issues_frame", "labels_frame", "preview_frame",
           "length_figure", "TRAINED", "MASKED"]
