"""Runs with a random LoRA adapter on the tiny model, made in a second instead of trained.

A random adapter (PEFT's ``init_lora_weights=False``) changes every targeted layer, so two runs, a
run and its parent, or a chain and its merged weights answer differently: what the side tests need.
`parent` writes ``parent_run`` into the child's run.yaml, as training a child run does.
"""
from __future__ import annotations

import time
from pathlib import Path

from conftest import toy_rows

PREFERENCE_ROWS = [
    {"prompt": [{"role": "user", "content": f"Name colour number {i}."}],
     "chosen": [{"role": "assistant", "content": ["red", "blue", "green"][i % 3]}],
     "rejected": [{"role": "assistant", "content": "I will not answer that question today."}]}
    for i in range(6)
]


def adapter_run(model_dir: Path, parent=None, seed: int = 0, heldout: list[dict] | None = None,
                targets=("q_proj", "v_proj", "down_proj")):
    """A completed run on `model_dir` with a random adapter (child of `parent` when given) and a held-out
    split (`heldout`, default: 4 toy prompt/completion rows)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune_core.config import RunConfig
    from finetune_core.data.dataset import write_jsonl
    from finetune_core.runs.store import create_run, write_json_atomic

    settings = dict(model=str(model_dir), data_path="toy.jsonl", max_steps=1, lora_r=4, lora_alpha=8,
                    precision="float32")
    if parent is not None:
        settings["parent_run"] = parent.id
    run = create_run(RunConfig.from_dict(settings))
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False,
                      task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(run.adapter_dir)
    write_jsonl(run.data_dir / "heldout.jsonl", heldout if heldout is not None else toy_rows(4))
    write_json_atomic(run.data_dir / "report.json", {"format": "prompt_completion", "rows": 4, "labels": None})
    run.set_status(state="completed", step=1, total_steps=1)
    time.sleep(1.01)  # run ids carry the second they were made: the next run is newer
    return run
