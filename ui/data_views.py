"""Views of the Data tab: the tables, texts and charts one inspected file turns into.

Everything taken from a user's file is shown as plain text (escaped Markdown,
string table cells), never as HTML.
"""
from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from finetune_core.data.stats import render_training_view
from finetune_core.data.dataset import DataReport, Issue
from finetune_core.data.mapping import DataMapping
from finetune_core.data.preference import answer_rows, dropped_text

PREVIEW_ROWS = 20
CELL_CHARS = 400  # preview cells are cut here so one huge row cannot swamp the table
ISSUE_ROWS = 500  # the table shows this many; the count above it says how many there are
TRAINED, MASKED = "trained", "masked (prompt)"
ISSUE_COLUMNS = ["row", "column", "message"]
LABEL_COLUMNS = ["label", "count"]
# What the two column pickers mean in each format (DataMapping's prompt_column / completion_column).
NOT_USED = "not used by this format"
COLUMN_LABELS = {
    "classification": ("Text column (the text to classify)", "Label column (the answer to learn)"),
    "columns": ("Prompt column", "Completion column (the answer to learn)"),
    "prompt_completion": ("Prompt column", "Completion column (the answer to learn)"),
    "messages": ("Conversation column", "Completion column (not used: the last reply is learned)"),
    "sharegpt": ("Conversation column", "Completion column (not used: the last reply is learned)"),
    "alpaca": (f"Prompt column ({NOT_USED})", f"Completion column ({NOT_USED})"),
    "text": ("Text column", f"Completion column ({NOT_USED})"),
    "preference": ("Prompt column", f"Completion column ({NOT_USED}: chosen and rejected are the answers)"),
    "preference_implicit": (f"Prompt column ({NOT_USED}: the start chosen and rejected share)",
                            f"Completion column ({NOT_USED})"),
    "sharegpt_preference": ("Conversation column", f"Completion column ({NOT_USED}: chosen and rejected)"),
    "unpaired_preference": ("Conversation or prompt column", "Completion column (prompt/completion files only)"),
    "votes": (f"Prompt column ({NOT_USED})", f"Completion column ({NOT_USED})"),
}
DEFAULT_COLUMN_LABELS = ("Prompt column", "Completion column")
COLOURS_NOTE = "(green = trained, grey = masked)"
EXAMPLE_LABEL = f"One example as the model sees it {COLOURS_NOTE}"
EXAMPLE_LABELS = {  # what the example shows, by the name `answer_rows` gives the answer
    "chosen": f"Chosen: the first pair's preferred answer, as the model sees it {COLOURS_NOTE}",
    "desirable": f"One example as the model sees it: a desirable answer (thumbs up) {COLOURS_NOTE}",
    "undesirable": f"One example as the model sees it: an undesirable answer (thumbs down) {COLOURS_NOTE}",
}
REJECTED_LABEL = f"Rejected: the same prompt with the answer to move away from {COLOURS_NOTE}"
THUMBS = {True: "up", False: "down"}


def held_out_fraction(percent: Any) -> float:
    """The held-out slider's percentage as the fraction the core uses (10 -> 0.1); the one
    place the Data tab converts. Out of range is left to ``DataMapping`` to refuse by name."""
    try:
        return round(float(percent or 0) / 100, 4)
    except (TypeError, ValueError):
        raise ValueError(f"Held-out %: {str(percent)[:40]!r} is not a number.") from None


def column_labels(data_format: str | None) -> tuple[str, str]:
    """The prompt and completion column pickers' labels for a detected or chosen format: a
    classification file has a text and a label column, a chat file a conversation column.

    >>> column_labels("columns")
    ('Prompt column', 'Completion column (the answer to learn)')
    >>> column_labels("auto")
    ('Prompt column', 'Completion column')
    """
    return COLUMN_LABELS.get(data_format or "", DEFAULT_COLUMN_LABELS)


def held_out_percent(fraction: float) -> float:
    """A held-out fraction as the slider shows it (0.1 -> 10)."""
    return round(float(fraction) * 100, 2)


