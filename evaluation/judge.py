"""Pairwise LLM-as-judge: which answer is better, base (adapter off) or tuned (adapter on)?

`judge_run(run, prompt_set, judge)` lets both sides answer each prompt
(greedy, the run's own loaded model), then asks a judge to compare the two
answers TWICE, once with the base answer shown first and once with the tuned
answer first. A judge that prefers whichever answer comes first (position
bias) then contradicts itself, and the two verdicts are combined so that bias
cancels:

    base first \\ tuned first   tuned    base    tie / unparsed
    tuned                      tuned    tie     tie
    base                       tie      base    tie
    tie / unparsed             tie      tie     tie

The judge is asked for a short reason and a last line "[[A]]", "[[B]]" or
"[[C]]" (a tie); a reply without a readable verdict counts as a tie and is
counted as "unparsed". The result, saved as runs/<id>/checks/judge.json (+
checks/judge_examples.jsonl, one line per prompt): wins / ties / losses of
tuned against base, the win rate (wins + ties/2) / n, the interval of the
net win rate (significance.outcome_interval: +1 tuned, 0 tie, -1 base) and
its sentence, per category, and agreement with the run's blind A/B votes.
"base" and "tuned" are the run's default pair (finetune_core.inference.sides):
for a run started from another run, its parent and the run; the result's
"sides" and "labels" say which.

    python -m finetune_core judge --run runs/<id> --prompts ../shared/datasets/vicuna80_questions.jsonl

    >>> combine("tuned", "tuned"), combine("base", "tuned"), combine("unparsed", "unparsed")
    ('tuned', 'tie', 'tie')
"""
from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from evaluation.checks import checks_dir, read_check, write_check
from evaluation.heldout_loss import check_cancel
from evaluation.judge_backends import JudgeError, JudgeSpec, judge_spec_from_env, make_backend
from evaluation.prompt_sets import HELDOUT, PromptItem, load_prompt_set
from evaluation.pair_eval import side_meta
from evaluation.run_eval import load_run_model
from evaluation.significance import describe, outcome_interval
from finetune_core.errors import InputError

__all__ = ["JudgeError", "JudgeSpec", "judge_spec_from_env", "judge_run", "judge_messages", "parse_verdict",
           "combine", "tally", "votes_agreement", "checks_dir", "read_check", "write_check"]

Progress = Callable[[str, float], None]
SCHEMA_VERSION = 1
EXAMPLES_FILE = "judge_examples.jsonl"
OUTCOME_VALUE = {"tuned": 1, "tie": 0, "base": -1}
REPLY_KEPT = 1000  # characters of each judge reply kept in the examples file (its reason)
ANSWERS_SHARE = 0.5  # of the progress bar: both sides answering; the judging takes the rest
CANCELLED = "Judging cancelled."  # the InterruptedError once cancelled (nothing saved)

SYSTEM = ("You are a careful, impartial reviewer. You compare two answers to the same request and say "
          "which one serves the person who asked better.")
VERDICT_RE = re.compile(r"\[\[\s*([ABC])\s*\]\]")
# fallbacks for judges that drop the brackets: "Verdict: A", "Final verdict - [B]", "verdict: tie"
LOOSE_RE = re.compile(r"verdict\s*(?:is)?\s*[:\-]?\s*\[?\s*(A|B|C|tie)\b", re.IGNORECASE)


# -- asking the judge -----------------------------------------------------------------------
def judge_messages(question: str, first: str, second: str, reference: str | None = None) -> list[dict]:
    """The judge's conversation for one order: answer A is `first`, answer B is `second`.

    >>> msgs = judge_messages("Name a colour.", "Red.", "Blue.", reference="Any colour")
    >>> [m["role"] for m in msgs], "[[C]]" in msgs[1]["content"], "Any colour" in msgs[1]["content"]
    (['system', 'user'], True, True)
    """
    parts = ["Read the request and the two answers below, then decide which answer is more helpful, correct "
             "and to the point for the person who asked. The order of the answers says nothing about their "
             "quality, and an answer is not better for being longer.", "",
             "[Request]", question.strip(), "[End of request]", ""]
    if reference:
        parts += ["[Reference answer] (a guide to what a good answer contains, not the only right wording)",
                  reference.strip(), "[End of reference answer]", ""]
    parts += ["[Answer A]", first.strip() or "(empty)", "[End of answer A]", "",
              "[Answer B]", second.strip() or "(empty)", "[End of answer B]", "",
              "Give your reason in one or two sentences. Then end with a line holding only your verdict: "
              "[[A]] if answer A is better, [[B]] if answer B is better, [[C]] if they are equally good or "
              "equally bad."]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


