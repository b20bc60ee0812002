"""The Evaluate tab's checks: general skills (did it forget anything?) and the pairwise judge.

The handlers are called as plain functions on a run made for each test (a run.yaml, a
stand-in adapter file and held-out rows; nothing trained): the backends
(evaluation.benchmarks.run_benchmarks, evaluation.judge.judge_run) are replaced by
fakes that record what the tab asked for and write checks/*.json in the schema of
/tmp/r20/contracts.md, so these tests say what the tab does with them. The fixture
writers here (`write_benchmarks`, `write_judge`) are shared with tests/test_report_checks.py
and tests/test_browser_eval.py.
"""
from __future__ import annotations

import json
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest

from evaluation.significance import describe, outcome_interval, paired_exact
from finetune_core.config import RunConfig
from finetune_core.data.dataset import write_jsonl
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
