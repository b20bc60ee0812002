"""HTML views of an evaluation: the summary table and one card per held-out example.

The summary (and the general-skill table, ui/eval_checks.py) shows each metric
with base, tuned, the change and its 95% interval, and under a metric saved with
an interval, its sentence ("not distinguishable from no change on 45 rows ...");
the headline metric's sentence stands above the table.

A person compares a row's reference, base output and tuned output, so each
card shows those three side by side (stacked on a phone), under the row number,
its scores and the input. Inputs often share a long instruction ("Classify the
text into one of: ...") and an ending, and differ in between: the card previews
the part between what every input shares, and the whole input opens on a click.

Everything from a data file or a model is shown as text, never as markup:
`safe_text` escapes it, and also turns the characters of Gradio's HTML
templates (`$`, braces, backquote) into entities so no template reads them.
The CSS goes to the `gr.HTML` component's `css_template` (scoped to it).

    >>> safe_text("<b>${x}</b>")
    '&lt;b&gt;&#36;&#123;x&#125;&lt;/b&gt;'
    >>> preview_span(["Classify: a", "Classify: b"])
    (0, 0)
    >>> ask = "Classify the text into one of: x, y, z.\\nText: {}\\nAnswer with the label only."
    >>> texts = [ask.format("hi"), ask.format("bye")]
    >>> start, end = preview_span(texts)
    >>> texts[0][start:len(texts[0]) - end]
    'Text: hi'
"""
from __future__ import annotations

import html
import os

import pandas as pd

from evaluation.report_checks import headline_entry, judged
from evaluation.significance import ci_text

CARD_LIMIT = 12  # cards drawn at once; the table below the cards has every row
PREVIEW_CHARS = 180  # of an input shown before "show the whole input"
SHARED_MIN = 24  # a prefix every input shares is left out of the previews when at least this long
SUMMARY_COLUMNS = ["metric", "base", "tuned", "tuned − base", "95% CI"]
VERDICT_CLASS = {"no clear change": "unclear"}  # a verdict word's CSS class (the others are one word)
TEMPLATE_CHARS = {ord("$"): "&#36;", ord("{"): "&#123;", ord("}"): "&#125;", ord("`"): "&#96;"}

CSS = """
.ev-summary-wrap {overflow-x: auto;}
.ev-summary {width: 100%; border-collapse: collapse; font-size: 14px;}
.ev-summary caption {text-align: left; font-weight: 600; padding: 0 0 6px 0;}
.ev-summary th, .ev-summary td {padding: 5px 6px; text-align: left; vertical-align: top; border: none;
  border-bottom: 1px solid var(--border-color-primary);}
.ev-summary th {font-weight: 600; white-space: normal; overflow-wrap: normal;}
.ev-summary td.ev-metric {overflow-wrap: anywhere;}
.ev-summary td.ev-num {font-variant-numeric: tabular-nums;}
.ev-summary tr.ev-said td {border-bottom: none; padding-bottom: 0;}
/* a phone: five or six columns in about 300 px, numbers whole */
@media (max-width: 480px) {.ev-summary {font-size: 13px;} .ev-summary th, .ev-summary td {padding: 4px 3px;}}
.ev-summary td.ev-why {padding-top: 0; font-size: 0.9em; color: var(--body-text-color-subdued);}
.ev-headline {margin: 0 0 8px 0; padding: 6px 10px; border-left: 4px solid var(--color-accent);
  background: var(--background-fill-secondary); overflow-wrap: anywhere;}
.ev-better {color: #15803d; font-weight: 600;}
.ev-worse {color: #b91c1c; font-weight: 600;}
.ev-note {margin: 0 0 8px 0; color: var(--body-text-color-subdued);}
.ev-card {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 12px;
  margin: 0 0 10px 0; background: var(--block-background-fill);}
.ev-head {margin-bottom: 6px;}
.ev-win .ev-verdict {color: #15803d;}
.ev-loss .ev-verdict {color: #b91c1c;}
.ev-input {margin-bottom: 8px; overflow-wrap: anywhere;}
.ev-input summary {cursor: pointer;}
.ev-full {white-space: pre-wrap; margin-top: 4px;}
.ev-sides {display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 8px;}
.ev-side {min-width: 0; border-radius: 6px; padding: 6px 8px; background: var(--background-fill-secondary);}
.ev-k {font-size: 0.8em; font-weight: 600; color: var(--body-text-color-subdued);}
.ev-text {white-space: pre-wrap; overflow-wrap: anywhere;}
.ev-empty {font-style: italic; color: var(--body-text-color-subdued);}
.ev-flip-lists {display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 320px), 1fr)); gap: 12px;
  margin-top: 10px;}
.ev-flips {min-width: 0;}
.ev-flips h4 {margin: 4px 0 6px 0;}
.ev-flip {margin-bottom: 8px;}
.ev-picks {margin-top: 4px; font-size: 0.92em; overflow-wrap: anywhere;}
"""


