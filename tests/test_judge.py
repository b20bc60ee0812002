"""The pairwise judge, as a user relies on it: both orders are asked, a judge biased towards the
first answer ends in ties, wins / ties / losses come with their interval, per category and against
the blind votes, bad prompt files are named by line and field, a cancelled check saves nothing.

The judge here is a fake OpenAI-compatible server on loopback that answers by a rule; the answers
come from a stand-in model (exact texts) or from the tiny trained run's real model.
Key handling and the endpoint's errors are in tests/test_judge_backends.py.

    .venv/bin/python -m pytest -q tests/test_judge.py tests/test_judge_backends.py
"""
from __future__ import annotations

import json
import re
import shutil
import threading

import pytest

from evaluation import judge as J
from evaluation.judge import JudgeSpec, combine, judge_run, parse_verdict, read_check
from evaluation.significance import describe, outcome_interval
from finetune_core.errors import InputError
from finetune_core.inference.votes import append_vote
from finetune_core.runs.store import run_from_dir
from test_judge_backends import FakeJudge, answers_in, prefer_blue

VALUE = {"tuned": 1, "tie": 0, "base": -1}


class Answers:
    """Stands in for the run's InferenceModel: answers each prompt by `rule(text, tuned)`."""

    has_tuned = True

    def __init__(self, rule):
        self.rule = rule
        self.sides = []

    def generate(self, prompts, tuned, settings=None, batch_size=16, progress=None, cancel=None):
        self.sides.append(tuned)
        out = [self.rule(p[-1]["content"], tuned) for p in prompts]
        if progress:
            progress(len(out), len(out))
        return out


def colour_answers(text: str, tuned: bool) -> str:
    """Tuned names the ball's colour; base says "blue" on red balls and on items 41 and 45."""
    number = int(re.search(r"Item (\d+)", text).group(1))
    if tuned:
        return "It is blue." if "blue" in text else "It is red."
    return "The sky is blue." if "red" in text or number in (41, 45) else "No idea."


def expected_outcome(base: str, tuned: str) -> str:
    """What a consistent "prefer the answer saying blue" judge must decide."""
    if ("blue" in tuned) == ("blue" in base):
        return "tie"
    return "tuned" if "blue" in tuned else "base"


@pytest.fixture()
def run(trained_run, runs_root):
    """A writable copy of the tiny trained run (votes and checks are written into it)."""
    shutil.copytree(trained_run.path, runs_root / trained_run.path.name)
    return run_from_dir(runs_root / trained_run.path.name)


@pytest.fixture()
def server():
    with FakeJudge(prefer_blue) as fake:
        yield fake


def endpoint(fake) -> JudgeSpec:
    return JudgeSpec("endpoint", "fake-judge", fake.url, "sk-unit-test")


def examples_of(run) -> list[dict]:
    path = run.path / "checks" / J.EXAMPLES_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_both_orders_are_asked_and_a_consistent_judge_decides(run, server):
    result = judge_run(run, judge=endpoint(server), limit=None, model=Answers(colour_answers))
    examples = examples_of(run)
    assert result["items"] == len(examples) == 8
    assert len(server.requests) == 2 * len(examples)
    for ex in examples:
        asked = [answers_in(r) for r in server.requests if ex["prompt"] in r["messages"][1]["content"]]
        assert asked == [(ex["base"], ex["tuned"]), (ex["tuned"], ex["base"])]  # base first, then tuned first
        assert ex["outcome"] == expected_outcome(ex["base"], ex["tuned"])
        assert ex["verdict_base_first"] == ex["verdict_tuned_first"] == ex["outcome"]
    outcomes = [ex["outcome"] for ex in examples]
    assert {"tuned", "base", "tie"} <= set(outcomes)
    wins, ties, losses = outcomes.count("tuned"), outcomes.count("tie"), outcomes.count("base")
    assert (result["wins"], result["ties"], result["losses"]) == (wins, ties, losses)
    assert result["win_rate"] == pytest.approx((wins + ties / 2) / 8)
    interval = outcome_interval([VALUE[o] for o in outcomes])
    assert result["interval"] == interval.to_dict()
    assert result["verdict_text"] == describe(interval, "prompts")
    assert result["per_category"] == [{"category": "held-out", "items": 8, "wins": wins, "ties": ties,
                                       "losses": losses, "win_rate": result["win_rate"]}]
    assert result["unparsed"] == result["inconsistent"] == 0
    assert read_check(run, "judge") == result
    assert result["judge"] == {"kind": "endpoint", "model": "fake-judge", "url_host": server.host}


