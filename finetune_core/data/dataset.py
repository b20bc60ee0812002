"""The data layer's facade: load, detect, normalise, validate, split, inspect.

Everything else (the Data tab, the trainer, evaluation, the CLI) calls these
functions; none of them raises on bad content - problems come back as
``Issue(row, column, message)`` in a ``DataReport``.

    python -m finetune_core inspect sample_data/fact_cards.jsonl --model bundled --json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from finetune_core.data.checks import (
    RowProblem, find_duplicates, find_leakage, missing_columns, mixed_type_issues, row_key,
)
from finetune_core.data.formats import (
    FORMATS, FormatSpec, check_template, collect_labels, default_classification_template, detect_format,
    normalize_row, template_fields,
)
from finetune_core.data.load import Issue, load_records

__all__ = [
    "Issue", "DataOptions", "DataReport", "prepare_data", "split_rows", "write_jsonl", "read_jsonl",
    "inspect_file", "inspect_main", "FORMATS",
]
MAX_ISSUES_IN_SUMMARY = 500


@dataclass
class DataOptions:
    """What the user chose: the file, the format (or auto) and the column mapping.

    For classification, ``prompt_column`` is the text column and
    ``completion_column`` the label column; a classification prompt template
    may use ``{labels}`` for the comma-separated label set.
    """

    path: str
    format: str = "auto"  # auto|prompt_completion|messages|sharegpt|alpaca|text|columns|classification
    prompt_column: str = ""
    completion_column: str = ""
    prompt_template: str = ""
    completion_template: str = ""
    system_prompt: str = ""
    max_file_mb: float = 100.0
    drop_bad_rows: bool = True


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

    @property
    def bad_rows(self) -> int:
        return len({i.row for i in self.issues if not i.file_wide})

    @property
    def usable(self) -> bool:
        return not self.fatal and bool(self.rows) and (self.drop_bad_rows or self.bad_rows == 0)

    def summary(self) -> dict:
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
            "usable": self.usable,
        }


def prepare_data(options: DataOptions) -> DataReport:
    """Load ``options.path`` and normalise it; never raises on bad content."""
    loaded = load_records(options.path, options.max_file_mb)
    report = DataReport(
        format=options.format, rows=[], issues=list(loaded.issues), total_rows=loaded.total_rows,
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
    for record, number in zip(loaded.records, loaded.row_numbers):
        try:
            row = normalize_row(record, spec)
        except RowProblem as exc:
            report.issues.append(Issue(number, exc.column, exc.message))
            continue
        except Exception as exc:  # noqa: BLE001 - a malformed row must never crash the app
            report.issues.append(Issue(number, None, f"cannot read this row: {type(exc).__name__}: {exc}"))
            continue
        report.rows.append(row)
        report.row_numbers.append(number)
    if spec.format == "classification":
        report.labels = dict(sorted(Counter(r["label"] for r in report.rows).items()))
    if not report.rows:
        first = next((i.message for i in report.issues if not i.file_wide), "")
        detail = f" (first problem: {first})" if first else ""
        report.issues.append(Issue(None, None, f"no usable rows: all {loaded.total_rows} rows have problems{detail}"))
        report.fatal = True
    return report


def mapping_issues(options: DataOptions) -> list[Issue]:
    """The templates and system prompt within the deployment's limits, checked before
    any row is rendered (each issue names the field)."""
    issues = []
    for name in ("prompt_template", "completion_template", "system_prompt"):
        try:
            check_template(name, str(getattr(options, name) or ""), placeholders=name != "system_prompt")
        except ValueError as exc:
            issues.append(Issue(None, None, str(exc).rstrip(".")))
    return issues


def resolve_spec(options: DataOptions, columns: list[str], records: list[dict], notes: list[str]):
    """Turn the user's choice (or auto) into a FormatSpec, or file-level issues."""
    fmt = options.format or "auto"
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
    spec.prompt_column = options.prompt_column or spec.prompt_column
    spec.completion_column = options.completion_column or spec.completion_column
    spec.prompt_template, spec.completion_template = options.prompt_template, options.completion_template
    return spec, _spec_issues(spec, columns, records, notes)


def _spec_issues(spec: FormatSpec, columns: list[str], records: list[dict], notes: list[str]) -> list[Issue]:
    """The columns and placeholders the spec needs must exist in the file."""
    what = f"the {spec.format} format"
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


