"""The checks saved with a run, read once for the Evaluate tab and the stakeholder report.

Besides the held-out evaluation (eval/), a run may hold two checks, each written
whole by its own backend: ``checks/benchmarks.json`` (general skills: base vs
tuned on ARC, HellaSwag, MMLU, with the items that flipped) and
``checks/judge.json`` (a pairwise judge, with one line per prompt in
``checks/judge_examples.jsonl``). This module reads them (`saved_check`,
`judge_examples`), says their intervals in words (`judged`; the bounds by significance.ci_text), and
turns them into report sections as plain data (`Section`, `Table`: unescaped
text) that evaluation/report.py renders as HTML and Markdown. The blind votes
get their interval here too (`vote_interval`).

    >>> judged({"delta": 0.02, "verdict_text": "not distinguishable from no change on 45 rows (+0.020, ...)"})
    'no clear change'
    >>> judged({"delta": 0.5})  # saved before intervals existed
    'better'
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.checks import CHECKS_DIR, read_check
from evaluation.scoring import HEADLINE
from evaluation.significance import ci_text
from finetune_core.runs.store import Run

JUDGE_EXAMPLES = "judge_examples.jsonl"
FLIPS_SHOWN = 5  # flipped items a report lists per direction (the Evaluate tab shows more)
HEADLINE_METRICS = ("accuracy", "rougeL", "exact_match")  # the metric a held-out headline names, in order
NOT_RUN = {"benchmarks": "general skills (did it forget anything?)", "judge": "pairwise judge"}


def saved_check(run: Run, name: str) -> dict | None:
    """The saved check `name` ("benchmarks" or "judge") of the run, or None when it was not run
    (or its file cannot be read)."""
    return read_check(run, name)


def judge_examples(run: Run, limit: int | None = None) -> list[dict]:
    """The judge's per-prompt lines (prompt, both answers, both verdicts, outcome), in file order;
    lines that do not parse are skipped."""
    path = run.path / CHECKS_DIR / JUDGE_EXAMPLES
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
        if limit is not None and len(lines) >= limit:
            break
    return lines


# -- intervals in words ---------------------------------------------------------------------------
def judged(entry: dict) -> str:
    """The verdict word for a base-vs-tuned entry: from its sentence (``verdict_text``) when it has one
    ("better", "worse", "no clear change" when the interval includes zero), else from its delta alone
    (evaluation.compare.verdict: better, worse, same, or "—")."""
    from evaluation.compare import verdict

    text = str(entry.get("verdict_text") or "")
    if not text:
        return verdict(entry)
    for start, word in (("better", "better"), ("worse", "worse"), ("not distinguishable", "no clear change")):
        if text.startswith(start):
            return word
    return "—"  # "no rows to compare"


def headline_entry(summary: list[dict], task: str = "") -> dict | None:
    """The held-out metric a headline names: accuracy, else ROUGE-L, else exact match, else the first
    metric with a sentence; None when no entry has a sentence (results saved before intervals)."""
    worded = [e for e in summary or [] if e.get("verdict_text")]
    preferred = (HEADLINE[task],) if task in HEADLINE else HEADLINE_METRICS
    for name in (*preferred, *HEADLINE_METRICS):
        found = next((e for e in worded if e.get("metric") == name), None)
        if found:
            return found
    return worded[0] if worded else None


def vote_interval(votes: list[dict]) -> dict | None:
    """The blind votes' net preference for tuned (+1 tuned, 0 tie or both bad, -1 base) with its interval
    and sentence: {"interval": Interval.to_dict(), "verdict_text": str}; None without votes."""
    from evaluation.significance import describe, outcome_interval

    if not votes:
        return None
    score = {"tuned": 1, "base": -1}
    iv = outcome_interval([score.get(v.get("winner"), 0) for v in votes])
    return {"interval": iv.to_dict(), "verdict_text": describe(iv, "votes")}


# -- report sections as data ----------------------------------------------------------------------
@dataclass
class Table:
    """A table of plain-text cells (the renderer escapes them)."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One report section: a heading, then paragraphs (str) and tables, in order."""

    title: str
    parts: list = field(default_factory=list)


def counted(n: int, word: str) -> str:
    """A count with its noun ("1 item", "2 items")."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _num(value, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def benchmark_rows(data: dict) -> list[list[str]]:
    """benchmark, metric, base, tuned, tuned − base, 95% CI, in words: one row per benchmark and metric."""
    rows = []
    for bench in data.get("benchmarks") or []:
        for m in bench.get("metrics") or []:
            rows.append([str(bench.get("title") or bench.get("name")), str(m.get("metric")), _num(m.get("base")),
                         _num(m.get("tuned")), _num(m.get("delta"), signed=True), ci_text(m.get("interval")),
                         str(m.get("verdict_text") or judged(m))])
    return rows


def flipped(data: dict, direction: str) -> list[dict]:
    """Every flipped item of one direction ("right_to_wrong" or "wrong_to_right") across benchmarks,
    each with its benchmark's title as "benchmark"."""
    items = []
    for bench in data.get("benchmarks") or []:
        for item in (bench.get("flips") or {}).get(direction) or []:
            if isinstance(item, dict):
                items.append({**item, "benchmark": str(bench.get("title") or bench.get("name"))})
    return items


def _flip_table(items: list[dict]) -> Table:
    return Table(["benchmark", "question", "right answer", "base picked", "tuned picked"],
                 [[i["benchmark"], str(i.get("question", "")), str(i.get("answer", "")),
                   str(i.get("base_choice", "")), str(i.get("tuned_choice", ""))] for i in items[:FLIPS_SHOWN]])


