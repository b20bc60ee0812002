"""The model card's metadata is huggingface_hub's own (it parses back with ModelCard), it says how to
serve the export, and it and the stakeholder report carry each recorded parity verdict."""
from __future__ import annotations

import shutil

import pytest

from evaluation.compare import compare
from evaluation.model_card import card_files, model_card
from evaluation.report import report
from finetune_core.export.parity import ParityResult, save_parity
from finetune_core.runs.store import Run


@pytest.fixture()
def evaluated_run(trained_run, tmp_path) -> Run:
    """A copy of the trained run with a saved base-vs-tuned evaluation."""
    run = Run(tmp_path / "runs" / trained_run.id)
    shutil.copytree(trained_run.path, run.path)
    shutil.rmtree(run.eval_dir, ignore_errors=True)
    shutil.rmtree(run.path / "export", ignore_errors=True)  # parity records other tests may have left
    compare("generation", ["colour of ball 1?", "ball 2?", "ball 3?"], ["red", "blue", "red"],
            ["blue", "blue", "red"], ["red", "blue", "blue"]).save(run.eval_dir)
    return run


def _parsed(text: str):
    from huggingface_hub import ModelCard

    return ModelCard(text)


def test_card_metadata_parses_back_with_huggingface_hub(evaluated_run, tmp_path):
    from huggingface_hub import ModelCard

    (tmp_path / "README.md").write_bytes(card_files(evaluated_run, "adapter", curve=False)["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert {"finetune-studio", "sft", "lora"} <= set(card.data.tags)
    assert card.data.base_model is None  # the tiny fixture model is a local folder: no Hub id to name
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert {"rouge1", "rougeL", "exact_match"} <= set(metrics) and set(card.data.metrics) == set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    assert "# " in card.text and "## Training data" in card.text and "toy.jsonl" in card.text
    merged = _parsed(model_card(evaluated_run, "merged"))
    assert merged.data.library_name == "transformers"


def test_a_hub_base_model_is_named_with_its_licence_and_the_serving_commands(evaluated_run):
    import yaml

    data = evaluated_run.run_yaml()
    data.update(model="bundled", lora_r=8)
    (evaluated_run.path / "run.yaml").write_text(yaml.safe_dump(data))
    card = _parsed(model_card(evaluated_run, "adapter", None, repo_id="me/my-adapter"))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert "## How to run it" in card.text
    assert (f"vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora --lora-modules "
            f"{evaluated_run.id}=me/my-adapter --max-lora-rank 8") in card.text
    assert f"--lora-adapters {evaluated_run.id}=me/my-adapter" in card.text
    merged = _parsed(model_card(evaluated_run, "merged", None)).text
    assert f"folder = './{evaluated_run.id}-merged'" in merged and "apply_chat_template" in merged


def test_recorded_parity_verdicts_reach_the_card_and_the_report(evaluated_run, tmp_path):
    assert "parity" not in model_card(evaluated_run, "adapter", None).lower()
    _, md_path = report(evaluated_run, tmp_path / "before")
    assert "Exported models" not in md_path.read_text()
    save_parity(evaluated_run, ParityResult("gguf-f16", "llama.cpp", checked=True, prompts=20, identical=20,
                                            token_agreement=1.0, file="run-f16.gguf"))
    save_parity(evaluated_run, ParityResult("merged", "transformers", reason="skipped (0 prompts asked for)"))
    card = model_card(evaluated_run, "merged", None)
    assert "gguf-f16: parity: 20/20 identical in llama.cpp" in card
    assert "merged: parity not checked: skipped" in card
    html_path, md_path = report(evaluated_run, tmp_path / "after")
    for text in (md_path.read_text(), html_path.read_text()):
        assert "Exported models" in text and "parity: 20/20 identical in llama.cpp" in text