def split_rows(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic train / held-out split, stratified by ``label`` when present.

    Exact duplicates stay on the same side (as far as the counts allow) so the
    held-out rows are not copies of training rows. Both lists keep file order.
    """
    if eval_fraction <= 0 or len(rows) < 2:
        return list(rows), []
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * eval_fraction)))
    strata: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        strata.setdefault(str(row.get("label", "")), []).append(i)
    quotas = _allocate(n_eval, {k: len(v) for k, v in strata.items()})
    rng = random.Random(seed)
    chosen: set[int] = set()
    for key in sorted(strata):
        chosen |= _pick_groups(rows, strata[key], quotas[key], rng)
    # Duplicate groups larger than a quota can leave the total short: top up row by row.
    rest = [i for i in range(len(rows)) if i not in chosen]
    rng.shuffle(rest)
    chosen |= set(rest[: max(0, n_eval - len(chosen))])
    train = [r for i, r in enumerate(rows) if i not in chosen]
    held = [r for i, r in enumerate(rows) if i in chosen]
    return train, held


def _allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split ``total`` across strata proportionally (largest remainder, ties by name)."""
    n = sum(sizes.values())
    exact = {k: total * s / n for k, s in sizes.items()}
    quotas = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), k))[: total - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def _pick_groups(rows: list[dict], indices: list[int], quota: int, rng: random.Random) -> set[int]:
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(row_key(rows[i]), []).append(i)
    order = sorted(groups)
    rng.shuffle(order)
    picked: set[int] = set()
    for key in order:
        if len(picked) + len(groups[key]) <= quota:
            picked.update(groups[key])
    return picked


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
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def inspect_file(options: DataOptions, tokenizer=None, max_length: int = 512, eval_fraction: float = 0.1,
                 seed: int = 42) -> dict:
    """Everything the Data tab and ``inspect`` show, as one JSON-able dict."""
    report = prepare_data(options)
    out = report.summary()
    stats: dict = {"duplicates": find_duplicates(report.rows, report.row_numbers)}
    train, held = split_rows(report.rows, eval_fraction, seed)
    stats["split"] = {"train": len(train), "held_out": len(held), "eval_fraction": eval_fraction, "seed": seed}
    stats["leakage"] = find_leakage(train, held)
    if tokenizer is not None and report.rows:
        from finetune_core.data.stats import token_stats

        stats["tokens"] = token_stats(report.rows, tokenizer, max_length)
    out["stats"] = stats
    out["preview"] = report.rows[:5]
    return out


def _parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m finetune_core inspect", description="Check a training data file.")
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
    return ap.parse_args(argv)


def _options_from_args(args: argparse.Namespace) -> DataOptions:
    options = DataOptions(path=args.file, format=args.format, prompt_template=args.prompt_template,
                          completion_template=args.completion_template, system_prompt=args.system_prompt,
                          max_file_mb=args.max_file_mb)
    sides = {"prompt": "prompt_column", "text": "prompt_column", "completion": "completion_column",
             "label": "completion_column"}
    for item in args.map:
        key, _, column = item.partition("=")
        if key.strip() not in sides or not column:
            raise SystemExit(f"--map expects prompt=COL or completion=COL, got {item!r}")
        setattr(options, sides[key.strip()], column)
    return options


def inspect_main(argv: list[str]) -> int:
    """``inspect FILE ...``: exit 0 when the file is usable, 2 when it is not."""
    args = _parse_args(argv)
    options = _options_from_args(args)
    tokenizer = None
    if args.model:
        from finetune_core.models.sources import ModelError, load_tokenizer

        try:
            tokenizer = load_tokenizer(args.model)
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    result = inspect_file(options, tokenizer, args.max_length)
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
    tokens = stats.get("tokens")
    if tokens:
        for part in ("prompt", "completion", "total"):
            d = tokens[part]
            lines.append(f"{part} tokens: min {d['min']}, median {d['median']:g}, p95 {d['p95']}, max {d['max']}")
        lines.append(f"rows over max_length {tokens['max_length']}: {tokens['over_max_length']} "
                     f"(prompt alone too long, dropped by the trainer: {tokens['completion_lost']})")
    lines.append(f"issues: {result['issue_count']}")
    for issue in result["issues"][:20]:
        lines.append(f"  {Issue(**issue).text()}")
    if result["issue_count"] > 20:
        lines.append(f"  ... and {result['issue_count'] - 20} more (use --json for all)")
    lines.append("usable: yes" if result["usable"] else "usable: NO")
    return "\n".join(lines)
