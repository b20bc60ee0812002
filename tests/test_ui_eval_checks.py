"""The Evaluate tab's checks: general skills (did it forget anything?) and the pairwise judge.

The handlers are called as plain functions on a run made for each test (a run.yaml, a
stand-in adapter file and held-out rows; nothing trained): the backends
(evaluation.benchmarks.run_benchmarks, evaluation.judge.judge_run) are replaced by
fakes that record what the tab asked for and write checks/*.json in the schemas the
backends document (issue #20), so these tests say what the tab does with them. The fixture
writers here (`write_benchmarks`, `write_judge`) are shared with tests/test_report_checks.py
and tests/test_browser_eval.py.
"""
from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pytest

from evaluation.significance import describe, outcome_interval, paired_exact
from finetune_core.config import RunConfig
from finetune_core.data.dataset import write_jsonl
from finetune_core.runs.ownership import Visitor, write_owner
from finetune_core.runs.store import Run, create_run, write_json_atomic
from ui import eval_checks, eval_judge
from ui.context import AppContext

HOSTILE = "<script>alert('x')</script>"
LOST_QUESTION = "Which gas do plants take in from the air?"
GAINED_QUESTION = "What makes a compass needle point north?"


# -- fixture files in the contract's schemas --------------------------------------------------------------
def metric_entry(metric: str, base: list[int], tuned: list[int]) -> dict:
    """A benchmark metric entry whose interval and sentence come from evaluation.significance."""
    iv = paired_exact(base, tuned)
    return {"metric": metric, "base": sum(base) / len(base), "tuned": sum(tuned) / len(tuned),
            "delta": iv.estimate, "interval": iv.to_dict(), "verdict_text": describe(iv, "items")}


def benchmarks_data(run_id: str) -> dict:
    """benchmarks.json: ARC-Easy not distinguishable (40 items), MMLU worse (40 items), flips both ways."""
    same_base, same_tuned = [1] * 20 + [0] * 20, [1] * 19 + [0] * 20 + [1]
    worse_base, worse_tuned = [1] * 30 + [0] * 10, [1] * 12 + [0] * 28
    lost = {"doc_id": 7, "question": LOST_QUESTION + " " + HOSTILE, "choices": ["oxygen", "carbon dioxide"],
            "answer": "carbon dioxide", "base_choice": "carbon dioxide", "tuned_choice": "oxygen"}
    gained = {"doc_id": 39, "question": GAINED_QUESTION, "choices": ["magnetism", "gravity"],
              "answer": "magnetism", "base_choice": "gravity", "tuned_choice": "magnetism"}
    return {"schema_version": 1, "run": run_id, "model": "bundled", "num_fewshot": 0, "limit": 40,
            "source": "local folder /srv/datasets", "lm_eval_version": "0.4.13", "seconds": 12.5,
            "timestamp": "2026-01-31T12:00:00", "benchmarks": [
                {"name": "arc_easy", "title": "ARC-Easy", "items": 40, "primary": "acc_norm",
                 "metrics": [metric_entry("acc", same_base, same_tuned), metric_entry("acc_norm", same_base, same_tuned)],
                 "flips": {"right_to_wrong": [lost], "wrong_to_right": [gained]}},
                {"name": "mmlu", "title": "MMLU", "items": 40, "primary": "acc",
                 "metrics": [metric_entry("acc", worse_base, worse_tuned)],
                 "flips": {"right_to_wrong": [{**lost, "doc_id": 3, "question": "2 + 2 = ?", "answer": "4",
                                               "base_choice": "4", "tuned_choice": "5"}], "wrong_to_right": []}}]}


def judge_data(run_id: str) -> dict:
    """judge.json: 9 wins, 6 ties, 5 losses of 20 prompts from an endpoint judge, two categories."""
    iv = outcome_interval([1] * 9 + [0] * 6 + [-1] * 5)
    return {"schema_version": 1, "run": run_id,
            "judge": {"kind": "endpoint", "model": "judge-model", "url_host": "judge.example.com"},
            "prompt_set": "mt_bench_questions.jsonl", "items": 20, "wins": 9, "ties": 6, "losses": 5,
            "win_rate": (9 + 6 / 2) / 20, "interval": iv.to_dict(), "verdict_text": describe(iv, "prompts"),
            "per_category": [{"category": "writing", "items": 12, "wins": 7, "ties": 3, "losses": 2,
                              "win_rate": 0.708},
                             {"category": f"reasoning {HOSTILE}", "items": 8, "wins": 2, "ties": 3, "losses": 3,
                              "win_rate": 0.4375}],
            "votes_agreement": {"compared": 4, "agree": 3, "rate": 0.75}, "seconds": 30.0,
            "timestamp": "2026-01-31T12:05:00"}