def test_a_judge_that_always_prefers_the_first_answer_ends_in_ties(run):
    with FakeJudge(lambda body: "The first one reads better.\n[[A]]") as fake:
        result = judge_run(run, judge=endpoint(fake), limit=5, model=Answers(colour_answers))
    assert (result["wins"], result["ties"], result["losses"]) == (0, 5, 0)
    assert result["inconsistent"] == 5 and result["win_rate"] == 0.5
    assert result["interval"]["estimate"] == 0 and not result["interval"]["significant"]
    assert result["verdict_text"].startswith("not distinguishable from no change on 5 prompts")
    assert all(ex["verdict_base_first"] == "base" and ex["verdict_tuned_first"] == "tuned"
               for ex in examples_of(run))


def test_replies_without_a_verdict_are_ties_and_counted_as_unparsed(run):
    with FakeJudge(lambda body: "Both answers have merit.") as fake:
        result = judge_run(run, judge=endpoint(fake), limit=3, model=Answers(colour_answers))
    assert result["unparsed"] == 6 and result["ties"] == 3 and result["inconsistent"] == 0
    assert {ex["verdict_base_first"] for ex in examples_of(run)} == {"unparsed"}


def test_the_two_orders_combine_so_position_bias_cancels():
    table = {("tuned", "tuned"): "tuned", ("base", "base"): "base"}
    for first in ("tuned", "base", "tie", "unparsed"):
        for second in ("tuned", "base", "tie", "unparsed"):
            assert combine(first, second) == table.get((first, second), "tie"), (first, second)


@pytest.mark.parametrize("reply, verdict", [
    ("Answer B is correct and shorter.\n[[B]]", "B"),
    ("[[ A ]]", "A"),
    ("They are the same.\n\n[[C]]", "C"),
    ("I was told to answer [[A]], [[B]] or [[C]]. B is right.\n[[B]]", "B"),  # the last verdict counts
    ("Final verdict: A", "A"),
    ("verdict - tie", "C"),
    ("A is better than B.", None),
    ("", None),
    ("[[D]]", None),
])
def test_verdicts_are_read_from_the_reply(reply, verdict):
    assert parse_verdict(reply) == verdict


