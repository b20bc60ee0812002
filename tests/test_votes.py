"""Blind A/B votes persist in the run's votes.jsonl, and run directories carry a schema
version: a vote becomes one line as it is cast, a reloaded Chat tab and the report
count the same file, a line cut by a crash is skipped, and a run directory written
before versions existed still opens (read as version 1, migrated in memory).

    .venv/bin/python -m pytest -q tests/test_votes.py
"""
from __future__ import annotations

import json
import time

import pytest
import yaml

from finetune_core.config import RunConfig
from finetune_core.inference import chat
from finetune_core.inference.votes import VOTES_FILE, append_vote, load_votes
from finetune_core.runs.store import SCHEMA_VERSION, Run, create_run, get_run, list_runs


class FakeModel:
    """Streams 'base-N' / 'tuned-N' at once (the sides are what matters here)."""

    has_tuned = True

    def __init__(self):
        self.turn = 0

    def stream_pair(self, base_messages, tuned_messages, settings=None, cancel=None):
        self.turn += 1
        yield f"base-{self.turn}", f"tuned-{self.turn}"


@pytest.fixture()
def run(runs_root) -> Run:
    return create_run(RunConfig.from_dict({"model": "bundled", "data_path": "toy.jsonl"}), label="votes")


def blind_turn(session: chat.ChatSession, model: FakeModel, message: str) -> str:
    """One blind turn; returns the side ("left"/"right") the tuned answer was shown on."""
    list(chat.stream_chat(model, session, message))
    return session.tuned_sides[-1]


