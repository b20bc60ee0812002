"""The data layer's facade: load, detect, normalise, validate, split, inspect.

Everything else (the Data tab, the trainer, evaluation, the CLI) calls these
functions with a ``DataMapping`` (finetune_core/data/mapping.py); none of them
raises on bad content - problems come back as ``Issue(row, column, message)``
in a ``DataReport``. The split itself is in ``split`` (re-exported here).

    python -m finetune_core inspect sample_data/fact_cards.jsonl --model bundled --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from finetune_core.errors import StudioError
from finetune_core.data.checks import (
    LeftOut, RowProblem, find_duplicates, find_leakage, missing_columns, mixed_type_issues,
)
from finetune_core.data.formats import (
    FORMATS, PREFERENCE_FORMATS, FormatSpec, collect_labels, default_classification_template, detect_format,
    normalize_row,
)
from finetune_core.data.preference import drop_reasons, dropped_text, fill_spec, thumbs_counts
from finetune_core.data.load import load_records
from finetune_core.data.records import Issue
from finetune_core.data.templates import template_fields
from finetune_core.data.mapping import DataMapping
from finetune_core.data.split import split_rows, train_and_held

__all__ = [
    "Issue", "DataMapping", "DataReport", "Inspection", "prepare_data", "is_text_rows", "split_rows", "train_and_held",
    "inspect_mapping", "write_jsonl", "read_jsonl", "inspect_file", "inspect_main", "FORMATS",
]
MAX_ISSUES_IN_SUMMARY = 500


@dataclass
class DataReport:
    """The outcome of ``prepare_data``: good rows, every issue, and what was detected."""

    format: str
    rows: list[dict]
    issues: list[Issue]
    total_rows: int
    columns: list[str]
    labels: dict[str, int] | None
    fatal: bool
    drop_bad_rows: bool = True
    notes: list[str] = field(default_factory=list)  # how the format was detected, applied defaults
    row_numbers: list[int] = field(default_factory=list)  # source row/line of each entry in rows
    spec: FormatSpec | None = None
    unreadable: bool = False  # the file itself could not be read: no mapping can fix it (an upload is removed)
    dropped: dict[str, int] = field(default_factory=dict)  # rows left out on purpose, by reason (preference)

    @property
    def bad_rows(self) -> int:
        """How many distinct rows have at least one issue (file-wide issues not counted)."""
        return len({i.row for i in self.issues if not i.file_wide})

    @property
    def usable(self) -> bool:
        """Whether training can go ahead: no fatal issue, some good rows, and no bad row unless those are dropped."""
        return not self.fatal and bool(self.rows) and (self.drop_bad_rows or self.bad_rows == 0)

    def summary(self) -> dict:
        """The report as JSON-ready counts (the rows themselves left out; issues capped at MAX_ISSUES_IN_SUMMARY),
        as written to a run's data/report.json."""
        return {
            "format": self.format,
            "rows": len(self.rows),
            "total_rows": self.total_rows,
            "bad_rows": self.bad_rows,
            "issue_count": len(self.issues),
            "issues": [i.to_dict() for i in self.issues[:MAX_ISSUES_IN_SUMMARY]],
            "labels": self.labels,
            "columns": self.columns,
            "notes": self.notes,
            "dropped": dict(self.dropped),
            "usable": self.usable,
        }


def prepare_data(options: DataMapping, max_file_mb: float = 100.0) -> DataReport:
    """Load ``options.data_path`` and normalise it with the mapping; never raises on bad content.

    The evaluation file is read with ``prepare_data(mapping.for_file(mapping.eval_path))``.
    """
    loaded = load_records(options.data_path, max_file_mb)
    report = DataReport(
        format=options.data_format, rows=[], issues=list(loaded.issues), total_rows=loaded.total_rows,
        columns=loaded.columns, labels=None, fatal=loaded.fatal, drop_bad_rows=options.drop_bad_rows,
        unreadable=loaded.fatal,
    )
    if loaded.fatal:
        return report
    spec, problems = None, mapping_issues(options)  # before any row is rendered with the templates
    if not problems:
        spec, problems = resolve_spec(options, loaded.columns, loaded.records, report.notes)
    if problems or spec is None:
        report.issues.extend(problems)
        report.fatal = True
        return report
    report.format, report.spec = spec.format, spec
    report.issues.extend(mixed_type_issues(loaded.records, loaded.row_numbers, loaded.columns))
    _normalise_rows(report, loaded, spec)
    if spec.format == "classification":
        report.labels = dict(sorted(Counter(r["label"] for r in report.rows).items()))
    if spec.format == "unpaired_preference" and report.rows:
        report.notes.append("thumbs: {} desirable, {} undesirable".format(*thumbs_counts(report.rows)))
    if not report.rows:
        report.issues.append(Issue(None, None, _no_rows_message(report, loaded.total_rows)))
        report.fatal = True
    return report