JUDGE_LINES = [
    {"prompt": f"Write a haiku about {HOSTILE}", "category": "writing", "reference": "",
     "base": "Leaves fall", "tuned": "Autumn wind <b>whispers</b>", "verdict_base_first": "B",
     "verdict_tuned_first": "A", "outcome": "tuned"},
    {"prompt": "Is 17 prime?", "category": "reasoning", "reference": "Yes", "base": "Yes", "tuned": "No",
     "verdict_base_first": "A", "verdict_tuned_first": "B", "outcome": "base"},
]


def write_benchmarks(run_path: Path) -> dict:
    """Write checks/benchmarks.json into the run folder; returns its content."""
    data = benchmarks_data(run_path.name)
    (run_path / "checks").mkdir(exist_ok=True)
    write_json_atomic(run_path / "checks" / "benchmarks.json", data)
    return data


def write_judge(run_path: Path) -> dict:
    """Write checks/judge.json and checks/judge_examples.jsonl into the run folder; returns judge.json's content."""
    data = judge_data(run_path.name)
    (run_path / "checks").mkdir(exist_ok=True)
    write_json_atomic(run_path / "checks" / "judge.json", data)
    write_jsonl(run_path / "checks" / "judge_examples.jsonl", JUDGE_LINES)
    return data


def make_run(model: str = "base-model-folder") -> Run:
    """A run under the current runs root with a run.yaml, a stand-in adapter and 3 held-out rows."""
    run = create_run(RunConfig.from_dict({"model": model, "data_path": "toy.jsonl"}), name="Checked colours run")
    (run.adapter_dir).mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    write_jsonl(run.data_dir / "heldout.jsonl", [{"prompt": f"q{i}", "completion": "a"} for i in range(3)])
    run.set_status(state="completed", step=4, total_steps=4)
    return run


# -- fake backends ------------------------------------------------------------------------------------------
@dataclass
class FakeSpec:
    """Stands in for evaluation.judge.JudgeSpec (the contract's fields)."""

    kind: str
    model: str = "bundled"
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)


@pytest.fixture()
def ctx(runs_root, tmp_path, monkeypatch):
    """An AppContext whose model cache hands out a stand-in for the run's model (and records the keys)."""
    monkeypatch.setenv("STUDIO_UPLOADS_DIR", str(tmp_path / "uploads"))
    for name in ("STUDIO_PUBLIC", "STUDIO_REQUIRE_LOGIN", "APP_AUTH", "STUDIO_JUDGE_URL", "STUDIO_ADMINS"):
        monkeypatch.delenv(name, raising=False)
    context = AppContext()
    context.loaded = []
    monkeypatch.setattr(context.models, "get", lambda key, progress=None: context.loaded.append(key) or "MODEL")
    return context


@pytest.fixture()
def bench(monkeypatch):
    """A fake evaluation.benchmarks: records each call; `bench.during(run)` runs mid-check; writes the
    fixture benchmarks.json (or raises InterruptedError once its cancel Event is set)."""
    module = types.ModuleType("evaluation.benchmarks")
    module.BENCHMARKS = {"arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge", "hellaswag": "HellaSwag",
                         "mmlu": "MMLU"}
    module.calls, module.during = [], lambda run: None

    def run_benchmarks(run, names=("arc_easy",), limit=100, num_fewshot=0, data_dir=None, batch_size=32,
                       progress=None, cancel=None, model=None, load_model=None):
        module.calls.append({"names": names, "limit": limit, "num_fewshot": num_fewshot, "model": load_model()})
        progress("ARC-Easy: tuned 40/80 items", 0.5)
        module.during(run)
        if cancel is not None and cancel.is_set():
            raise InterruptedError("cancelled")
        return write_benchmarks(run.path)

    module.run_benchmarks = run_benchmarks
    monkeypatch.setitem(sys.modules, "evaluation.benchmarks", module)
    return module