def md_text(text: Any) -> str:
    """File content shown in Markdown: HTML-escaped and with Markdown syntax neutralised."""
    text = html.escape(str(text), quote=False).replace("\n", " ↵ ")
    return re.sub(r"([\\`*_{}\[\]()#+\-!|~>])", r"\\\1", text)


def issues_frame(issues: list[Issue], eval_issues: list[Issue] | None = None) -> pd.DataFrame:
    """The issues table: row (or 'file'), column, message. Evaluation-file issues are marked as such."""
    rows = [["file" if i.file_wide else str(i.row), i.column or "", i.message] for i in issues]
    rows += [["eval file" if i.file_wide else f"eval file, row {i.row}", i.column or "", i.message]
             for i in eval_issues or []]
    return pd.DataFrame(rows[:ISSUE_ROWS], columns=ISSUE_COLUMNS)


def labels_frame(labels: dict[str, int] | None) -> pd.DataFrame:
    """Label counts as the Labels bar chart's table (label, count); empty for None."""
    return pd.DataFrame([[str(k), int(v)] for k, v in (labels or {}).items()], columns=LABEL_COLUMNS)


def _messages_text(messages: list[dict]) -> str:
    if len(messages) == 1:
        return str(messages[0].get("content", ""))
    return "\n".join(f"{m.get('role')}: {m.get('content', '')}" for m in messages)


def _cut(text: str) -> str:
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…"


def preview_frame(rows: list[dict], row_numbers: list[int]) -> pd.DataFrame:
    """Normalised rows as plain text: the system prompt, the prompt turns, the completion (and label), or
    a pair's chosen and rejected answers, or a thumbs row's completion and thumbs up/down."""
    records = []
    for row, number in zip(rows[:PREVIEW_ROWS], row_numbers):
        if "prompt" not in row:
            records.append({"row": number, "text": _cut(str(row.get("text", "")))})
            continue
        system = [m for m in row["prompt"] if m.get("role") == "system"]
        turns = [m for m in row["prompt"] if m.get("role") != "system"]
        record = {"row": number, "system": _cut(_messages_text(system)) if system else "",
                  "prompt": _cut(_messages_text(turns))}
        for key in ("completion", "chosen", "rejected"):
            if key in row:
                record[key] = _cut(_messages_text(row[key]))
        if "label" in row:
            record["label"] = str(row["label"])
        if "desirable" in row:
            record["thumbs"] = THUMBS.get(row["desirable"], "?")
        records.append(record)
    frame = pd.DataFrame(records)
    if "system" in frame and not frame["system"].any():
        frame = frame.drop(columns="system")  # an empty column only takes width from the text
    return frame


def example_spans(row: dict, tokenizer, max_length: int) -> list[tuple[str, str]]:
    """One row through the chat template: (text, 'trained' | 'masked (prompt)') spans."""
    return [(text, TRAINED if trained else MASKED) for text, trained in render_training_view(row, tokenizer, max_length)]