def _no_rows_message(report: DataReport, total: int) -> str:
    first = next((i.message for i in report.issues if not i.file_wide), "")
    detail = f" (first problem: {first})" if first else ""
    left_out = dropped_text(report.dropped)
    if not left_out:
        return f"no usable rows: all {total} rows have problems{detail}"
    rest = f"; the other rows have problems{detail}" if first else ""
    return f"no usable rows: of {total} rows, left out on purpose: {left_out}{rest}"


def _normalise_rows(report: DataReport, loaded, spec: FormatSpec) -> None:
    """Each record normalised into ``report.rows``; a bad row becomes an issue, a row left out on
    purpose (a tie vote, equal answers) a count in ``report.dropped``."""
    report.dropped = dict.fromkeys(drop_reasons(spec.format), 0)
    for record, number in zip(loaded.records, loaded.row_numbers):
        try:
            row = normalize_row(record, spec)
        except LeftOut as exc:
            report.dropped[exc.reason] = report.dropped.get(exc.reason, 0) + 1
            continue
        except RowProblem as exc:
            report.issues.append(Issue(number, exc.column, exc.message))
            continue
        except Exception as exc:  # noqa: BLE001 - a malformed row must never crash the app
            report.issues.append(Issue(number, None, f"cannot read this row: {type(exc).__name__}: {exc}"))
            continue
        report.rows.append(row)
        report.row_numbers.append(number)


def mapping_issues(options: DataMapping) -> list[Issue]:
    """The templates and system prompt within the deployment's limits, checked before
    any row is rendered (each issue names the field)."""
    return [Issue(None, None, problem.rstrip(".")) for problem in options.template_problems()]


def resolve_spec(options: DataMapping, columns: list[str], records: list[dict], notes: list[str]):
    """Turn the user's choice (or auto) into a FormatSpec, or file-level issues."""
    fmt = options.data_format or "auto"
    if fmt != "auto" and fmt not in FORMATS:
        return None, [Issue(None, None, f"unknown format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")]
    detected, why = detect_format(columns, records)
    mapped = options.prompt_column or options.completion_column or options.prompt_template or options.completion_template
    if fmt == "auto":
        keep = detected is not None and detected.format == "classification" and options.prompt_column in (
            "", detected.prompt_column) and options.completion_column in ("", detected.completion_column)
        if mapped and not keep:
            fmt = "columns"
        elif detected is None:
            cols = ", ".join(columns) or "none"
            return None, [Issue(None, None, f"could not detect the format (columns: {cols}); choose a format "
                                            "or map a prompt and a completion column")]
        else:
            fmt = detected.format
            notes.append(f"detected {fmt}: {why}")
    spec = FormatSpec(fmt, system_prompt=options.system_prompt)
    if detected is not None and detected.format == fmt:
        spec.prompt_column, spec.completion_column = detected.prompt_column, detected.completion_column
        spec.label_column = detected.label_column
    spec.prompt_column = options.prompt_column or spec.prompt_column
    spec.completion_column = options.completion_column or spec.completion_column
    spec.prompt_template, spec.completion_template = options.prompt_template, options.completion_template
    return spec, _spec_issues(spec, columns, records, notes)