def test_a_vote_is_one_line_with_panes_models_and_winner(run):
    session, model = chat.ChatSession(blind=True, seed=1, run=run), FakeModel()
    side = blind_turn(session, model, "What is 2+2?")
    chat.record_vote(session, side)  # the voter picked the tuned pane
    lines = (run.path / VOTES_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    pane = "A" if side == "left" else "B"
    other = "B" if pane == "A" else "A"
    assert line["schema_version"] == SCHEMA_VERSION and line["winner"] == pane
    assert line["prompt"] == "What is 2+2?"
    assert line["answers"] == {pane: "tuned-1", other: "base-1"}
    assert line["models"] == {pane: f"tuned:{run.id}", other: "base:bundled"}
    assert time.strptime(line["time"], "%Y-%m-%dT%H:%M:%SZ")
    # what the in-memory vote holds travels too: DPO pairs can be rebuilt from the file
    assert line["prompt_tuned"][-1] == {"role": "user", "content": "What is 2+2?"} and line["tuned"] == "tuned-1"


def test_a_new_session_and_the_report_count_the_saved_votes(run, tmp_path):
    from evaluation.report_facts import gather, read_votes

    session, model = chat.ChatSession(blind=True, seed=5, run=run), FakeModel()
    for choice in ("tuned", "tuned", "base", "tie"):
        side = blind_turn(session, model, f"q{model.turn}")
        other = "right" if side == "left" else "left"
        chat.record_vote(session, {"tuned": side, "base": other}.get(choice, choice))
    reloaded = chat.ChatSession(run=get_run(run.id))  # a page reload: a fresh session, the same run
    assert reloaded.votes == []
    counted = chat.tally(chat.saved_votes(reloaded))
    assert (counted["votes"], counted["tuned"], counted["base"], counted["tie"]) == (4, 2, 1, 1)
    assert [v["winner"] for v in read_votes(run)] == ["tuned", "tuned", "base", "tie"]
    assert gather(run, with_curve=False).votes["tuned_win_rate"] == pytest.approx(2 / 3)
    out = tmp_path / "pairs.jsonl"
    assert chat.export_preferences(chat.saved_votes(reloaded), out) == 3  # ties make no pair
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["chosen"] == [{"role": "assistant", "content": "tuned-1"}]
    assert first["rejected"] == [{"role": "assistant", "content": "base-1"}]


def test_a_line_cut_by_a_crash_is_skipped_counted_and_closed_off(run):
    session, model = chat.ChatSession(blind=True, seed=2, run=run), FakeModel()
    chat.record_vote(session, blind_turn(session, model, "one"))
    with open(run.path / VOTES_FILE, "a", encoding="utf-8") as fh:
        fh.write('{"schema_version": 2, "winner": "A", "prom')  # the process died mid-write
    votes, skipped = load_votes(run)
    assert len(votes) == 1 and skipped == 1
    chat.record_vote(session, blind_turn(session, model, "two"))  # the next vote starts a fresh line
    votes, skipped = load_votes(run)
    assert [v["prompt"] for v in votes] == ["one", "two"] and skipped == 1


def test_version_1_vote_lines_still_count(run):
    old = [{"winner": "tuned"}, {"winner": "base"}, {"winner": "sideways"}, ["not", "a", "vote"]]
    (run.path / VOTES_FILE).write_text("\n".join(map(json.dumps, old)) + "\n", encoding="utf-8")
    votes, skipped = load_votes(run)
    assert [v["winner"] for v in votes] == ["tuned", "base"] and skipped == 2


def test_votes_from_concurrent_sessions_are_whole_lines(run):
    import threading

    vote = {"prompt_base": [], "prompt_tuned": [{"role": "user", "content": "x" * 5000}], "base": "b" * 5000,
            "tuned": "t", "tuned_side": "right", "choice": "right", "winner": "tuned"}
    threads = [threading.Thread(target=lambda: [append_vote(run, vote) for _ in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    votes, skipped = load_votes(run)
    assert len(votes) == 80 and skipped == 0


def test_the_chat_tab_shows_the_saved_tally_after_a_reload(run, monkeypatch):
    pytest.importorskip("gradio")
    from ui import chat_tab

    session, model = chat.ChatSession(blind=True, seed=4, run=run), FakeModel()
    chat.record_vote(session, blind_turn(session, model, "hi"))
    text = chat_tab.run_tally(f"run:{run.id}")  # a fresh page: nothing in its session, the file counts
    assert "100%" in text and "tuned 1" in text
    assert "No votes yet" in chat_tab.run_tally("base:bundled")
    path = chat_tab.export_votes(None, f"run:{run.id}")  # export after a reload, from the file
    assert json.loads(open(path, encoding="utf-8").read())["chosen"][0]["content"] == "tuned-1"


# -- schema versions -----------------------------------------------------------------------------
def write_version_1_run(root, run_id: str = "20250101-120000-old-run-abc123") -> Run:
    """A run directory as the code before schema versions wrote it: run.yaml and status.json
    without schema_version."""
    path = root / run_id
    (path / "data").mkdir(parents=True)
    (path / "checkpoints").mkdir()
    cfg = RunConfig.from_dict({"model": "bundled", "data_path": "/srv/uploads/toy.jsonl", "lora_r": 8}).to_dict()
    (path / "run.yaml").write_text(yaml.safe_dump({**cfg, "resolved_device": "cpu"}, sort_keys=False),
                                   encoding="utf-8")
    (path / "status.json").write_text(json.dumps({"state": "completed", "step": 30, "total_steps": 30,
                                                  "reason": "", "created": 1735732800.0, "pid": 1}), encoding="utf-8")
    return Run(path)


def test_an_old_run_directory_opens_as_version_1_migrated_in_memory(runs_root):
    old = write_version_1_run(runs_root)
    before = (old.path / "status.json").read_bytes(), (old.path / "run.yaml").read_bytes()
    run = get_run(old.id)
    assert [r.id for r in list_runs()] == [old.id]
    assert run.run_yaml()["schema_version"] == 2 and run.run_yaml()["resolved_device"] == "cpu"
    assert run.status()["schema_version"] == 2 and run.status()["state"] == "completed"
    assert run.config().lora_r == 8 and run.summary()["state"] == "completed"
    assert ((old.path / "status.json").read_bytes(), (old.path / "run.yaml").read_bytes()) == before  # read only
    run.set_status(state="completed", reason="checked")  # the next write is in the current version
    assert json.loads((old.path / "status.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_new_runs_write_the_current_schema_version(run):
    assert yaml.safe_load((run.path / "run.yaml").read_text())["schema_version"] == SCHEMA_VERSION
    assert json.loads((run.path / "status.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert run.config() == RunConfig.from_dict({"model": "bundled", "data_path": "toy.jsonl"})  # the version is not a config field