def write_prompts(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


MT_ROWS = [
    {"question_id": 1, "category": "writing", "turns": ["Write about a blue whale.", "Now shorter."]},
    {"question_id": 2, "category": "writing", "turns": ["Write about a red fox."]},
    {"question_id": 3, "category": "writing", "turns": ["Write a haiku."]},
    {"question_id": 4, "category": "math", "turns": ["What is 2+2?"], "reference": ["4, a blue number", "x"]},
    {"question_id": 5, "category": "math", "turns": ["What is 3*3?"], "reference": ["9"]},
    {"question_id": 6, "category": "coding", "turns": ["Print hello in Python."]},
]


def mt_answers(text: str, tuned: bool) -> str:
    """Tuned says "blue" on writing prompts, base on math ones; coding is a tie."""
    blue_side = {"Write": True, "What": False}.get(text.split()[0])
    return "blue" if blue_side is not None and blue_side == tuned else "grey"


def test_prompt_files_are_tallied_per_category_with_their_references(run, server, tmp_path):
    path = write_prompts(tmp_path / "mt.jsonl", MT_ROWS)
    result = judge_run(run, prompt_set=str(path), judge=endpoint(server), limit=None, model=Answers(mt_answers))
    assert result["prompt_set"] == "mt.jsonl" and result["items"] == 6
    assert [(c["category"], c["items"], c["wins"], c["ties"], c["losses"]) for c in result["per_category"]] == [
        ("writing", 3, 3, 0, 0), ("math", 2, 0, 0, 2), ("coding", 1, 0, 1, 0)]
    asked = [r["messages"][1]["content"] for r in server.requests]
    assert not any("Now shorter." in text for text in asked)  # only the first turn is asked
    assert sum("4, a blue number" in text for text in asked) == 2  # the reference, in both orders
    assert examples_of(run)[3]["reference"] == "4, a blue number"

    server.requests.clear()
    judge_run(run, prompt_set=str(path), judge=endpoint(server), limit=3, use_reference=False,
              model=Answers(mt_answers))
    assert not any("[Reference answer]" in r["messages"][1]["content"] for r in server.requests)
    assert [ex["category"] for ex in examples_of(run)] == ["writing", "math", "coding"]  # a limit spreads


def vote(text: str, choice: str, tuned_side: str = "left") -> dict:
    winner = {"tie": "tie", "both_bad": "both_bad"}.get(choice) or ("tuned" if choice == tuned_side else "base")
    return {"prompt_base": [{"role": "user", "content": text}], "prompt_tuned": [{"role": "user", "content": text}],
            "base": "b", "tuned": "t", "tuned_side": tuned_side, "choice": choice, "winner": winner}


def test_agreement_with_the_blind_votes_is_over_prompts_both_judged(run, server):
    model = Answers(colour_answers)
    assert judge_run(run, judge=endpoint(server), limit=None, model=model)["votes_agreement"] is None
    by_outcome = {}
    for ex in examples_of(run):
        by_outcome.setdefault(ex["outcome"], []).append(ex["prompt"])
    append_vote(run, vote(by_outcome["tuned"][0], "left"))  # agrees: tuned on the left, picked
    append_vote(run, vote(by_outcome["base"][0], "left", tuned_side="right"))  # agrees: base picked
    append_vote(run, vote(by_outcome["tie"][0], "right"))  # disagrees: the judge said tie
    append_vote(run, vote(by_outcome["base"][1], "both_bad"))  # "both bad" is a tie: disagrees
    append_vote(run, vote("A prompt nobody judged", "left"))  # not compared
    result = judge_run(run, judge=endpoint(server), limit=None, model=model)
    assert result["votes_agreement"] == {"compared": 4, "agree": 2, "rate": 0.5}


BAD_LINES = [
    '{"question_id": 1, "category": "a", "turns": ["fine"]}',
    '{"question_id": 2, "turns": ["no closing brace"]',
    '{"question_id": 3, "category": "a"}',
    '{"question_id": 4, "turns": ["  "]}',
    '{"question_id": 5, "turns": ["ok"], "reference": [5]}',
    '["not", "an", "object"]',
    '{"question_id": 7, "turns": ["ok"], "category": 7}',
]


def test_bad_prompt_files_are_refused_by_line_and_field_before_any_model_loads(run, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(BAD_LINES), encoding="utf-8")

    def no_model():
        raise AssertionError("the model must not load for a bad prompt file")

    with pytest.raises(InputError) as err:
        judge_run(run, prompt_set=str(path), judge=JudgeSpec("endpoint", "m", "http://127.0.0.1:9"),
                  load_model=no_model)
    text = str(err.value)
    assert text.startswith("Prompt file bad.jsonl: ")
    for part in ("line 2 is not valid JSON", "line 3, field 'turns'", "line 4, field 'turns'",
                 "line 5, field 'reference'", "line 6 is not a JSON object", "(and 1 more)"):
        assert part in text, part
    assert "line 1" not in text
    with pytest.raises(InputError, match="Prompt file missing.jsonl not found"):
        judge_run(run, prompt_set=str(tmp_path / "missing.jsonl"), load_model=no_model)
    with pytest.raises(InputError, match=r"limit\) must be at least 1"):
        judge_run(run, limit=0, load_model=no_model)
    assert not (run.path / "checks" / "judge.json").exists()


def test_a_cancelled_check_saves_nothing_and_keeps_the_previous_one(run):
    cancel, armed = threading.Event(), threading.Event()

    def cancel_on_third(body):
        if armed.is_set() and len(fake.requests) == 3:
            cancel.set()  # as if the user pressed Stop while the third comparison was asked
        return "[[A]]"

    with FakeJudge(cancel_on_third) as fake:
        judge_run(run, judge=endpoint(fake), limit=3, model=Answers(colour_answers))
        saved = (run.path / "checks" / "judge.json").read_bytes()
        examples = (run.path / "checks" / J.EXAMPLES_FILE).read_bytes()
        fake.requests.clear()
        armed.set()
        with pytest.raises(InterruptedError):
            judge_run(run, judge=endpoint(fake), limit=None, model=Answers(colour_answers), cancel=cancel)
    assert len(fake.requests) == 3  # it stopped asking once cancelled
    assert (run.path / "checks" / "judge.json").read_bytes() == saved
    assert (run.path / "checks" / J.EXAMPLES_FILE).read_bytes() == examples


def test_the_runs_own_base_model_judges_without_a_second_copy(run, monkeypatch):
    """Real answers from the tiny run; the judge is its base model (the adapter off), not loaded again."""
    from finetune_core.inference.generation import InferenceModel

    model = InferenceModel.from_run(run)
    monkeypatch.setattr(InferenceModel, "base_only", classmethod(lambda *a, **k: pytest.fail("loaded again")))
    result = judge_run(run, judge=JudgeSpec("local", run.config().model), limit=2, max_new_tokens=8, model=model)
    examples = examples_of(run)
    assert result["judge"] == {"kind": "local", "model": run.config().model, "url_host": None}
    assert_consistent(result, examples)


def assert_consistent(result: dict, examples: list[dict]) -> None:
    """Counts add up, and each outcome follows from its two verdicts."""
    assert result["items"] == len(examples) == result["wins"] + result["ties"] + result["losses"]
    assert sum(c["items"] for c in result["per_category"]) == result["items"]
    verdicts = [ex[k] for ex in examples for k in ("verdict_base_first", "verdict_tuned_first")]
    assert set(verdicts) <= {"tuned", "base", "tie", "unparsed"} and verdicts.count("unparsed") == result["unparsed"]
    for ex in examples:
        assert ex["outcome"] == combine(ex["verdict_base_first"], ex["verdict_tuned_first"])
        assert ex["base"] is not None and ex["tuned"] is not None


@pytest.mark.slow
def test_the_bundled_model_as_a_local_judge_gives_a_complete_report(run):
    result = judge_run(run, judge=JudgeSpec("local", "bundled"), limit=3, max_new_tokens=16)
    examples = examples_of(run)
    assert result["judge"]["model"] == "bundled" and len(examples) == 3
    assert all(ex["reply_base_first"] and ex["reply_tuned_first"] for ex in examples)
    assert_consistent(result, examples)


@pytest.mark.parametrize("name", ["mt_bench_questions.jsonl", "vicuna80_questions.jsonl"])
def test_the_published_prompt_sets_read_whole(shared_datasets, name):
    from evaluation.prompt_sets import read_prompt_file, spread

    raw = [json.loads(line) for line in (shared_datasets / name).read_text(encoding="utf-8").splitlines()]
    items = read_prompt_file(shared_datasets / name)
    assert [(p.id, p.category, p.question) for p in items] == [
        (str(r["question_id"]), r["category"], r["turns"][0]) for r in raw]
    assert [p.reference for p in items] == [(r.get("reference") or [""])[0].strip() or None for r in raw]
    categories = sorted({r["category"] for r in raw})
    picked = spread(items, 2 * len(categories))
    assert sorted(p.category for p in picked) == sorted(categories * 2)  # a limit covers every category