def _spec_issues(spec: FormatSpec, columns: list[str], records: list[dict], notes: list[str]) -> list[Issue]:
    """The columns and placeholders the spec needs must exist in the file."""
    what = f"the {spec.format} format"
    if spec.format in PREFERENCE_FORMATS:
        return missing_columns(fill_spec(spec, columns), columns, what)
    if spec.format == "columns":
        issues = []
        for side, column, template in (("prompt", spec.prompt_column, spec.prompt_template),
                                       ("completion", spec.completion_column, spec.completion_template)):
            if not (column or template):
                issues.append(Issue(None, None, f"map a {side} column or give a {side} template"))
        required = [c for c, t in ((spec.prompt_column, spec.prompt_template),
                                   (spec.completion_column, spec.completion_template)) if c and not t]
        return issues + missing_columns(required, columns, "the mapping") + _placeholder_issues(spec, columns)
    if spec.format == "classification":
        if not (spec.prompt_column and spec.completion_column):
            return [Issue(None, None, "classification needs a text column (prompt) and a label column (completion)")]
        issues = missing_columns([spec.prompt_column, spec.completion_column], columns, what)
        spec.labels = collect_labels(records, spec.completion_column) if not issues else []
        if not spec.prompt_template:
            notes.append("prompt template: " + default_classification_template(spec.prompt_column))
        return issues + _placeholder_issues(spec, columns, extra=("labels",))
    required = {
        "prompt_completion": [spec.prompt_column or "prompt", spec.completion_column or "completion"],
        "messages": [spec.prompt_column or "messages"],
        "sharegpt": [spec.prompt_column or "conversations"],
        "alpaca": ["instruction", "output"],
        "text": [spec.prompt_column or "text"],
    }[spec.format]
    return missing_columns(required, columns, what)


def _placeholder_issues(spec: FormatSpec, columns: list[str], extra: tuple = ()) -> list[Issue]:
    issues = []
    for side, template in (("prompt", spec.prompt_template), ("completion", spec.completion_template)):
        for name in template_fields(template):
            if name not in columns and name not in extra:
                issues.append(Issue(None, name, f"the {side} template uses {{{name}}} but the file has no column "
                                                f"{name!r} (columns: {', '.join(columns)})"))
    return issues


def is_text_rows(rows: list[dict]) -> bool:
    """True for language-modelling rows: plain "text", no prompt to answer (every token is
    trained; evaluation can only compare held-out loss)."""
    return bool(rows) and "prompt" not in rows[0] and "text" in rows[0]


def write_jsonl(path, rows) -> None:
    """Write rows as JSON Lines atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path) -> list[dict]:
    """All rows of a JSON Lines file the studio wrote, blank lines skipped; a malformed line raises ValueError."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclass
class Inspection:
    """What one mapping gives: the training file's report (and the evaluation file's),
    the split, duplicates, train/held-out leakage and token statistics (None without
    a tokenizer)."""

    report: DataReport
    eval_report: DataReport | None
    train: list[dict]
    held: list[dict]
    duplicates: dict
    leakage: dict
    tokens: dict | None = None

    @property
    def usable(self) -> bool:
        """Both files usable: a run can start from this mapping."""
        return self.report.usable and (self.eval_report is None or self.eval_report.usable)


def inspect_mapping(mapping: DataMapping, tokenizer=None, max_length: int = 512,
                    max_file_mb: float = 100.0) -> Inspection:
    """Read, validate and describe the mapping's file(s); never raises on bad content.
    The Data tab and ``inspect`` show this."""
    report = prepare_data(mapping, max_file_mb)
    eval_report = prepare_data(mapping.for_file(mapping.eval_path), max_file_mb) if mapping.eval_path else None
    train, held = train_and_held(mapping, report.rows, eval_report.rows if eval_report else None)
    tokens = None
    if tokenizer is not None and report.rows:
        from finetune_core.data.stats import token_stats

        tokens = token_stats(report.rows, tokenizer, max_length)
    return Inspection(report, eval_report, train, held, find_duplicates(report.rows, report.row_numbers),
                      find_leakage(train, held), tokens)


def inspect_file(mapping: DataMapping, tokenizer=None, max_length: int = 512, max_file_mb: float = 100.0) -> dict:
    """``inspect_mapping`` as one JSON-able dict (what ``inspect --json`` prints)."""
    found = inspect_mapping(mapping, tokenizer, max_length, max_file_mb)
    out = found.report.summary()
    stats: dict = {"duplicates": found.duplicates}
    stats["split"] = {"train": len(found.train), "held_out": len(found.held), "eval_fraction": mapping.eval_fraction,
                      "seed": mapping.seed}
    stats["leakage"] = found.leakage
    if found.tokens is not None:
        stats["tokens"] = found.tokens
    out["stats"] = stats
    out["preview"] = found.report.rows[:5]
    return out


