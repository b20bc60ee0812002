"""The stakeholder report of a run that started from another run: the chain base -> SFT -> DPO with
each step's held-out headline and votes, the answers the last step changed, and what a preference
run logged while training. Built from run folders written here (no training)."""
from __future__ import annotations

from evaluation.compare import compare
from evaluation.report import render_markdown
from evaluation.report_facts import gather
from finetune_core.config import RunConfig
from finetune_core.inference.votes import append_vote
from finetune_core.runs.store import create_run


def _run(name: str, **fields):
    run = create_run(RunConfig.from_dict({"model": "bundled", "data_path": f"{name}.jsonl", **fields}), name=name)
    (run.adapter_dir).mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    run.set_status(state="completed", step=40, total_steps=40)
    return run


def _evaluate(run, base_outputs, tuned_outputs):
    prompts = [f"prompt {i}" for i in range(len(base_outputs))]
    compare("generation", prompts, ["the good answer"] * len(prompts), base_outputs, tuned_outputs).save(run.eval_dir)


def _vote(run, winner_side: str):
    vote = {"prompt_base": [{"role": "user", "content": "hi"}], "prompt_tuned": [{"role": "user", "content": "hi"}],
            "base": "b", "tuned": "t", "tuned_side": "left", "choice": winner_side,
            "winner": "tuned" if winner_side == "left" else "base"}
    append_vote(run, vote)


def test_a_dpo_run_reports_its_chain_with_each_steps_headline_votes_and_changed_answers(runs_root):
    sft = _run("support-sft")
    _evaluate(sft, ["no", "no"], ["the good answer", "the good answer"])
    dpo = _run("support-dpo", objective="dpo", parent_run=sft.id, data_path="pairs.jsonl")
    _evaluate(dpo, ["the good answer", "same words"], ["the good answer indeed", "same words"])
    for side in ("left", "left", "right"):
        _vote(dpo, side)
    dpo.append_metric({"event": "train", "step": 2, "loss": 0.69, "rewards/accuracies": 0.25, "rewards/margins": 0.0})
    dpo.append_metric({"event": "train", "step": 40, "loss": 0.41, "rewards/accuracies": 0.875,
                       "rewards/margins": 0.62})

    facts = gather(dpo, with_curve=False)
    text = render_markdown(facts)

    assert "## The chain of runs" in text
    assert "SmolLM2-135M-Instruct" in text or "bundled" in text
    assert "bundled -&gt; support-sft -&gt; support-dpo" in text or "bundled -> support-sft -> support-dpo" in text
    table = text.split("## The chain of runs")[1].split("\n## ")[0]
    sft_row = next(line for line in table.splitlines() if "support-sft" in line and "sft.jsonl" in line)
    dpo_row = next(line for line in table.splitlines() if line.startswith("| 2 |"))
    assert "rougeL 0.000 → 1.000" in sft_row and "| none |" in sft_row
    assert "dpo" in dpo_row and "pairs.jsonl" in dpo_row and "3 votes, 67% for this step" in dpo_row
    # only the prompt whose answer changed is listed, before and after
    assert "the good answer indeed" in table and "same words" not in table
    assert "before (support-sft)" in table
    training = text.split("## Training")[1].split("\n## ")[0]
    assert "Reward accuracy on training batches | 0.250 → 0.875" in training
    config = text.split("## Configuration")[1].split("\n## ")[0]
    assert f"parent\\_run | {dpo.config().parent_run}" in config and "objective | dpo" in config


def test_a_run_from_the_base_model_has_no_chain_section(runs_root):
    run = _run("plain")
    assert gather(run, with_curve=False).chain is None
    assert "The chain of runs" not in render_markdown(gather(run, with_curve=False))


def test_a_deleted_parent_is_named_instead_of_breaking_the_report(runs_root):
    import shutil

    sft = _run("gone-sft")
    dpo = _run("orphan-dpo", objective="dpo", parent_run=sft.id)
    shutil.rmtree(sft.path)
    text = render_markdown(gather(dpo, with_curve=False))
    assert f"starts from run {sft.id}, which no longer exists" in text


def test_the_evaluation_of_a_run_with_a_parent_is_titled_by_its_sides(runs_root):
    import json

    sft = _run("names-sft")
    dpo = _run("names-dpo", objective="dpo", parent_run=sft.id)
    _evaluate(dpo, ["x", "y"], ["the good answer", "y"])
    (dpo.eval_dir / "meta.json").write_text(json.dumps({"labels": {"a": "names-sft", "b": "names-dpo"}}))
    text = render_markdown(gather(dpo, with_curve=False))
    assert "## names-sft vs names-dpo (generation, 2 held-out rows)" in text
    assert "| metric | names-sft | names-dpo | names-dpo − names-sft |" in text
    assert "Biggest wins (names-dpo better)" in text and "Base vs tuned" not in text