def source_label(source) -> str:
    """Where benchmark data came from, without the server's folders: a local folder by its name.

    >>> source_label("local folder /srv/studio/datasets"), source_label("Hugging Face Hub")
    ('local folder datasets', 'Hugging Face Hub')
    """
    text = str(source or "?")
    if text.startswith("local folder "):
        return "local folder " + (Path(text.removeprefix("local folder ")).name or "?")
    return text


def benchmarks_about(data: dict) -> str:
    """One sentence on how the general-skill check was run: benchmarks, items, shots, data, harness."""
    names = ", ".join(f"{b.get('title') or b.get('name')} ({b.get('items', '?')} items)"
                      for b in data.get("benchmarks") or [])
    shots = data.get("num_fewshot") or 0
    return (f"Base and tuned scored by log-likelihood on {names}, {shots}-shot, with lm-evaluation-harness "
            f"{data.get('lm_eval_version') or '?'}; data from {source_label(data.get('source'))}.")


def benchmark_section(data: dict) -> Section:
    """The general-skill check as a report section: the table, then the right → wrong items first."""
    lost, gained = flipped(data, "right_to_wrong"), flipped(data, "wrong_to_right")
    parts = [benchmarks_about(data),
             Table(["benchmark", "metric", "base", "tuned", "tuned − base", "95% CI", "in words"],
                   benchmark_rows(data)),
             f"{counted(len(lost), 'item')} went from right to wrong after fine-tuning, {len(gained)} from wrong to right "
             "(by each benchmark's main metric)."]
    for title, items in (("Right → wrong", lost), ("Wrong → right", gained)):
        if items:
            shown = f", the first {FLIPS_SHOWN} shown" if len(items) > FLIPS_SHOWN else ""
            parts += [f"{title} ({counted(len(items), 'item')}{shown}):", _flip_table(items)]
    return Section("General skills (did it forget anything?)", parts)


def judge_about(data: dict) -> str:
    """Who judged what: the judge (local model or endpoint host, never a key) and the prompts."""
    judge = data.get("judge") or {}
    if judge.get("kind") == "endpoint":
        who = f"{judge.get('model') or 'a model'} at {judge.get('url_host') or 'an OpenAI-compatible endpoint'}"
    else:
        who = f"the local model {judge.get('model') or '?'}"
    return (f"Judge: {who}, comparing base and tuned answers in both orders (a verdict that flips with the "
            f"order counts as a tie); prompts: {data.get('prompt_set') or '?'}.")


def judge_line(data: dict) -> str:
    """Wins, ties and losses of tuned against base with the win rate and the interval's sentence."""
    rate = data.get("win_rate")
    line = (f"Tuned vs base on {data.get('items', 0)} prompts: {data.get('wins', 0)} wins, "
            f"{data.get('ties', 0)} ties, {data.get('losses', 0)} losses"
            + (f" (win rate {rate:.2f}, ties counted as half)." if isinstance(rate, (int, float)) else "."))
    if data.get("verdict_text"):
        line += f" Net preference for tuned: {data['verdict_text']}."
    return line


def agreement_line(data: dict) -> str:
    """How often the judge agreed with the blind votes cast on the same prompts."""
    agree = data.get("votes_agreement")
    if not isinstance(agree, dict) or not agree.get("compared"):
        return "No blind votes were cast on these prompts, so the judge could not be compared with people."
    return (f"Agreement with the blind votes: {agree.get('agree', 0)} of {agree['compared']} prompts "
            f"({agree.get('rate', 0):.0%}).")


def category_rows(data: dict) -> list[list[str]]:
    """category, prompts, wins, ties, losses, win rate: one row per category."""
    return [[str(c.get("category")), str(c.get("items", 0)), str(c.get("wins", 0)), str(c.get("ties", 0)),
             str(c.get("losses", 0)), f"{c.get('win_rate', 0):.2f}"] for c in data.get("per_category") or []]


def judge_section(data: dict) -> Section:
    """The pairwise judge as a report section: the result with its interval, per category, agreement."""
    parts = [judge_line(data), judge_about(data)]
    rows = category_rows(data)
    if rows:
        parts.append(Table(["category", "prompts", "wins", "ties", "losses", "win rate"], rows))
    parts.append(agreement_line(data))
    return Section("Judge (pairwise)", parts)


def check_sections(run: Run) -> tuple[list[Section], list[str]]:
    """(the report sections of the checks the run has, the names of those it has not run)."""
    sections, missing = [], []
    for name, make in (("benchmarks", benchmark_section), ("judge", judge_section)):
        data = saved_check(run, name)
        if data is None:
            missing.append(NOT_RUN[name])
        else:
            sections.append(make(data))
    return sections, missing


def export_section(run: Run) -> Section | None:
    """"Exported models": the latest parity verdict of each export of the run (None when none was checked)."""
    from finetune_core.export.parity import load_parity

    results = load_parity(run)
    if not results:
        return None
    rows = [[target, result.file or "—", result.verdict()] for target, result in sorted(results.items())]
    return Section("Exported models", ["Each exported model answered held-out prompts greedily and was compared "
                                       "with the tuned model in the app (its latest check per export).",
                                       Table(["export", "file", "parity"], rows)])


__all__ = ["CHECKS_DIR", "JUDGE_EXAMPLES", "NOT_RUN", "Section", "Table", "saved_check", "judge_examples",
           "counted", "judged", "headline_entry", "vote_interval", "benchmark_rows", "flipped",
           "source_label", "benchmarks_about", "benchmark_section", "judge_about", "judge_line", "agreement_line",
           "category_rows", "judge_section", "check_sections", "export_section"]