def safe_text(value) -> str:
    """Text from a file or a model as HTML that shows it literally (see the module docstring)."""
    return html.escape(str(value), quote=True).translate(TEMPLATE_CHARS)


def _breakable(name: str) -> str:
    """A metric name that may wrap after "/" or "_" (accuracy/delivery_delay) instead of widening its column."""
    return safe_text(name).replace("/", "/<wbr>").replace("_", "_<wbr>")


def _score(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def metric_row(name_html: str, entry: dict) -> str:
    """One metric as table rows: name, base, tuned, the change with its verdict word (from the entry's
    sentence when it has one), the 95% interval; then the sentence itself on a row of its own."""
    word = judged(entry)
    change = _score(entry.get("delta"), signed=True)
    sentence = entry.get("verdict_text")
    said = ' class="ev-said"' if sentence else ""  # no rule between a metric and its sentence
    row = (f'<tr{said}><td class="ev-metric">{name_html}</td>'
           f'<td class="ev-num">{_score(entry.get("base"))}</td><td class="ev-num">{_score(entry.get("tuned"))}</td>'
           f'<td class="ev-num"><span class="ev-{VERDICT_CLASS.get(word, word)}">{change} {safe_text(word)}</span>'
           f'</td><td class="ev-num">{safe_text(ci_text(entry.get("interval")))}</td></tr>')
    if sentence:
        row += f'<tr><td class="ev-why" colspan="{len(SUMMARY_COLUMNS)}">{safe_text(sentence)}</td></tr>'
    return row


def side_columns(labels: tuple[str, str] = ("base", "tuned")) -> list[str]:
    """The summary's side and change column headings for sides named `labels` (side A, side B).

    >>> side_columns(), side_columns(("SFT", "SFT + DPO"))
    (['base', 'tuned', 'tuned − base'], ['SFT', 'SFT + DPO', 'B − A'])
    """
    return SUMMARY_COLUMNS[1:4] if tuple(labels) == ("base", "tuned") else [labels[0], labels[1], "B − A"]


def metric_table(rows: list[str], first: str, caption: str, table_id: str,
                 labels: tuple[str, str] = ("base", "tuned")) -> str:
    """`metric_row`s as a five-column table that fits a phone (scrolls sideways inside its box if not);
    `labels` name the side columns (side A, side B)."""
    head = "".join(f"<th>{safe_text(h)}</th>" for h in [first, *side_columns(labels), SUMMARY_COLUMNS[4]])
    return (f'<div class="ev-summary-wrap" id="{table_id}"><table class="ev-summary"><caption>{caption}'
            f'</caption><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def headline_html(entry: dict | None, element_id: str = "eval-headline") -> str:
    """The headline metric's sentence as a plain line ("accuracy: better on 45 rows (...)"), or ""."""
    if not entry:
        return ""
    return (f'<p class="ev-headline" id="{element_id}"><b>{safe_text(entry["metric"])}</b>: '
            f'{safe_text(entry["verdict_text"])}</p>')


def summary_html(summary: list[dict] | None, task: str = "", labels: tuple[str, str] = ("base", "tuned")) -> str:
    """The summary (a Comparison's entries) as an HTML table that fits a phone: metric with the way it
    points (↑ or ↓), base, tuned, the change with its verdict, the 95% interval (— for results saved
    before intervals) and each metric's sentence; above it, the headline metric's sentence
    (`report_checks.headline_entry`); "" when there is no entry. `labels` name the sides (A, B)."""
    rows = [metric_row(f'{_breakable(e["metric"])} {"↑" if e.get("higher_is_better", True) else "↓"}', e)
            for e in summary or []]
    if not rows:
        return ""
    lead = headline_html(headline_entry(summary, task))
    a, b = (safe_text(x) for x in labels)
    unclear = (f"no clear change: the 95% interval includes zero, so the rows do not tell {b} from {a} · "
               if any(e.get("verdict_text") for e in summary) else "")
    return (lead + metric_table(rows, SUMMARY_COLUMNS[0], "Summary", "eval-summary-table", labels)
            + f'<p class="ev-note">↑ higher is better · ↓ lower is better (loss, perplexity) · {unclear}'
            f'better / worse: {b} vs {a}, whichever way the metric points</p>')


def preview_span(inputs: list[str]) -> tuple[int, int]:
    """(start, end) of the part of each input that tells it apart: what comes after the prefix all of them
    share and before the suffix all of them share (cut at a line break, else a space). A shared part
    shorter than SHARED_MIN characters is kept; `end` counts from the end of each text (0: to the end)."""
    texts = [str(t) for t in inputs]
    if len(texts) < 2:
        return 0, 0
    prefix = os.path.commonprefix(texts)
    cut = prefix.rfind("\n") + 1 or prefix.rfind(" ") + 1
    start = cut if cut >= SHARED_MIN else 0
    suffix = os.path.commonprefix([t[start:][::-1] for t in texts])[::-1]
    found = [i for i in (suffix.find("\n"), suffix.find(" ")) if i >= 0]
    end = len(suffix) - min(found) if found else 0
    return start, (end if end >= SHARED_MIN else 0)


def _input_block(text: str, span: tuple[int, int]) -> str:
    """The input: whole when short, else a preview of its distinctive part that opens to the whole text."""
    start, end = span
    shown = text[start:len(text) - end].strip()
    if start == end == 0 and len(text) <= PREVIEW_CHARS:
        return (f'<div class="ev-input"><span class="ev-k">Input</span> '
                f'<span class="ev-text">{safe_text(text)}</span></div>')
    cut = shown if len(shown) <= PREVIEW_CHARS else shown[:PREVIEW_CHARS].rstrip() + "…"
    cut = ("…" if start else "") + cut + ("…" if end and not cut.endswith("…") else "")
    return (f'<details class="ev-input"><summary><span class="ev-k">Input</span> {safe_text(cut)}'
            f' <span class="ev-k">(click for the whole input)</span></summary>'
            f'<div class="ev-full">{safe_text(text)}</div></details>')


def side_html(kind: str, title: str, text: str) -> str:
    """One side of a card (reference, base or tuned): its title over the text, or "(no output)"."""
    body = (f'<div class="ev-text">{safe_text(text)}</div>' if str(text).strip()
            else '<div class="ev-text ev-empty">(no output)</div>')
    return f'<div class="ev-side ev-{kind}"><div class="ev-k">{title}</div>{body}</div>'


def _verdict(delta: float, tuned: str = "tuned") -> tuple[str, str]:
    if delta > 0:
        return "win", f"{tuned} better"
    if delta < 0:
        return "loss", f"{tuned} worse"
    return "tie", "same score"


def example_card(row: dict, span: tuple[int, int] = (0, 0), labels: tuple[str, str] = ("base", "tuned")) -> str:
    """One example (a row of `eval_views.examples_frame`) as a card: row number, verdict and scores,
    the input, then reference, side A's output and side B's (base and tuned) side by side."""
    plain = tuple(labels) == ("base", "tuned")
    titles = (("Base output (adapter off)", "Tuned output (adapter on)") if plain
              else (f"{safe_text(labels[0])} output", f"{safe_text(labels[1])} output"))
    kind, words = _verdict(float(row["delta"]), "tuned" if plain else labels[1])
    head = (f'<div class="ev-head"><b>Row {int(row["row"])}</b> · <span class="ev-verdict">{safe_text(words)}</span> · '
            f'score {float(row["base score"]):.2f} → {float(row["tuned score"]):.2f} '
            f'({float(row["delta"]):+.2f})</div>')
    sides = "".join((side_html("ref", "Reference", row["reference"]),
                     side_html("base", titles[0], row["base output"]),
                     side_html("tuned", titles[1], row["tuned output"])))
    return (f'<article class="ev-card ev-{kind}">{head}{_input_block(str(row["input"]), span)}'
            f'<div class="ev-sides">{sides}</div></article>')


def cards_html(table: pd.DataFrame, order: str = "", labels: tuple[str, str] = ("base", "tuned")) -> str:
    """The first CARD_LIMIT rows of the ordered per-example table as cards, with a line saying how many
    of how many are shown; "" when there are no examples."""
    if table is None or table.empty:
        return ""
    span = preview_span([str(t) for t in table["input"]])
    shown = table.head(CARD_LIMIT)
    note = (f"The first {len(shown)} of {len(table)} held-out rows" if len(table) > len(shown)
            else f"All {len(table)} held-out rows")
    note += f", {order[0].lower() + order[1:]}" if order else ""
    note += ". The table below has every row; the results files have them too."
    cards = "".join(example_card(row, span, labels) for row in shown.to_dict("records"))
    return f'<div class="ev-cards" id="eval-cards-list"><p class="ev-note">{safe_text(note)}</p>{cards}</div>'


__all__ = ["CSS", "CARD_LIMIT", "SUMMARY_COLUMNS", "cards_html", "example_card", "preview_span", "safe_text",
           "summary_html", "metric_row", "metric_table", "headline_html"]
