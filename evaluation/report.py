"""Stakeholder report for a run: one self-contained HTML page, and the same in Markdown.

    python -m finetune_core report --run RUN_DIR [--out DIR]

For people who will not open the app: what was trained on what, the config,
the training-loss curve, the base-vs-tuned metric table with each metric's 95%
interval and its sentence ("not distinguishable from no change on 45 rows"), the
biggest wins and losses from the per-example table, the general-skill check (with
the items that went from right to wrong first) and the pairwise judge when they
were run (evaluation/report_checks.py), other runs side by side when asked for
(`report(..., compare_with=runs)`, evaluation/run_compare.py), the parity verdict of each checked export ("Exported
models", finetune_core/export/parity.py), blind-vote results with their interval
when the run has a ``votes.jsonl``, and a line naming the checks not run. The HTML page carries its CSS inline and the curve as a
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

from evaluation.report_checks import Section, Table, headline_entry
from evaluation.significance import ci_text
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


def metric_header(sides: tuple[str, str] = ("base", "tuned")) -> list[str]:
    """The metric table's columns, named by the two sides compared."""
    a, b = sides
    return ["metric", a, b, f"{b} − {a}", "95% CI", f"{b} vs {a}"]


def metric_cells(entry: dict) -> list[str]:
    """One metric-table row as text cells: metric, base, tuned, signed delta, 95% CI, verdict (not escaped)."""
    return [str(entry["metric"]), number(entry.get("base")), number(entry.get("tuned")),
            number(entry.get("delta"), signed=True), ci_text(entry.get("interval")), entry["verdict"]]


def metric_sentences(facts: Facts) -> list[str]:
    """"metric: sentence" for each held-out metric saved with its interval (not escaped)."""
    return [f"{e['metric']}: {e['verdict_text']}" for e in facts.metrics if e.get("verdict_text")]


def vote_line(votes: dict) -> str:
    """One sentence summing up the blind votes (a `tally` dict): counts per winner and the tuned win rate,
    then the net preference for tuned with its interval when the dict has it (report_checks.vote_interval)."""
    rate = "—" if votes["tuned_win_rate"] is None else f"{votes['tuned_win_rate']:.0%}"
    line = (f"{votes['votes']} blind votes: tuned preferred {votes['tuned']}×, base {votes['base']}×, "
            f"tie {votes['tie']}×, both bad {votes['both_bad']}×. Tuned win rate over decided votes: {rate}.")
    if votes.get("verdict_text"):
        line += (f" Net preference for tuned (+1 tuned, 0 tie or both bad, -1 base): "
                 f"{votes['verdict_text']}.")
    return line


