"""The `judge` command: a pairwise LLM judge of base vs tuned, from the command line.

    python -m finetune_core judge --run runs/<id> [--prompts heldout|FILE.jsonl] [--limit N]
        [--judge local:<source>|endpoint] [--no-reference] [--max-new-tokens N] [--json]

``--judge local:bundled`` (the default) judges with a model the studio loads;
``--judge endpoint`` with an OpenAI-compatible endpoint whose URL, key and
model come from the environment only (STUDIO_JUDGE_URL, STUDIO_JUDGE_KEY,
STUDIO_JUDGE_MODEL): a key is never a flag, so it never lands in a shell
history or a process list. Whoever runs the command line owns the server, so
the owner's key applies here even when STUDIO_PUBLIC is set.

The result is saved in runs/<id>/checks/ (judge.json, judge_examples.jsonl);
progress goes to stderr, so stdout holds only the summary (or, with --json,
the saved object). Exit status: 0 on success, 2 on bad input (not a run,
unusable prompt file, endpoint refused), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import json

from evaluation.commands import attempt, print_progress
from finetune_core.cli import Command
from finetune_core.errors import InputError

EXAMPLES_SHOWN = 2
CELL = 72  # characters of text shown per line of an example


def add_judge_arguments(ap: argparse.ArgumentParser) -> None:
    """The `judge` command's flags."""
    ap.add_argument("--run", required=True, help="run directory (runs/<id>)")
    ap.add_argument("--prompts", default="heldout",
                    help="'heldout' (the run's held-out rows, default) or a .jsonl file in the MT-Bench / Vicuna "
                         "layout (question_id, category, turns; the first turn is asked; reference optional)")
    ap.add_argument("--limit", type=int, default=20,
                    help="judge at most N prompts, taken in turn from each category (default 20)")
    ap.add_argument("--judge", default="local:bundled", metavar="local:<source>|endpoint",
                    help="the judge: a model the studio loads (local:bundled, local:<Hub id or folder>) or the "
                         "OpenAI-compatible endpoint set by STUDIO_JUDGE_URL / STUDIO_JUDGE_KEY / STUDIO_JUDGE_MODEL")
    ap.add_argument("--no-reference", action="store_true", help="do not show the judge the reference answers")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="longest answer of each side (default 256)")
    ap.add_argument("--json", action="store_true", help="print the saved judge.json object instead of a summary")


def parse_judge(text: str):
    """The JudgeSpec a --judge value names (an endpoint's settings from the environment).

    >>> parse_judge("local:bundled")
    JudgeSpec(kind='local', model='bundled', url=None)
    """
    from evaluation.judge import JudgeSpec, judge_spec_from_env

    kind, _, source = (text or "").partition(":")
    if kind == "local":
        return JudgeSpec("local", source.strip() or "bundled")
    if kind == "endpoint" and not source:
        spec = judge_spec_from_env(public=False, is_admin=True, typed_key=None)
        if spec is None:
            raise InputError("--judge endpoint needs STUDIO_JUDGE_URL (and STUDIO_JUDGE_KEY when the endpoint asks "
                             "for one, STUDIO_JUDGE_MODEL for its model name) in the environment.")
        return spec
    raise InputError(f"--judge must be local:<model source> or endpoint (got {text!r}).")


def run_judge(args: argparse.Namespace) -> int:
    """Judge base vs tuned on the prompts, save checks/judge.json and print the summary."""
    from evaluation.judge import judge_run
    from finetune_core.models.sources import hub_timeouts
    from finetune_core.runs.store import run_from_dir

    hub_timeouts()  # fail fast instead of hanging when the Hub is unreachable

    def work():
        spec = parse_judge(args.judge)
        run = run_from_dir(args.run)
        return run, judge_run(run, prompt_set=args.prompts, judge=spec, limit=args.limit,
                              use_reference=not args.no_reference, max_new_tokens=args.max_new_tokens,
                              progress=print_progress)

    done, status = attempt(work)
    if status is not None:
        return status
    run, result = done
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(render_judge(result, _examples(run), str(run.path / "checks")))
    return 0


def _examples(run) -> list[dict]:
    from evaluation.judge import EXAMPLES_FILE, checks_dir

    path = checks_dir(run) / EXAMPLES_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def render_judge(result: dict, examples: list[dict], saved_to: str) -> str:
    """The summary a person reads: counts, the sentence, per category, votes, a few examples."""
    judge = result["judge"]
    who = judge["model"] + (f" at {judge['url_host']}" if judge.get("url_host") else " (local)")
    lines = [f"judge: {who}; prompts: {result['prompt_set']}, {result['items']} judged "
             f"({result['seconds']:.1f} s)", "",
             f"tuned vs base: {result['wins']} wins, {result['ties']} ties, {result['losses']} losses "
             f"(win rate {result['win_rate']:.3f})",
             f"net preference for tuned: {result['verdict_text']}",
             f"judge replies without a verdict: {result['unparsed']} of {2 * result['items']}; "
             f"prompts where the two orders disagreed: {result['inconsistent']}", "", "per category:"]
    width = max(len(c["category"]) for c in result["per_category"])
    for c in result["per_category"]:
        lines.append(f"  {c['category']:<{width}}  {c['items']:>4} prompts  {c['wins']} wins, {c['ties']} ties, "
                     f"{c['losses']} losses  (win rate {c['win_rate']:.3f})")
    agreement = result.get("votes_agreement")
    lines += ["", "agreement with blind votes: " + (
        f"{agreement['agree']} of {agreement['compared']} prompts ({agreement['rate']:.2f})" if agreement
        else "no judged prompt has a vote")]
    for ex in _shown(examples):
        lines += ["", f"[{ex['category']}] {_cell(ex['prompt'])}", f"  base:  {_cell(ex['base'])}",
                  f"  tuned: {_cell(ex['tuned'])}",
                  f"  base first -> {ex['verdict_base_first']}, tuned first -> {ex['verdict_tuned_first']}; "
                  f"outcome: {ex['outcome']}"]
    return "\n".join(lines + ["", f"saved to {saved_to}"])


def _shown(examples: list[dict]) -> list[dict]:
    """A tuned win and a base win when there are some, else the first prompts."""
    picked = [next((e for e in examples if e["outcome"] == side), None) for side in ("tuned", "base")]
    picked = [e for e in picked if e is not None]
    return (picked + [e for e in examples if e not in picked])[:EXAMPLES_SHOWN]


def _cell(text) -> str:
    text = " ".join(str(text or "").split()) or "(empty)"
    return text if len(text) <= CELL else text[:CELL - 1] + "…"


COMMANDS: tuple[Command, ...] = (
    Command("judge", "Pairwise LLM judge of base vs tuned answers (both orders).", add_judge_arguments,
            run_judge),
)
