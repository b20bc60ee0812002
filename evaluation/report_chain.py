"""The chain of runs in a stakeholder report: base -> SFT run -> preference run, step by step.

A run that started from another run (``parent_run``) is one step of a chain.
`chain_section` lays the chain out as a report section (plain data, rendered by
evaluation/report.py): each step's objective, data, steps, held-out headline
(before -> after that step) and blind-vote win rate, then the held-out prompts
where the last step changed the answer. `preference_facts` says what a
preference run's own training logged (reward accuracy and margin on its
training batches). A run without a parent gets no chain section: the rest of
the report already tells its whole story.
"""
from __future__ import annotations

from pathlib import Path

from evaluation.report_checks import Section, Table, headline_entry
from finetune_core.runs.chain import chain, describe_chain
from finetune_core.runs.store import Run, RunError

CHANGED_SHOWN = 5  # changed answers a report lists
REWARD_KEYS = (("rewards/accuracies", "Reward accuracy on training batches"),
               ("rewards/margins", "Reward margin (chosen - rejected) on training batches"))


def _comparison(run: Run):
    """The run's saved default held-out comparison, or None (not evaluated, or being rewritten)."""
    from evaluation.compare import RESULTS_FILE, Comparison

    if not (run.eval_dir / RESULTS_FILE).is_file():
        return None
    try:
        return Comparison.load(run.eval_dir)
    except (OSError, ValueError, KeyError):
        return None


def step_headline(run: Run) -> str:
    """The step's held-out headline, before -> after ("reward_accuracy 0.450 -> 0.600"), or "not evaluated"."""
    comparison = _comparison(run)
    if comparison is None:
        return "not evaluated"
    summary = comparison.summary or []
    entry = next((e for e in summary if e.get("metric") == "reward_accuracy"), None)
    entry = entry or headline_entry(summary, comparison.task) or (summary[0] if summary else None)
    if not entry or not isinstance(entry.get("base"), (int, float)) or not isinstance(entry.get("tuned"), (int, float)):
        return "not evaluated"
    return f"{entry['metric']} {entry['base']:.3f} → {entry['tuned']:.3f}"


def step_votes(run: Run) -> str:
    """The step's blind votes: "7 votes, 71% for this step" (decided votes only), or "none"."""
    from finetune_core.inference.chat import tally
    from finetune_core.inference.votes import load_votes

    votes = load_votes(run)[0]
    if not votes:
        return "none"
    counts = tally(votes)
    rate = counts["tuned_win_rate"]
    share = "no decided vote" if rate is None else f"{rate:.0%} for this step"
    return f"{counts['votes']} vote{'' if counts['votes'] == 1 else 's'}, {share}"


def step_row(number: int, run: Run) -> list[str]:
    """One table row: step, run name, objective, data file, steps done, held-out headline, votes."""
    try:
        cfg = run.run_yaml()
    except (OSError, ValueError):
        cfg = {}
    status = run.status()
    return [str(number), run.name, str(cfg.get("objective") or "sft"), Path(cfg.get("data_path") or "").name or "—",
            str(status.get("step", 0)), step_headline(run), step_votes(run)]


def changed_answers(run: Run, limit: int = CHANGED_SHOWN) -> list[list[str]]:
    """Held-out prompts where the run answers differently from the model it started from:
    [prompt, before, after], the largest metric changes first."""
    comparison = _comparison(run)
    if comparison is None or comparison.examples.empty:
        return []
    frame = comparison.examples
    differs = frame[frame["base_output"].astype(str).str.strip() != frame["tuned_output"].astype(str).str.strip()]
    differs = differs.reindex(differs["delta"].abs().sort_values(ascending=False).index)
    return [[str(r["input"]), str(r["base_output"]), str(r["tuned_output"])] for _, r in differs.head(limit).iterrows()]


def chain_section(run: Run) -> Section | None:
    """The chain as a report section, or None for a run that started from the base model."""
    try:
        runs = chain(run)
    except RunError as exc:
        return Section("The chain of runs", [str(exc)])
    if len(runs) < 2:
        return None
    parts = [f"{describe_chain(run)}. Each step started from the model before it (its adapter merged into the "
             "weights) and trained a new adapter on top; its held-out headline compares it with that start.",
             Table(["step", "run", "objective", "data", "steps", "held-out (before → after)", "blind votes"],
                   [step_row(i, r) for i, r in enumerate(runs, start=1)])]
    changed = changed_answers(run)
    if changed:
        parts += [f"Where {run.name} changed the answer of {runs[-2].name} (held-out prompts):",
                  Table(["prompt", f"before ({runs[-2].name})", f"after ({run.name})"], changed)]
    else:
        parts.append(f"No held-out answers of {run.name} to compare yet: evaluate it against its parent.")
    return Section("The chain of runs", parts)


def preference_facts(run: Run) -> list[tuple[str, str]]:
    """What a preference run logged while training: reward accuracy and margin, first -> last logged value."""
    found = []
    events = run.metrics()
    for key, label in REWARD_KEYS:
        values = [e[key] for e in events if isinstance(e.get(key), (int, float))]
        if values:
            found.append((label, f"{values[0]:.3f} → {values[-1]:.3f}"))
    return found