def not_run_line(facts: Facts) -> str:
    """Which checks this run has not had ("" when it has had them all), in plain text."""
    if not facts.not_run:
        return ""
    return "Not run for this run: " + ", ".join(facts.not_run) + "."


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
    lead = headline_entry(facts.metrics, facts.task)
    return text + "." + (f" {lead['metric']}: {lead['verdict_text']}." if lead else "")


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
.notrun{color:#6b7280;font-style:italic}
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
    """The base-vs-tuned metric table in HTML, then each metric's sentence; the verdict word is also the
    cell's CSS class (better/worse colours)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in metric_header(facts.sides))
    rows = []
    for entry in facts.metrics:
        name, base, tuned, delta, ci, verdict = (esc(c) for c in metric_cells(entry))
        kind = verdict if verdict in ("better", "worse") else "same"
        rows.append(f"<tr><td>{name}</td><td class='num'>{base}</td><td class='num'>{tuned}</td>"
                    f"<td class='num'>{delta}</td><td class='num'>{ci}</td><td class='{kind}'>{verdict}</td></tr>")
    said = "".join(f"<li>{esc(s)}</li>" for s in metric_sentences(facts))
    return f"<table class='metrics'><tr>{head}</tr>{''.join(rows)}</table>" + (f"<ul>{said}</ul>" if said else "")


def html_table(table: Table) -> str:
    """A report_checks.Table in HTML, every cell clipped and escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in table.header)
    rows = "".join("<tr>" + "".join(f"<td class='text'>{esc(clip(c))}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    return f"<table><tr>{head}</tr>{rows}</table>"


def html_section(section: Section) -> str:
    """A report_checks.Section in HTML: its heading, then its paragraphs and tables in order."""
    parts = [html_table(p) if isinstance(p, Table) else f"<p>{esc(p)}</p>" for p in section.parts]
    return f"<h2>{esc(section.title)}</h2>" + "".join(parts)


def html_examples(examples: list[dict], sides: tuple[str, str] = ("base", "tuned")) -> str:
    """Per-example rows (see `_examples`) as an HTML table, texts clipped and escaped; "None." when empty."""
    if not examples:
        return "<p class='sub'>None.</p>"
    head = "".join(f"<th>{esc(h)}</th>" for h in ("row", "prompt", "reference", *(f"{s} output" for s in sides), "Δ"))
    rows = "".join(
        f"<tr><td class='num'>{e['row']}</td>" + "".join(
            f"<td class='text'>{esc(clip(e[k]))}</td>" for k in ("input", "reference", "base", "tuned"))
        + f"<td class='num'>{e['delta']:+.3f}</td></tr>" for e in examples)
    return f"<table><tr>{head}</tr>{rows}</table>"


def pair_title(facts: Facts) -> str:
    """The evaluation's heading: "Base vs tuned", or the two sides by name ("support-sft vs support-dpo")."""
    return "Base vs tuned" if facts.sides == ("base", "tuned") else f"{facts.sides[0]} vs {facts.sides[1]}"


def html_eval(facts: Facts) -> str:
    """The HTML evaluation section: metric table plus biggest wins and losses, or the headline when not evaluated."""
    if not facts.metrics:
        return f"<h2>{esc(pair_title(facts))}</h2><p>{esc(headline(facts))}</p>"
    parts = [f"<h2>{esc(pair_title(facts))} ({esc(facts.task)}, {facts.eval_rows} held-out rows)</h2>",
             html_metrics(facts)]
    if facts.counts is not None:
        b = facts.sides[1]
        parts += [f"<h2>Biggest wins ({esc(b)} better)</h2>", html_examples(facts.wins, facts.sides),
                  f"<h2>Biggest losses ({esc(b)} worse)</h2>", html_examples(facts.losses, facts.sides)]
    return "".join(parts)


def render_html(facts: Facts) -> str:
    """The whole report as one self-contained HTML page (inline CSS, loss curve embedded as base64 PNG)."""
    curve = ("<p class='sub'>No loss was logged.</p>" if not facts.curve_png else
             f"<img alt='training loss curve' src='data:image/png;base64,"
             f"{base64.b64encode(facts.curve_png).decode('ascii')}'>")
    votes = esc(vote_line(facts.votes)) if facts.votes else "No blind votes were saved with this run."
    not_run = f"<p class='notrun'>{esc(not_run_line(facts))}</p>" if facts.not_run else ""
    body = (
        f"<h1>Fine-tuning report</h1><p class='sub'>Run {esc(facts.run_id)} · {esc(facts.model)} · "
        f"{esc(facts.state)}</p><div class='headline'>{esc(headline(facts))}</div>{not_run}"
        f"<h2>What was trained on what</h2>{html_pairs([('Base model', facts.model)] + facts.data)}"
        f"{html_section(facts.chain) if facts.chain else ''}"
        f"<h2>Training</h2>{html_pairs(facts.training)}{curve}"
        f"<h2>Configuration</h2>{html_pairs(facts.config)}"
        f"{html_eval(facts)}{''.join(html_section(s) for s in facts.checks)}"
        f"<h2>Blind A/B votes</h2><p>{votes}</p>"
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


def md_examples(examples: list[dict], sides: tuple[str, str] = ("base", "tuned")) -> str:
    """Per-example rows as a Markdown table, texts clipped and made inert; "None." when empty."""
    if not examples:
        return "None."
    rows = [[str(e["row"]), *(md(clip(e[k])) for k in ("input", "reference", "base", "tuned")),
             f"{e['delta']:+.3f}"] for e in examples]
    return md_table(["row", "prompt", "reference", *(md(f"{s} output") for s in sides), "Δ"], rows)


def md_metrics(facts: Facts) -> str:
    """The base-vs-tuned metric table in Markdown (the metric name made inert), then each metric's sentence."""
    rows = [[md(c) if i == 0 else c for i, c in enumerate(metric_cells(e))] for e in facts.metrics]
    said = "".join(f"\n- {md(s)}" for s in metric_sentences(facts))
    return md_table([md(h) for h in metric_header(facts.sides)], rows) + (f"\n{said}" if said else "")


def md_section(section: Section, level: str = "##") -> str:
    """A report_checks.Section in Markdown: its heading at `level`, then paragraphs and tables (all inert)."""
    parts = [f"{level} {md(section.title)}\n"]
    for part in section.parts:
        if isinstance(part, Table):
            parts.append(md_table([md(h) for h in part.header], [[md(clip(c)) for c in row] for row in part.rows]))
        else:
            parts.append(md(part))
        parts.append("")
    return "\n".join(parts)


def md_pairs(pairs: list[tuple[str, str]]) -> str:
    """(label, value) pairs as a headerless two-column Markdown table; both sides made inert."""
    return md_table(["", ""], [[md(k), md(v)] for k, v in pairs])


def md_eval(facts: Facts, level: str = "##") -> str:
    """The Markdown evaluation section, its headings at `level` (the Markdown "#" marks)."""
    if not facts.metrics:
        return f"{level} {md(pair_title(facts))}\n\n{headline(facts)}\n"
    parts = [f"{level} {md(pair_title(facts))} ({md(facts.task)}, {facts.eval_rows} held-out rows)\n",
             md_metrics(facts)]
    if facts.counts is not None:
        b = md(facts.sides[1])
        parts += [f"\n{level} Biggest wins ({b} better)\n", md_examples(facts.wins, facts.sides),
                  f"\n{level} Biggest losses ({b} worse)\n", md_examples(facts.losses, facts.sides)]
    return "\n".join(parts) + "\n"


def render_markdown(facts: Facts, curve_file: str | None = CURVE_FILE) -> str:
    """The whole report in Markdown. The loss curve is linked as `curve_file`, which the caller must write
    beside it (`report` does); None leaves the image out."""
    curve = f"![Training loss]({curve_file})" if facts.curve_png and curve_file else "No loss was logged."
    votes = md(vote_line(facts.votes)) if facts.votes else "No blind votes were saved with this run."
    not_run = f"*{md(not_run_line(facts))}*\n" if facts.not_run else ""
    return "\n".join([
        "# Fine-tuning report\n", f"Run `{facts.run_id}` · {md(facts.model)} · {md(facts.state)}\n",
        f"> {md(headline(facts))}\n", not_run, "## What was trained on what\n",
        md_pairs([("Base model", facts.model)] + facts.data), "", *([md_section(facts.chain)] if facts.chain else []),
        "\n## Training\n", md_pairs(facts.training),
        "", curve, "\n## Configuration\n", md_pairs(facts.config), "", md_eval(facts),
        *(md_section(s) for s in facts.checks), "## Blind A/B votes\n", votes, "",
    ])


# -- files ----------------------------------------------------------------------------------------------
def report(run: Run, out_dir: str | Path, compare_with: list[Run] | tuple = ()) -> tuple[Path, Path]:
    """Write report.html (self-contained), report.md and, when there is a curve, loss_curve.png.
    `compare_with` (other runs, up to 7) adds a "Compared runs" section: this run beside them, the numbers
    each has and the settings that differ (evaluation/run_compare.py)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facts = gather(run)
    others = [r for r in compare_with if r.id != run.id]
    if others:
        from evaluation.run_compare import check_runs, comparison_section

        facts.checks.append(comparison_section(check_runs([run, *others])))
    if facts.curve_png:
        (out / CURVE_FILE).write_bytes(facts.curve_png)
    html_path, md_path = out / HTML_FILE, out / MD_FILE
    html_path.write_text(render_html(facts), encoding="utf-8")
    md_path.write_text(render_markdown(facts), encoding="utf-8")
    return html_path, md_path
