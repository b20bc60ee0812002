"""RunConfig validates on every construction path: direct construction, from_dict,
load, with_overrides and with_sets all refuse an out-of-bounds value, naming the field.

    .venv/bin/python -m pytest -q tests/test_config_validation.py
"""
from __future__ import annotations

import pytest
import yaml

from finetune_core.config import ConfigError, RunConfig
from finetune_core.data.mapping import DataMapping


@pytest.mark.parametrize("kwargs, field", [
    ({"lora_r": 0}, "lora_r"), ({"learning_rate": float("nan")}, "learning_rate"),
    ({"method": "magic"}, "method"), ({"data": DataMapping(eval_fraction=0.9)}, "eval_fraction"), ({"batch_size": "8"}, "batch_size"),
])
def test_direct_construction_refuses_bad_values_by_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        RunConfig(**kwargs)


def test_every_construction_path_validates(tmp_path):
    cfg = RunConfig(lora_r=8)
    with pytest.raises(ConfigError, match="lora_r: 0 is below the minimum 1"):
        cfg.with_overrides({"lora_r": 0})
    with pytest.raises(ConfigError, match="lora_r: 0 is below the minimum 1"):
        cfg.with_sets(["lora_r=0"])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**cfg.to_dict(), "max_length": 8}), encoding="utf-8")
    with pytest.raises(ConfigError, match="max_length: 8 is below the minimum 16"):
        RunConfig.load(path)
    assert cfg.with_sets(["lora_r=32"]).lora_r == 32 and cfg.lora_r == 8  # the original is unchanged