@pytest.fixture()
def judge(monkeypatch):
    """A fake evaluation.judge: judge_spec_from_env gives the server's key to admins only in public mode
    and a typed key to anyone; judge_run records its arguments and writes the fixture judge.json."""
    module = types.ModuleType("evaluation.judge")
    module.JudgeSpec, module.calls, module.env_calls, module.fail = FakeSpec, [], [], None

    def judge_spec_from_env(public, is_admin, typed_key):
        module.env_calls.append((public, is_admin, typed_key))
        key = typed_key or (None if public and not is_admin else "sk-owner")
        return FakeSpec("endpoint", "judge-model", "https://judge.example.com/v1", key) if key else None

    def judge_run(run, prompt_set="heldout", judge=None, limit=20, use_reference=True, max_new_tokens=256,
                  progress=None, cancel=None, model=None, load_model=None):
        module.calls.append({"prompt_set": prompt_set, "judge": judge, "limit": limit,
                             "use_reference": use_reference, "model": load_model()})
        if module.fail:
            raise RuntimeError(module.fail.format(key=judge.api_key))
        return write_judge(run.path)

    module.judge_spec_from_env, module.judge_run = judge_spec_from_env, judge_run
    monkeypatch.setitem(sys.modules, "evaluation.judge", module)
    return module


def browser_request(key: str = "k" * 24):
    """What visitor() reads from a request: an anonymous browser with its visitor cookie."""
    return types.SimpleNamespace(username=None, cookies={"studio_visitor": key}, session_hash="s", session={})


# -- showing saved checks -----------------------------------------------------------------------------------
def test_saved_checks_show_as_soon_as_the_run_is_picked(ctx):
    run = make_run()
    bench_data, judge_data_ = write_benchmarks(run.path), write_judge(run.path)
    line, token, status, html = eval_checks.watch_check(ctx, "benchmarks", run.id, eval_checks.show_benchmarks)
    assert (line, token) == ("", None)
    assert status.startswith("General skills of run **Checked colours run") and "local folder datasets" in status
    assert "/srv" not in status and "0\\-shot" in status
    arc, mmlu = bench_data["benchmarks"][0]["metrics"][1], bench_data["benchmarks"][1]["metrics"][0]
    assert f"<b>ARC-Easy (acc_norm)</b>: {arc['verdict_text']}" in html  # the main metric's sentence, plainly
    assert arc["verdict_text"].startswith("not distinguishable from no change on 40 items")
    assert mmlu["verdict_text"] in html and '<span class="ev-worse">-0.450 worse</span>' in html
    assert '<td class="ev-num">-0.600 to -0.300</td>' in html  # MMLU's 95% CI
    # what tuned forgot comes first, with the question, the right answer and both picks; escaped
    lost, gained = html.index('id="bench-lost"'), html.index('id="bench-gained"')
    assert lost < html.index(LOST_QUESTION) < gained < html.index(GAINED_QUESTION)
    assert "Right → wrong (base right, tuned wrong): 2 items" in html
    assert "Right answer: <b>carbon dioxide</b> · base picked carbon dioxide · tuned picked <b>oxygen</b>" in html
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    line, token, status, html = eval_checks.watch_check(ctx, "judge", run.id, eval_judge.show_judge)
    assert status.startswith("Judge results for run **Checked colours run") and "took 30 s" in status
    assert "Tuned vs base on 20 prompts: 9 wins, 6 ties, 5 losses (win rate 0.60" in html
    assert judge_data_["verdict_text"] in html and "judge.example.com" in html
    assert "<td class=\"ev-metric\">reasoning &lt;script&gt;" in html and ">0.71<" in html
    assert "3 of 4 prompts (75%)" in html and html.count('<article class="ev-card') == 2
    assert "Write a haiku about &lt;script&gt;" in html and "Autumn wind &lt;b&gt;whispers&lt;/b&gt;" in html
    assert "tuned better" in html and "base better" in html and "<b>whispers" not in html


def test_a_run_without_checks_says_what_to_do(ctx):
    run = make_run()
    status, html = eval_checks.show_benchmarks(run.id)
    assert "not checked yet" in status and "Check general skills" in status and html == ""
    status, html = eval_judge.show_judge(run.id)
    assert "not judged yet" in status and html == ""
    assert eval_checks.show_benchmarks("") == ("", "")
    with pytest.raises(gr.Error, match="not a run id"):
        eval_checks.show_benchmarks("../../etc")


