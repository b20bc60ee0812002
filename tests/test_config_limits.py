"""Config input limits of a public deployment (issue #16): run.yaml files and run
config values are refused before any work starts, with a message naming the
field (YAML aliases, size, nesting; NaN and infinite numbers).

    .venv/bin/python -m pytest -q tests/test_config_limits.py
"""
from __future__ import annotations

import time

import gradio as gr
import pytest

from finetune_core.config import ConfigError, RunConfig
from finetune_core.runs.store import Run
from ui.train_tab import config_from_yaml_file
from ui.widgets import config_from_values


def alias_bomb(levels: int = 8) -> str:
    """The 'billion laughs' YAML: each anchor repeats the one before nine times
    (8 levels: 43 million strings once copied into the template, ~12 s and ~0.9 GB before the fix)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"prompt_template: *a{levels - 1}")
    return "\n".join(lines) + "\n"


# -- 1. config YAML ----------------------------------------------------------------
def test_alias_bomb_refused_quickly_everywhere_run_yaml_is_read(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(alias_bomb())
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="anchors and aliases"):
        RunConfig.load(path)
    with pytest.raises(gr.Error, match="anchors and aliases"):
        config_from_yaml_file(str(path))
    with pytest.raises(ConfigError, match="anchors and aliases"):
        Run(tmp_path).run_yaml()
    assert time.perf_counter() - start < 2  # the old loader took seconds and gigabytes here


def test_a_single_anchor_or_merge_key_is_refused_too(tmp_path):
    path = tmp_path / "run.yaml"
    from finetune_core.config import read_config_yaml

    path.write_text("base: &b {lora_r: 8}\nrun:\n  <<: *b\n")
    with pytest.raises(ConfigError, match="line 1: YAML anchors"):
        read_config_yaml(path)


def test_oversized_run_yaml_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_LIMIT_RUN_YAML_BYTES", "100")
    path = tmp_path / "run.yaml"
    path.write_text("system_prompt: " + "x" * 200 + "\n")
    expected = r"size of the run.yaml in bytes is 216, over .* 100 .*STUDIO_LIMIT_RUN_YAML_BYTES"
    with pytest.raises(gr.Error, match=expected):
        config_from_yaml_file(str(path))


def test_deeply_nested_yaml_is_a_config_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "run.yaml"
    from finetune_core.config import read_config_yaml

    path.write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_config_yaml(path)


def test_plain_run_yaml_still_round_trips(tmp_path):
    cfg = RunConfig.from_dict(dict(lora_r=8, system_prompt="Be brief."))
    cfg.save(tmp_path / "run.yaml", extra={"resolved_device": "cpu"})
    assert RunConfig.load(tmp_path / "run.yaml") == cfg
    assert Run(tmp_path).run_yaml()["resolved_device"] == "cpu"


def test_damaged_run_yaml_does_not_break_the_runs_list(tmp_path):
    (tmp_path / "run.yaml").write_text(alias_bomb(2))
    assert Run(tmp_path).summary()["model"] is None


# -- 6. non-finite numbers ---------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), "nan", float("inf"), "-inf", "1e999"])
def test_nan_and_inf_refused_in_float_fields_by_name(value):
    with pytest.raises(ConfigError, match="lora_dropout: .* is not a finite number"):
        RunConfig.from_dict({"lora_dropout": value})
    with pytest.raises(ConfigError, match="learning_rate"):
        RunConfig().with_overrides({"learning_rate": value})


def test_every_float_field_is_checked():
    floats = [name for name, f in RunConfig.__dataclass_fields__.items() if f.type in ("float", float)]
    assert floats  # eval_fraction, lora_dropout, num_epochs, learning_rate, weight_decay
    for name in floats:
        with pytest.raises(ConfigError, match=f"^{name}: nan is not a finite number"):
            RunConfig.from_dict({name: float("nan")})


def test_train_tab_values_are_validated():
    with pytest.raises(gr.Error, match="lora_dropout: nan is not a finite number"):
        config_from_values({"lora_dropout": float("nan")}, {"data_path": "x.jsonl"})


def test_a_fraction_for_a_whole_number_field_is_named_not_rounded():
    for value in ("8.5", 8.5):
        with pytest.raises(ConfigError, match="lora_r: '8.5' is not a valid int"):
            RunConfig.from_dict({"lora_r": value})
    assert RunConfig.from_dict({"lora_r": "8"}).lora_r == 8
    assert RunConfig.from_dict({"max_steps": "1e3"}).max_steps == 1000


def test_infinite_int_is_a_named_config_error_not_an_overflow():
    with pytest.raises(ConfigError, match="lora_r: 'inf' is not a valid int"):
        RunConfig.from_dict({"lora_r": "inf"})
    with pytest.raises(ConfigError, match="max_steps"):
        RunConfig.from_dict({"max_steps": float("inf")})