def example_views(row: dict, tokenizer, max_length: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """The row through the chat template, per answer: [("chosen", spans), ("rejected", spans)] for a pair,
    one ("desirable"/"undesirable"/"", spans) otherwise; each rendered as the trainer tokenises it."""
    return [(name, example_spans(one, tokenizer, max_length)) for name, one in answer_rows(row)]


def example_label(name: str) -> str:
    """The example's heading for an answer named by `example_views` ("chosen", "desirable", ...)."""
    return EXAMPLE_LABELS.get(name, EXAMPLE_LABEL)


def _bins(values: list[int]):
    """One bar per token count when the range is small (no gaps between integer bars), else 30 bins."""
    lo, hi = min(values, default=0), max(values, default=0)
    return [x - 0.5 for x in range(lo, hi + 2)] if hi - lo <= 40 else 30


def length_figure(tokens: dict) -> Figure:
    """Histograms of prompt, completion and total tokens, with max_length marked on the total."""
    fig = Figure(figsize=(10, 2.8), layout="constrained")
    FigureCanvasAgg(fig)  # an Agg canvas, not pyplot: no global figure registry on a shared server
    panels = (("prompt", "prompt tokens (masked)", "#9ca3af"), ("completion", "completion tokens (trained)", "#16a34a"),
              ("total", "total tokens", "#2563eb"))
    limit = tokens["max_length"]
    for ax, (part, title, colour) in zip(fig.subplots(1, 3), panels):
        values = tokens["lengths"][part]
        ax.hist(values, bins=_bins(values), color=colour)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("tokens")
        ax.tick_params(labelsize=8)
        if part == "total":
            # Drawing a far-away limit would squash the bars into one pixel column: say it instead.
            if limit <= 1.5 * max(values, default=0):
                ax.axvline(limit, color="#dc2626", linestyle="--", linewidth=1)
                ax.set_title(f"total tokens ({tokens['over_max_length']} over the max length {limit})", fontsize=10)
            else:
                ax.set_title(f"total tokens (all under the max length {limit})", fontsize=10)
    fig.axes[0].set_ylabel("rows")
    return fig


def issue_lines(issues: list[Issue], limit: int = 3) -> str:
    """The first issues as "row 57, column 'text': message" (Issue.text; rows first: they are what to fix)."""
    ordered = [i for i in issues if not i.file_wide] + [i for i in issues if i.file_wide]
    return "; ".join(i.text() for i in ordered[:limit])


def sentence(text: str) -> str:
    """`text` starting with a capital letter, for a status line that begins with it."""
    return text[:1].upper() + text[1:]


def status_text(report: DataReport, eval_report: DataReport | None, source: dict) -> str:
    """The outcome line: ready (and what happens to bad rows) or what to fix."""
    if report.fatal or not report.rows:
        # An unreadable upload is not kept (see data_tab.load_upload): only a new upload can help.
        fix = ("Fix the file and upload it again." if report.unreadable
               else "Fix the file or the mapping, then press **Apply mapping**.")
        first = issue_lines([i for i in report.issues if i.file_wide] or report.issues)
        return f"**Not usable:** {md_text(sentence(first))}. " + fix
    if not report.usable:
        return (f"**Not usable yet:** {report.bad_rows} of {report.total_rows} rows have problems, e.g. "
                f"{md_text(issue_lines(report.issues))}. Fix them in the file, or tick **Drop bad rows** to "
                f"train on the {len(report.rows)} good rows.")
    if eval_report is not None and not eval_report.usable:
        return (f"**The evaluation file ({md_text(source.get('eval_name', ''))}) is not usable:** "
                f"{md_text(issue_lines(eval_report.issues))}. Fix it, tick **Drop bad rows**, or remove it to "
                "hold out a share of the training file instead.")
    text = f"**Ready: {len(report.rows)} rows. Next: the Train tab.**"
    if dropped_text(report.dropped):
        text += f" Left out on purpose: {dropped_text(report.dropped)}."
    if report.bad_rows:
        text += (f" {report.bad_rows} row{'s' if report.bad_rows != 1 else ''} with problems will be dropped "
                 "(see the issues below).")
    return text


def duplicate_rows_text(duplicates: dict, groups: int = 5, rows: int = 5) -> str:
    """' (rows 1/4/9, 2/7…, … 12 more groups)': a few groups of a few rows, however many there are."""
    shown = duplicates["examples"][:groups]
    if not shown:
        return ""
    text = ", ".join("/".join(str(n) for n in group[:rows]) + ("…" if len(group) > rows else "") for group in shown)
    more = duplicates["groups"] - len(shown)
    return f" (rows {text}" + (f", … {more} more group{'s' if more != 1 else ''}" if more > 0 else "") + ")"


def rows_named(positions: list[int], row_numbers: list[int], count: int) -> str:
    """'row 12' / 'rows 12, 40' / 'rows 12, 40, … (5 in all)': file row numbers for positions in the rows."""
    numbers = [str(row_numbers[i]) for i in positions if i < len(row_numbers)]
    if not numbers:
        return f"{count} row{'s' if count != 1 else ''}"
    more = f", … ({count} in all)" if count > len(numbers) else ""
    return f"row{'s' if len(numbers) > 1 or more else ''} {', '.join(numbers)}{more}"


def token_lines(tokens: dict, row_numbers: list[int], rows: int) -> list[str]:
    """The summary's token lines: lengths, then the rows longer than the maximum length and the rows
    whose prompt alone fills it (named by row number, with what to do about them)."""
    limit = tokens["max_length"]
    parts = ", ".join(f"{p} median {tokens[p]['median']:g} / longest {tokens[p]['max']}"
                      for p in ("prompt", "completion", "total"))
    measured = "" if tokens["rows_measured"] == rows else f" (measured on {tokens['rows_measured']} rows)"
    lines = [f"- Tokens per row{measured}: {parts}."]
    over, lost = tokens["over_max_length"], tokens["completion_lost"]
    if not over:
        lines.append(f"- Every row fits in the maximum length ({limit} tokens).")
    elif over > lost:  # the rows whose prompt alone is too long are said below, with what to do
        where = rows_named(tokens.get("cut_at", []), row_numbers, over - lost)
        lines.append(f"- **{where[0].upper() + where[1:]}: longer than the maximum length ({limit} tokens)**; "
                     "the end of the answer is cut off in training.")
    if lost:
        where = rows_named(tokens.get("completion_lost_at", []), row_numbers, lost)
        lines.append(f"- **{where[0].upper() + where[1:]}: the prompt alone is longer than the maximum length "
                     f"({limit} tokens), so nothing of the answer would be learned.** Raise the max length or "
                     "shorten the prompt.")
    return lines


def summary_text(report: DataReport, source: dict, mapping: DataMapping, eval_report: DataReport | None,
                 split: tuple[int, int], duplicates: dict, leakage: dict, tokens: dict | None,
                 token_problem: str) -> str:
    """The Data tab's Markdown summary: format, usable/bad rows, the split, duplicates, leakage, labels and
    token statistics (or why they are missing). Text from the file is escaped."""
    lines = [f"**{md_text(source.get('name', ''))}** · format **{report.format}** · "
             f"{len(report.rows)} usable of {report.total_rows} rows · {len(report.issues)} issues "
             f"({report.bad_rows} bad rows)"]
    lines += [f"- {md_text(note)}" for note in report.notes]
    train_n, held_n = split
    if eval_report is not None:
        lines.append(f"- Held out: the separate file **{md_text(source.get('eval_name', ''))}** "
                     f"({held_n} usable rows); the held-out % is not used.")
    else:
        lines.append(f"- Split: {train_n} train / {held_n} held out ({mapping.eval_fraction:.0%}, "
                     f"seed {mapping.seed}).")
    lines.append(f"- Exact duplicates: {duplicates['count']}" + duplicate_rows_text(duplicates))
    if "same_prompt" in duplicates:  # preference rows: several answers to one prompt are allowed, but counted
        lines.append(f"- Prompts asked more than once: {duplicates['same_prompt']['count']}"
                     + duplicate_rows_text(duplicates["same_prompt"]))
    if report.dropped:
        lines.append(f"- Left out on purpose: {dropped_text(report.dropped) or 'none'}"
                     f" (checked: {', '.join(k.replace('_', ' ') for k in report.dropped)}).")
    lines.append(f"- Held-out rows also in training: {leakage['count']} exact, {leakage['same_prompt']} with the same prompt")
    if report.labels:
        lines.append(f"- {len(report.labels)} labels: " + ", ".join(f"{md_text(k)} ({v})" for k, v in report.labels.items()))
    if tokens:
        lines += token_lines(tokens, report.row_numbers, len(report.rows))
        if "chosen" in tokens:
            lines.append(f"- Answers (the completion above is the longer of the two): chosen median "
                         f"{tokens['chosen']['median']:g} / longest {tokens['chosen']['max']}, rejected median "
                         f"{tokens['rejected']['median']:g} / longest {tokens['rejected']['max']}.")
        if tokens.get("chat_template_note"):
            lines.append(f"- {md_text(tokens['chat_template_note'])}")
    elif token_problem:
        lines.append(f"- Token statistics unavailable: {md_text(token_problem)}")
    return "\n".join(lines)