def parse_verdict(reply: str) -> str | None:
    """"A", "B" or "C" (a tie) from a judge's reply; the LAST verdict given wins (a reason may quote
    the format first); None when there is no readable verdict.

    >>> parse_verdict("B is clearer.\\n[[B]]"), parse_verdict("Verdict: tie"), parse_verdict("Both fine.")
    ('B', 'C', None)
    >>> parse_verdict("Reply [[A]], [[B]] or [[C]]... I pick [[A]]")
    'A'
    """
    found = VERDICT_RE.findall(reply or "")
    if found:
        return found[-1]
    loose = LOOSE_RE.findall(reply or "")
    if loose:
        letter = loose[-1].upper()
        return "C" if letter == "TIE" else letter
    return None


def side_of(letter: str | None, tuned_first: bool) -> str:
    """The side a verdict letter names in one order: "tuned", "base", "tie" or "unparsed".

    >>> side_of("A", tuned_first=False), side_of("A", tuned_first=True), side_of(None, True)
    ('base', 'tuned', 'unparsed')
    """
    if letter is None:
        return "unparsed"
    if letter == "C":
        return "tie"
    return "tuned" if (letter == "A") == tuned_first else "base"


def combine(base_first: str, tuned_first: str) -> str:
    """One outcome from the two orders' verdicts: a side wins only when it wins in both orders;
    a tie, an unparsed reply or a contradiction (position bias) is a tie."""
    if base_first == tuned_first and base_first in ("tuned", "base"):
        return base_first
    return "tie"


# -- counting ----------------------------------------------------------------------------------
def tally(outcomes: list[str]) -> dict:
    """wins / ties / losses of tuned and the win rate (wins + ties/2) / n.

    >>> tally(["tuned", "tie", "base", "tuned"])
    {'items': 4, 'wins': 2, 'ties': 1, 'losses': 1, 'win_rate': 0.625}
    """
    n = len(outcomes)
    wins, losses = outcomes.count("tuned"), outcomes.count("base")
    ties = n - wins - losses
    return {"items": n, "wins": wins, "ties": ties, "losses": losses,
            "win_rate": round((wins + ties / 2) / n, 6) if n else 0.0}


def per_category(items: list[PromptItem], outcomes: list[str]) -> list[dict]:
    """The tally of each category, in the order categories first appear."""
    groups: dict[str, list[str]] = {}
    for item, outcome in zip(items, outcomes):
        groups.setdefault(item.category, []).append(outcome)
    return [{"category": name, **tally(group)} for name, group in groups.items()]


def _prompt_key(text: str) -> str:
    return " ".join(str(text or "").split())


def _net(values: list[int]) -> str:
    total = sum(values)
    return "tuned" if total > 0 else "base" if total < 0 else "tie"


def votes_agreement(run, items: list[PromptItem], outcomes: list[str]) -> dict | None:
    """How often the judge agrees with the run's blind A/B votes, over the prompts both judged.

    A vote is on a prompt (its last user message); several votes on one prompt count as their net
    preference, "both bad" as a tie. Agreement: the judge's outcome (tuned, base or tie) equals the
    votes'. None when no judged prompt has a vote.
    """
    from finetune_core.inference.votes import load_votes

    votes, _skipped = load_votes(run)
    by_prompt: dict[str, list[int]] = {}
    for vote in votes:
        if vote.get("prompt"):  # version-1 lines carry no prompt: nothing to match them on
            by_prompt.setdefault(_prompt_key(vote["prompt"]), []).append(OUTCOME_VALUE.get(vote["winner"], 0))
    judged: dict[str, list[int]] = {}
    for item, outcome in zip(items, outcomes):
        judged.setdefault(_prompt_key(item.question), []).append(OUTCOME_VALUE[outcome])
    shared = [key for key in judged if key in by_prompt]
    if not shared:
        return None
    agree = sum(_net(judged[key]) == _net(by_prompt[key]) for key in shared)
    return {"compared": len(shared), "agree": agree, "rate": round(agree / len(shared), 6)}


# -- the whole check -----------------------------------------------------------------------------
def judge_run(run, prompt_set: str = HELDOUT, judge: JudgeSpec | None = None, limit: int | None = 20,
              use_reference: bool = True, max_new_tokens: int = 256, progress: Progress | None = None,
              cancel: threading.Event | None = None, model=None, load_model: Callable[[], object] | None = None,
              batch_size: int = 16) -> dict:
    """Judge base vs tuned on `prompt_set` ("heldout" or a .jsonl path), save checks/judge.json and
    checks/judge_examples.jsonl, and return the saved judge.json content.

    `judge` defaults to the bundled model as a local judge. `model` reuses an already-loaded
    InferenceModel of this run; `load_model` gets one (the UI's shared copy) after every check has
    passed. InputError on bad input, JudgeError when the judge endpoint fails, InterruptedError
    when `cancel` is set (nothing is saved then).
    """
    judge = judge or JudgeSpec("local", "bundled")
    _check_args(limit, max_new_tokens)
    items, label = load_prompt_set(run, prompt_set, limit)
    say = progress or (lambda _text, _fraction: None)
    check_cancel(cancel, CANCELLED)
    started = time.perf_counter()
    model = model or load_run_model(run, say, load_model)
    if not model.has_tuned:
        raise InputError(f"Run {run.id} has no tuned side to compare (no adapter loaded).")
    answers = _answers(model, items, max_new_tokens, batch_size, say, cancel)
    backend = make_backend(judge, model, run.config().model, progress=lambda text: say(text, ANSWERS_SHARE))
    examples = _judge_all(backend, items, answers, use_reference, say, cancel)
    outcomes = [e["outcome"] for e in examples]
    result = {**_result(run, judge, label, items, examples, outcomes, time.perf_counter() - started),
              **side_meta(model)}
    _save(run, result, examples)
    say("Done.", 1.0)
    return result