# -- the general-skill check --------------------------------------------------------------------------------
def test_benchmark_check_runs_on_the_shared_model_and_every_page_sees_its_progress(ctx, bench):
    run = make_run()
    seen = {}

    def during(_run):  # another page watching the run, mid-check
        seen["watch"] = eval_checks.watch_check(ctx, "benchmarks", run.id, eval_checks.show_benchmarks)
        seen["tick"] = eval_checks.poll_check(ctx, "benchmarks", run.id, None, eval_checks.show_benchmarks)

    bench.during = during
    said = []
    view = eval_checks.run_benchmarks_check(ctx, run.id, ["arc_easy", "mmlu"], 40, 2,
                                            progress=lambda text, f: said.append((text, f)))
    assert bench.calls == [{"names": ("arc_easy", "mmlu"), "limit": 40, "num_fewshot": 2, "model": "MODEL"}]
    assert ctx.loaded == [f"run:{run.id}"]  # the app's copy of the run's model, as the held-out evaluation
    assert said == [("ARC-Easy: tuned 40/80 items", 0.5)]
    line = "Checking general skills of **Checked colours run**: ARC\\-Easy: tuned 40/80 items (50 % done)"
    assert seen["watch"][0] == line and seen["watch"][1] is not None
    assert seen["tick"][:2] == (line, seen["watch"][1])  # a page that had not seen it gets the token
    assert ctx.checks.get(f"benchmarks:{run.id}") is None  # no longer in progress
    assert "General skills of run" in view.status and 'id="bench-table"' in view.results
    ended = eval_checks.poll_check(ctx, "benchmarks", run.id, seen["watch"][1], eval_checks.show_benchmarks)
    assert ended[:2] == ("", None) and ended[2:] == tuple(view)  # the page that saw it gets the results


def test_bad_benchmark_settings_are_refused_before_anything_runs(ctx, bench):
    run = make_run()
    for args, message in ((([], 100, 0), "choose at least one"), ((["arc_easy", "../x"], 100, 0), "choose at least one"),
                          ((["arc_easy"], 0, 0), "Items per benchmark must be a whole number from 1 to 2000"),
                          ((["arc_easy"], 2.5, 0), "Items per benchmark"),
                          ((["arc_easy"], None, 0), "Items per benchmark must be a whole number"),
                          ((["arc_easy"], 100, 6), "Few-shot examples must be a whole number from 0 to 5")):
        with pytest.raises(gr.Error, match=message):
            eval_checks.run_benchmarks_check(ctx, run.id, *args)
    with pytest.raises(gr.Error, match="Pick a run first"):
        eval_checks.run_benchmarks_check(ctx, "", ["arc_easy"])
    assert bench.calls == [] and ctx.loaded == []


def test_a_cancelled_check_saves_nothing_and_keeps_the_previous_one(ctx, bench):
    run = make_run()
    before = write_benchmarks(run.path)
    event, button = eval_checks.arm_check(None)
    assert button["interactive"] is False
    bench.during = lambda _run: eval_checks.cancel_check(event)
    (run.path / "checks" / "benchmarks.json").write_text(json.dumps({**before, "seconds": 99.0}))
    with pytest.warns(UserWarning, match="cancelled"):
        view = eval_checks.run_benchmarks_check(ctx, run.id, ["arc_easy"], 10, 0, cancel=event)
    assert view.status.endswith(eval_checks.CHECK_CANCELLED) and "took 99 s" in view.status
    assert json.loads((run.path / "checks" / "benchmarks.json").read_text())["seconds"] == 99.0
    assert ctx.checks.get(f"benchmarks:{run.id}") is None


def test_one_check_of_a_kind_per_run_at_a_time(ctx, bench):
    run = make_run()
    running = ctx.checks.start(f"benchmarks:{run.id}", run.name)
    try:
        with pytest.raises(gr.Error, match="being checked already"):
            eval_checks.run_benchmarks_check(ctx, run.id, ["arc_easy"])
    finally:
        ctx.checks.finish(running)
    assert bench.calls == []


def test_only_the_runs_owner_replaces_its_checks_in_a_public_app(ctx, bench, judge, monkeypatch):
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    run = make_run()
    write_owner(run.path, Visitor.from_browser_key("o" * 24).owner_record())
    write_benchmarks(run.path)
    other = browser_request("x" * 24)
    assert "General skills of run" in eval_checks.show_benchmarks(run.id).status  # everyone may look
    with pytest.raises(gr.Error, match="Only the person who started run .* can run the general-skill check on it"):
        eval_checks.run_benchmarks_check(ctx, run.id, ["arc_easy"], request=other)
    with pytest.raises(gr.Error, match="can judge it"):
        eval_judge.judge_check(ctx, run.id, request=other)
    assert bench.calls == [] and judge.calls == []
    eval_checks.run_benchmarks_check(ctx, run.id, ["arc_easy"], request=browser_request("o" * 24))
    assert len(bench.calls) == 1


