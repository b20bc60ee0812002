"""Stakeholder report for a run: one self-contained HTML page, and the same in Markdown.

    python -m finetune_core report --run RUN_DIR [--out DIR]

For people who will not open the app: what was trained on what, the config,
the training-loss curve, the base-vs-tuned metric table, the biggest wins and
losses from the per-example table, and blind-vote results when the run has a
``votes.jsonl``. The HTML page carries its CSS inline and the curve as a
base64 PNG, so it can be mailed as one file; the Markdown refers to the PNG
written beside it.

Everything users or models wrote (file names, prompts, outputs, labels) is
HTML-escaped in the page and made inert in the Markdown: a model output
``<script>`` is shown as text, never run.

`gather(run)` (report_facts.py) collects the facts once; the HTML, the Markdown and the model
card (model_card.py) render them.
"""
from __future__ import annotations

import base64
import html
import re
import time
from pathlib import Path

from evaluation.report_facts import CURVE_FILE, HTML_FILE, MAX_CELL, MD_FILE, Facts, gather
from finetune_core.runs.store import Run


# -- formatting ---------------------------------------------------------------------------------
def number(value, signed: bool = False) -> str:
    """A metric value to 4 decimals (with its sign when `signed`), or "—" for None."""
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def clip(text: str, limit: int = MAX_CELL) -> str:
    """`text` as a string, cut to `limit` characters with " …" appended when longer."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + " …"


def metric_cells(entry: dict) -> list[str]:
    """One metric-table row as text cells: metric, base, tuned, signed delta, verdict (not escaped)."""
    return [str(entry["metric"]), number(entry.get("base")), number(entry.get("tuned")),
            number(entry.get("delta"), signed=True), entry["verdict"]]


def vote_line(votes: dict) -> str:
    """One sentence summing up the blind votes (a `tally` dict): counts per winner and the tuned win rate."""
    rate = "—" if votes["tuned_win_rate"] is None else f"{votes['tuned_win_rate']:.0%}"
    return (f"{votes['votes']} blind votes: tuned preferred {votes['tuned']}×, base {votes['base']}×, "
            f"tie {votes['tie']}×, both bad {votes['both_bad']}×. Tuned win rate over decided votes: {rate}.")


def headline(facts: Facts) -> str:
    """The one-line verdict at the top of the report (plain text, not escaped): metrics tuned beat
    base on and per-example wins/ties/losses, or how to evaluate when the run was not."""
    if not facts.metrics:
        return "Not evaluated yet: run `python -m evaluation --run RUN_DIR` to compare base and tuned."
    better = sum(1 for m in facts.metrics if m["verdict"] == "better")
    text = f"Tuned beat base on {better} of {len(facts.metrics)} metrics over {facts.eval_rows} held-out rows"
    if facts.counts:
        wins, ties, losses = facts.counts
        text += f" (per example: {wins} wins, {ties} ties, {losses} losses)"
    return text + "."


# -- HTML -------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#1f2937;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #e5e7eb;padding-bottom:.2em;margin-top:1.6em}
.sub{color:#6b7280}.headline{background:#eff6ff;border-left:4px solid #2563eb;padding:.7em 1em;margin:1em 0}
table{border-collapse:collapse;width:100%;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #e5e7eb;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#f9fafb}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.text{white-space:pre-wrap;word-break:break-word;max-width:320px}
.better{color:#15803d;font-weight:600}.worse{color:#b91c1c;font-weight:600}
img{max-width:100%}footer{margin-top:2em;color:#9ca3af;font-size:.85em}
"""


def esc(value) -> str:
    """`value` as text safe inside HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def html_pairs(pairs: list[tuple[str, str]]) -> str:
    """(label, value) pairs as a two-column HTML table; both sides escaped."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def html_metrics(facts: Facts) -> str:
    """The base-vs-tuned metric table in HTML; the verdict is also the cell's CSS class (better/worse colours)."""
    head = "".join(f"<th>{h}</th>" for h in ("metric", "base", "tuned", "tuned − base", "tuned vs base"))
    rows = []
    for entry in facts.metrics:
        name, base, tuned, delta, verdict = (esc(c) for c in metric_cells(entry))
        rows.append(f"<tr><td>{name}</td><td class='num'>{base}</td><td class='num'>{tuned}</td>"
                    f"<td class='num'>{delta}</td><td class='{verdict}'>{verdict}</td></tr>")
    return f"<table class='metrics'><tr>{head}</tr>{''.join(rows)}</table>"


def html_examples(examples: list[dict]) -> str:
    """Per-example rows (see `_examples`) as an HTML table, texts clipped and escaped; "None." when empty."""
    if not examples:
        return "<p class='sub'>None.</p>"
    head = "".join(f"<th>{h}</th>" for h in ("row", "prompt", "reference", "base output", "tuned output", "Δ"))
    rows = "".join(
        f"<tr><td class='num'>{e['row']}</td>" + "".join(
            f"<td class='text'>{esc(clip(e[k]))}</td>" for k in ("input", "reference", "base", "tuned"))
        + f"<td class='num'>{e['delta']:+.3f}</td></tr>" for e in examples)
    return f"<table><tr>{head}</tr>{rows}</table>"