def _check_args(limit, max_new_tokens) -> None:
    from finetune_core.limits import limits

    if limit is not None and limit < 1:
        raise InputError(f"Prompts to judge (limit) must be at least 1 (got {limit}).")
    if max_new_tokens < 1:
        raise InputError(f"Max new tokens (max_new_tokens) must be at least 1 (got {max_new_tokens}).")
    limits().check("max_new_tokens", max_new_tokens, "Max new tokens")


def _answers(model, items, max_new_tokens, batch_size, say: Progress, cancel) -> dict[str, list[str]]:
    """Both sides' greedy answers to every prompt: {"base": [...], "tuned": [...]}."""
    from finetune_core.inference.generation import GenSettings

    prompts = [item.messages for item in items]
    answers = {}
    for i, side in enumerate(("base", "tuned")):
        start = i * ANSWERS_SHARE / 2

        def report(done, total, side=side, start=start):
            say(f"{side.capitalize()} answering {done}/{total} prompts",
                start + ANSWERS_SHARE / 2 * done / max(total, 1))

        answers[side] = model.generate(prompts, tuned=side == "tuned", settings=GenSettings(max_new_tokens),
                                       batch_size=batch_size, progress=report, cancel=cancel)
        check_cancel(cancel, CANCELLED)  # a cancelled generate() returns cut answers: never judge those
    return answers


def _judge_all(backend, items, answers, use_reference, say: Progress, cancel) -> list[dict]:
    """Ask the judge both orders for every prompt; one example record per prompt."""
    conversations = []
    for i, item in enumerate(items):
        reference = item.reference if use_reference else None
        base, tuned = answers["base"][i], answers["tuned"][i]
        conversations.append(judge_messages(item.question, base, tuned, reference))  # base first
        conversations.append(judge_messages(item.question, tuned, base, reference))  # tuned first

    def report(done, total):
        say(f"Judging {done}/{total} comparisons (two orders per prompt)",
            ANSWERS_SHARE + (1 - ANSWERS_SHARE) * done / max(total, 1))

    say("Judging...", ANSWERS_SHARE)
    replies = backend(conversations, report, cancel)
    check_cancel(cancel, CANCELLED)
    examples = []
    for i, item in enumerate(items):
        first, second = replies[2 * i], replies[2 * i + 1]
        base_first = side_of(parse_verdict(first), tuned_first=False)
        tuned_first = side_of(parse_verdict(second), tuned_first=True)
        examples.append({
            "id": item.id, "prompt": item.question, "category": item.category,
            "reference": item.reference if use_reference else None,
            "base": answers["base"][i], "tuned": answers["tuned"][i],
            "verdict_base_first": base_first, "verdict_tuned_first": tuned_first,
            "outcome": combine(base_first, tuned_first),
            "reply_base_first": first[-REPLY_KEPT:], "reply_tuned_first": second[-REPLY_KEPT:]})
    return examples


def _result(run, judge: JudgeSpec, label: str, items, examples, outcomes, seconds: float) -> dict:
    interval = outcome_interval([OUTCOME_VALUE[o] for o in outcomes])
    verdicts = [e[k] for e in examples for k in ("verdict_base_first", "verdict_tuned_first")]
    decided = [(e["verdict_base_first"], e["verdict_tuned_first"]) for e in examples]
    return {
        "schema_version": SCHEMA_VERSION, "run": run.id, "judge": judge.public(), "prompt_set": label,
        **tally(outcomes),
        "interval": interval.to_dict(), "verdict_text": describe(interval, "prompts"),
        "per_category": per_category(items, outcomes),
        "votes_agreement": votes_agreement(run, items, outcomes),
        # how much to trust the judge: replies it gave no verdict in, prompts it contradicted itself on
        "unparsed": verdicts.count("unparsed"),
        "inconsistent": sum(a != b and {a, b} <= {"tuned", "base"} for a, b in decided),
        "seconds": round(seconds, 3), "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _save(run, result: dict, examples: list[dict]) -> None:
    """The examples first, judge.json last: judge.json names a complete check."""
    from finetune_core.data.dataset import write_jsonl

    checks_dir(run).mkdir(parents=True, exist_ok=True)
    write_jsonl(checks_dir(run) / EXAMPLES_FILE, examples)
    write_check(run, "judge", result)