# -- the judge ----------------------------------------------------------------------------------------------
def test_judge_runs_the_chosen_local_judge_on_the_shared_model(ctx, judge):
    run = make_run()
    view = eval_judge.judge_check(ctx, run.id, "heldout", None, 5, "bundled", "", False)
    base = eval_judge.judge_check(ctx, run.id, "heldout", None, 5, "base")
    first, second = judge.calls
    assert first["judge"] == FakeSpec("local", "bundled") and second["judge"] == FakeSpec("local", "base-model-folder")
    assert (first["prompt_set"], first["limit"], first["use_reference"], first["model"]) == ("heldout", 5, False,
                                                                                           "MODEL")
    assert second["use_reference"] is True and ctx.loaded == [f"run:{run.id}"] * 2
    assert judge.env_calls == []  # a local judge never touches the server's key
    for shown in (view, base):
        assert "9 wins, 6 ties, 5 losses" in shown.results and shown.status.startswith("Judge results for run")
    for args, message in ((("heldout", None, 0, "bundled"), "Number of prompts must be a whole number from 1"),
                          (("heldout", None, 5, "gpt"), "choose one of the judges listed"),
                          (("heldout", None, 5, "endpoint"), "has no judge endpoint"),
                          (("elsewhere", None, 5, "bundled"), "Prompts: choose")):
        with pytest.raises(gr.Error, match=message):
            eval_judge.judge_check(ctx, run.id, *args)
    assert len(judge.calls) == 2


def test_a_prompt_file_is_copied_under_a_server_made_name(ctx, judge, tmp_path):
    run = make_run()
    upload = tmp_path / "my prompts (final).jsonl"
    upload.write_text('{"question_id": 1, "category": "writing", "turns": ["Write a poem."]}\n')
    eval_judge.judge_check(ctx, run.id, "file", str(upload), 10, "bundled")
    used = Path(judge.calls[0]["prompt_set"])
    assert used.parent == tmp_path / "uploads" and used.suffix == ".jsonl" and "prompts" not in used.name
    assert used.read_text() == upload.read_text()
    csv = tmp_path / "prompts.csv"
    csv.write_text("a,b\n")
    for source, file, message in (("file", None, "upload a .jsonl prompt file first"),
                                  ("file", str(csv), "must be a .jsonl file")):
        with pytest.raises(gr.Error, match=message):
            eval_judge.judge_check(ctx, run.id, source, file, 10, "bundled")
    assert len(judge.calls) == 1


ENDPOINT = "https://user:secretpw@judge.example.com:8443/v1?token=urlsecret"


def test_endpoint_shows_its_host_only_and_a_public_visitor_never_spends_the_owners_key(ctx, judge, monkeypatch,
                                                                                       caplog):
    monkeypatch.setenv("STUDIO_JUDGE_URL", ENDPOINT)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    public = AppContext()
    public.models = ctx.models
    run = make_run()
    owner = browser_request("o" * 24)  # in a public app only the browser that started the run may judge it
    write_owner(run.path, Visitor.from_browser_key("o" * 24).owner_record())
    labels = [label for label, _value in eval_judge.judge_choices()]
    assert labels[-1] == "OpenAI-compatible endpoint at judge.example.com:8443"
    assert not any(secret in " ".join(labels) for secret in ("secretpw", "urlsecret", "user:", "/v1"))
    # no key typed, not an admin: refused before anything runs, and the owner's key is not used
    with pytest.raises(gr.Error, match="server's key is for admins only"):
        eval_judge.judge_check(public, run.id, "heldout", None, 5, "endpoint", "   ", request=owner)
    assert judge.env_calls == [(True, False, None)] and judge.calls == []
    # a typed key: used for this call's spec only, shown nowhere, kept nowhere
    typed = "sk-visitor-0123456789"
    view = eval_judge.judge_check(public, run.id, "heldout", None, 5, "endpoint", f" {typed} ", request=owner)
    assert judge.env_calls[-1] == (True, False, typed) and judge.calls[-1]["judge"].api_key == typed
    assert typed not in repr(judge.calls[-1]["judge"])  # the spec's repr hides it
    assert typed not in "".join(view) and typed not in repr(vars(public)) and typed not in caplog.text
    # the endpoint fails with the key in its message: neither the page nor the log shows it
    judge.fail = "401 Unauthorized for key {key}"
    with pytest.raises(gr.Error) as info:
        eval_judge.judge_check(public, run.id, "heldout", None, 5, "endpoint", typed, request=owner)
    assert typed not in str(info.value) and "***" in str(info.value) and typed not in caplog.text
    assert "401 Unauthorized for key ***" in caplog.text  # logged, with the key blanked
    with pytest.raises(gr.Error, match="does not look like a key") as info:
        eval_judge.judge_check(public, run.id, "heldout", None, 5, "endpoint", "two words", request=owner)
    assert "two words" not in str(info.value)


