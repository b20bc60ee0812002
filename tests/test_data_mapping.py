"""DataMapping: one description of the data a run learns from, kept whole from the Data tab to evaluation.

    .venv/bin/python -m pytest -q tests/test_data_mapping.py
"""
from __future__ import annotations

import json
from dataclasses import replace

import gradio as gr
import pytest
import yaml

from evaluation.run_eval import load_eval_rows
from finetune_core.config import ConfigError, RunConfig
from finetune_core.data.dataset import prepare_data, split_rows
from finetune_core.data.mapping import DataMapping
from finetune_core.runs.store import create_run
from finetune_core.training.train import prepare_split
from ui.data_tab import inspect_data, mapping_from_widgets
from ui.train_tab import build_config, data_fields

# A run.yaml as the studio wrote it before DataMapping existed: flat keys, the seed among
# the schedule settings, and facts the run recorded.
OLD_RUN_YAML = """\
model: bundled
data_path: uploads/20240101-000000-abcdef012345.csv
data_format: columns
prompt_column: ''
completion_column: summary
prompt_template: 'Summarise this support note:

  {note}'
completion_template: ''
system_prompt: Be brief.
eval_fraction: 0.25
eval_path: ''
max_train_rows: 480
max_eval_rows: 64
drop_bad_rows: false
method: lora
lora_r: 8
num_epochs: 1.0
seed: 1234
device: auto
resolved_device: cpu
"""


def test_an_unknown_mapping_key_is_refused_by_name():
    with pytest.raises(ValueError, match="'eval_fracton'"):
        DataMapping.from_dict({"data_path": "x.csv", "eval_fracton": 0.2})
    with pytest.raises(ConfigError, match="'prompt_colum'"):
        RunConfig.from_dict({"data_path": "x.csv", "prompt_colum": "q"})
    # the Data tab's state on its way to a run: a misspelt key is not dropped silently
    with pytest.raises(gr.Error, match="'held_out_pct'"):
        data_fields({"mapping": {"data_path": "x.csv", "held_out_pct": 20}, "name": "x", "rows": 1})
    with pytest.raises(gr.Error, match="'held_out_pct'"):
        mapping_from_widgets({"held_out_pct": 20})


def test_an_old_flat_run_yaml_loads_with_the_same_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(OLD_RUN_YAML, encoding="utf-8")
    cfg = RunConfig.load(path)
    assert cfg.data == DataMapping(
        data_path="uploads/20240101-000000-abcdef012345.csv", data_format="columns", completion_column="summary",
        prompt_template="Summarise this support note:\n{note}", system_prompt="Be brief.", eval_fraction=0.25,
        seed=1234, max_train_rows=480, max_eval_rows=64, drop_bad_rows=False)
    assert cfg.lora_r == 8 and cfg.model == "bundled"
    # saved again, the keys on disk are the same flat keys (no nested "data")
    cfg.save(tmp_path / "again.yaml")
    saved = yaml.safe_load((tmp_path / "again.yaml").read_text(encoding="utf-8"))
    old = yaml.safe_load(OLD_RUN_YAML)
    assert "data" not in saved and set(old) - {"resolved_device"} <= set(saved)
    assert {k: saved[k] for k in DataMapping.names()} == cfg.data.to_dict()


def test_held_out_percent_is_converted_once_at_the_widget_edge():
    assert mapping_from_widgets({"eval_fraction": 30, "seed": "7"}).eval_fraction == 0.3
    with pytest.raises(gr.Error, match="eval_fraction: 0.8 is above the maximum 0.5"):
        mapping_from_widgets({"eval_fraction": 80})
    with pytest.raises(gr.Error, match="Held-out %"):
        mapping_from_widgets({"eval_fraction": "a lot"})


def test_data_tab_to_training_to_evaluation_keeps_every_mapping_field(tmp_path, runs_root):
    rows = [{"question": f"Question {i}?", "answer": f"Answer {i}.", "label": "ab"[i % 2]} for i in range(40)]
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    chosen = mapping_from_widgets({"data_format": "columns", "prompt_column": "question", "completion_column": "answer",
                                   "system_prompt": "Answer briefly.", "eval_fraction": 30, "seed": 7,
                                   "drop_bad_rows": False})
    view = inspect_data({"path": str(src), "name": "qa"}, chosen)
    assert view.data_state is not None, view.status
    assert "seed 7" in view.summary and "12 held out" in view.summary

    cfg = build_config({"max_train_rows": 25}, view.data_state)  # the Train tab adds its own cap
    assert cfg.data == replace(chosen, data_path=str(src), max_train_rows=25)
    run = create_run(cfg)
    train, held, _ = prepare_split(run.config(), run)
    normalised = prepare_data(cfg.data).rows
    assert held == split_rows(normalised, 0.3, 7)[1] != split_rows(normalised, 0.3, DataMapping().seed)[1]
    assert len(train) == 25 and all(r["prompt"][0]["content"] == "Answer briefly." for r in train + held)
    eval_rows, _, source = load_eval_rows(run)
    assert source == "heldout" and eval_rows == held
    # evaluation on another file reads it with the run's own mapping
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    again, _, _ = load_eval_rows(run, str(other))
    assert again[0]["prompt"][0] == {"role": "system", "content": "Answer briefly."}
    assert again[0]["completion"][0]["content"] == "Answer 0."