def html_eval(facts: Facts) -> str:
    """The HTML evaluation section: metric table plus biggest wins and losses, or the headline when not evaluated."""
    if not facts.metrics:
        return f"<h2>Base vs tuned</h2><p>{esc(headline(facts))}</p>"
    parts = [f"<h2>Base vs tuned ({esc(facts.task)}, {facts.eval_rows} held-out rows)</h2>", html_metrics(facts)]
    if facts.counts is not None:
        parts += ["<h2>Biggest wins (tuned better)</h2>", html_examples(facts.wins),
                  "<h2>Biggest losses (tuned worse)</h2>", html_examples(facts.losses)]
    return "".join(parts)


def render_html(facts: Facts) -> str:
    """The whole report as one self-contained HTML page (inline CSS, loss curve embedded as base64 PNG)."""
    curve = ("<p class='sub'>No loss was logged.</p>" if not facts.curve_png else
             f"<img alt='training loss curve' src='data:image/png;base64,"
             f"{base64.b64encode(facts.curve_png).decode('ascii')}'>")
    votes = esc(vote_line(facts.votes)) if facts.votes else "No blind votes were saved with this run."
    body = (
        f"<h1>Fine-tuning report</h1><p class='sub'>Run {esc(facts.run_id)} · {esc(facts.model)} · "
        f"{esc(facts.state)}</p><div class='headline'>{esc(headline(facts))}</div>"
        f"<h2>What was trained on what</h2>{html_pairs([('Base model', facts.model)] + facts.data)}"
        f"<h2>Training</h2>{html_pairs(facts.training)}{curve}"
        f"<h2>Configuration</h2>{html_pairs(facts.config)}"
        f"{html_eval(facts)}<h2>Blind A/B votes</h2><p>{votes}</p>"
        f"<footer>Generated {esc(time.strftime('%Y-%m-%d %H:%M'))} by the fine-tuning studio.</footer>"
    )
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Fine-tuning report · {esc(facts.run_id)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>")


# -- Markdown ---------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
# GFM turns bare URLs into links: break the pattern so a model's output cannot become a link.
_AUTOLINK = re.compile(r"(?i)(://|www\.)")


def md(value) -> str:
    """User or model text made inert in Markdown: HTML escaped, markup characters
    backslashed, line breaks kept inside table cells."""
    text = html.escape(str(value), quote=False)
    text = _AUTOLINK.sub(lambda m: m.group(1).replace(":", "&#58;").replace(".", "&#46;"), text)
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\r", "").replace("\n", "<br>")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table; cells are used as given, so the caller makes them inert with `md`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def md_examples(examples: list[dict]) -> str:
    """Per-example rows as a Markdown table, texts clipped and made inert; "None." when empty."""
    if not examples:
        return "None."
    rows = [[str(e["row"]), *(md(clip(e[k])) for k in ("input", "reference", "base", "tuned")),
             f"{e['delta']:+.3f}"] for e in examples]
    return md_table(["row", "prompt", "reference", "base output", "tuned output", "Δ"], rows)


def md_metrics(facts: Facts) -> str:
    """The base-vs-tuned metric table in Markdown (the metric name made inert)."""
    rows = [[md(c) if i == 0 else c for i, c in enumerate(metric_cells(e))] for e in facts.metrics]
    return md_table(["metric", "base", "tuned", "tuned − base", "tuned vs base"], rows)


def md_pairs(pairs: list[tuple[str, str]]) -> str:
    """(label, value) pairs as a headerless two-column Markdown table; both sides made inert."""
    return md_table(["", ""], [[md(k), md(v)] for k, v in pairs])


def md_eval(facts: Facts, level: str = "##") -> str:
    """The Markdown evaluation section, its headings at `level` (the Markdown "#" marks)."""
    if not facts.metrics:
        return f"{level} Base vs tuned\n\n{headline(facts)}\n"
    parts = [f"{level} Base vs tuned ({md(facts.task)}, {facts.eval_rows} held-out rows)\n", md_metrics(facts)]
    if facts.counts is not None:
        parts += [f"\n{level} Biggest wins (tuned better)\n", md_examples(facts.wins),
                  f"\n{level} Biggest losses (tuned worse)\n", md_examples(facts.losses)]
    return "\n".join(parts) + "\n"


def render_markdown(facts: Facts, curve_file: str | None = CURVE_FILE) -> str:
    """The whole report in Markdown. The loss curve is linked as `curve_file`, which the caller must write
    beside it (`report` does); None leaves the image out."""
    curve = f"![Training loss]({curve_file})" if facts.curve_png and curve_file else "No loss was logged."
    votes = vote_line(facts.votes) if facts.votes else "No blind votes were saved with this run."
    return "\n".join([
        "# Fine-tuning report\n", f"Run `{facts.run_id}` · {md(facts.model)} · {md(facts.state)}\n",
        f"> {headline(facts)}\n", "## What was trained on what\n",
        md_pairs([("Base model", facts.model)] + facts.data), "\n## Training\n", md_pairs(facts.training),
        "", curve, "\n## Configuration\n", md_pairs(facts.config), "", md_eval(facts),
        "## Blind A/B votes\n", votes, "",
    ])


# -- files ----------------------------------------------------------------------------------------------
def report(run: Run, out_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html (self-contained), report.md and, when there is a curve, loss_curve.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facts = gather(run)
    if facts.curve_png:
        (out / CURVE_FILE).write_bytes(facts.curve_png)
    html_path, md_path = out / HTML_FILE, out / MD_FILE
    html_path.write_text(render_html(facts), encoding="utf-8")
    md_path.write_text(render_markdown(facts), encoding="utf-8")
    return html_path, md_path