def test_an_admin_may_use_the_servers_key(ctx, judge, monkeypatch):
    monkeypatch.setenv("STUDIO_JUDGE_URL", ENDPOINT)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    monkeypatch.setenv("STUDIO_ADMINS", "alice")
    public = AppContext()
    public.models = ctx.models
    run = make_run()
    admin = types.SimpleNamespace(username="alice", cookies={}, session_hash="s", session={})
    eval_judge.judge_check(public, run.id, "heldout", None, 5, "endpoint", "", request=admin)
    assert judge.env_calls == [(True, True, None)] and judge.calls[0]["judge"].api_key == "sk-owner"


# -- the tab as built ---------------------------------------------------------------------------------------
def test_the_tab_offers_both_checks_with_a_password_box(ctx, monkeypatch):
    from ui import eval_tab
    from ui_support import shared_for

    with gr.Blocks() as demo:
        parts = eval_tab.build(ctx, shared_for(demo))
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["judge-key"].type == "password" and by_id["judge-key"].visible is False  # no endpoint set
    assert [value for _label, value in by_id["judge-choice"].choices] == ["bundled", "base"]
    assert [value for _label, value in by_id["bench-names"].choices] == ["arc_easy", "arc_challenge", "hellaswag",
                                                                          "mmlu"]
    assert by_id["bench-limit"].value == 100 and by_id["bench-fewshot"].maximum == 5
    assert parts.checks == [by_id["benchmarks-status"], by_id["benchmarks-results"], by_id["judge-status"],
                            by_id["judge-results"]]
    monkeypatch.setenv("STUDIO_JUDGE_URL", ENDPOINT)
    with gr.Blocks() as demo:
        eval_tab.build(ctx, shared_for(demo))
    key = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "judge-key")
    assert key.visible is True and key.value == ""


def test_summary_shows_each_interval_and_the_headline_sentence():
    sentence = "not distinguishable from no change on 45 rows (+0.020, 95% CI -0.040 to +0.080)"
    summary = [{"metric": "rougeL", "base": 0.30, "tuned": 0.32, "delta": 0.02, "interval": {"low": -0.04, "high": 0.08},
                "verdict_text": sentence},
               {"metric": "exact_match", "base": 0.0, "tuned": 0.5, "delta": 0.5, "interval": {"low": 0.3, "high": 0.7},
                "verdict_text": "better on 45 rows (+0.500, 95% CI +0.300 to +0.700)"},
               {"metric": "eval_loss", "base": 2.0, "tuned": 1.5, "delta": -0.5, "higher_is_better": False,
                "interval": None}]
    from ui.eval_cards import summary_html

    table = summary_html(summary, "generation")
    assert table.startswith(f'<p class="ev-headline" id="eval-headline"><b>rougeL</b>: {sentence}</p>')
    assert ('<td class="ev-num"><span class="ev-unclear">+0.020 no clear change</span></td>'
            '<td class="ev-num">-0.040 to +0.080</td>') in table
    assert '<span class="ev-better">+0.500 better</span></td><td class="ev-num">+0.300 to +0.700</td>' in table
    assert '<span class="ev-better">-0.500 better</span></td><td class="ev-num">—</td>' in table  # no interval
    assert f'<td class="ev-why" colspan="5">{sentence}</td>' in table and "<th>95% CI</th>" in table
    old = summary_html([{"metric": "accuracy", "base": 0.1, "tuned": 0.4, "delta": 0.3}], "classification")
    assert "ev-headline" not in old and "ev-why" not in old and '<td class="ev-num">—</td>' in old


def test_a_tampered_check_file_cannot_add_markup():
    data = benchmarks_data("20260101-000000-x-abcdef")
    data["benchmarks"][0].update(name='arc" onmouseover="alert(1)', title="<b>ARC</b>")
    html = eval_checks.benchmarks_html(data)
    assert 'onmouseover="' not in html and "<b>ARC</b>" not in html and "&lt;b&gt;ARC&lt;/b&gt;" in html