def add_inspect_arguments(ap: argparse.ArgumentParser) -> None:
    """The `inspect` command's flags (finetune_core/cli.py puts them on its subcommand)."""
    ap.add_argument("file")
    ap.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    ap.add_argument("--map", action="append", default=[], metavar="prompt=COL|completion=COL",
                    help="map a column to the prompt or the completion (text/label for classification)")
    ap.add_argument("--prompt-template", default="")
    ap.add_argument("--completion-template", default="")
    ap.add_argument("--system-prompt", default="")
    ap.add_argument("--max-file-mb", type=float, default=100.0)
    ap.add_argument("--model", default="", help="tokenizer for token statistics ('bundled', a Hub id, a folder)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--json", action="store_true", help="print one JSON object")


def _options_from_args(args: argparse.Namespace) -> DataMapping:
    options = DataMapping(data_path=args.file, data_format=args.format, prompt_template=args.prompt_template,
                          completion_template=args.completion_template, system_prompt=args.system_prompt)
    sides = {"prompt": "prompt_column", "text": "prompt_column", "completion": "completion_column",
             "label": "completion_column"}
    for item in args.map:
        key, _, column = item.partition("=")
        if key.strip() not in sides or not column:
            raise SystemExit(f"--map expects prompt=COL or completion=COL, got {item!r}")
        setattr(options, sides[key.strip()], column)
    return options


def inspect_main(argv: list[str], load_tokenizer: Callable[[str], Any] | None = None) -> int:
    """``inspect FILE ...``: exit 0 when the file is usable, 2 when it is not (see `run_inspect`)."""
    ap = argparse.ArgumentParser(prog="python -m finetune_core inspect", description="Check a training data file.")
    add_inspect_arguments(ap)
    return run_inspect(ap.parse_args(argv), load_tokenizer)


def run_inspect(args: argparse.Namespace, load_tokenizer: Callable[[str], Any] | None = None) -> int:
    """Run `inspect` on parsed arguments: exit 0 when the file is usable, 2 when it is not, 1 when
    ``--model`` names a tokenizer that ``load_tokenizer`` (the command line passes the models
    layer's) cannot load. The data layer itself loads no model."""
    options = _options_from_args(args)
    tokenizer = None
    if args.model and load_tokenizer is not None:
        try:
            tokenizer = load_tokenizer(args.model)
        except StudioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    result = inspect_file(options, tokenizer, args.max_length, args.max_file_mb)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(_readable(result))
    return 0 if result["usable"] else 2


def _readable(result: dict) -> str:
    lines = [f"format: {result['format']}", f"rows: {result['rows']} usable of {result['total_rows']} read"]
    lines += ["note: " + n.replace("\n", "\\n") for n in result["notes"]]  # one line per note
    if result["labels"]:
        lines.append("labels: " + ", ".join(f"{k} ({v})" for k, v in result["labels"].items()))
    stats = result["stats"]
    lines.append(f"split: {stats['split']['train']} train / {stats['split']['held_out']} held out")
    lines.append(f"duplicates: {stats['duplicates']['count']}; train/held-out leakage: {stats['leakage']['count']}")
    if "same_prompt" in stats["duplicates"]:
        lines.append(f"prompts asked more than once: {stats['duplicates']['same_prompt']['count']}; held-out prompts "
                     f"also in training: {stats['leakage']['same_prompt']}")
    if result.get("dropped"):
        lines.append("dropped on purpose: " + ", ".join(f"{k} {v}" for k, v in result["dropped"].items()))
    tokens = stats.get("tokens")
    if tokens:
        for part in ("prompt", "completion", "total"):
            d = tokens[part]
            lines.append(f"{part} tokens: min {d['min']}, median {d['median']:g}, p95 {d['p95']}, max {d['max']}")
        lines.append(f"rows longer than --max-length {tokens['max_length']} (cut to it): {tokens['over_max_length']}, "
                     f"of which the prompt alone is that long, so nothing of the answer is learned: "
                     f"{tokens['completion_lost']}")
    lines.append(f"issues: {result['issue_count']}")
    for issue in result["issues"][:20]:
        lines.append(f"  {Issue(**issue).text()}")
    if result["issue_count"] > 20:
        lines.append(f"  ... and {result['issue_count'] - 20} more (use --json for all)")
    lines.append("usable: yes" if result["usable"] else "usable: NO")
    return "\n".join(lines)
