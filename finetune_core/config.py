"""RunConfig: the one description of a training run.

The UI builds its widgets from the field metadata (help text, bounds, choices),
the CLI parses ``--set key=value`` into it, and every run saves it as
``run.yaml``. Presets are plain dictionaries of overrides. Every config YAML
(a run's run.yaml, an uploaded one, ``--config``) is read by `read_config_yaml`:
size-limited and without YAML anchors/aliases (an alias bomb expands a few
hundred bytes into gigabytes).

    python -m finetune_core train --config run.yaml --set learning_rate=1e-4
"""
from __future__ import annotations

import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from finetune_core.data.formats import check_template
from finetune_core.errors import StudioError
from finetune_core.limits import LimitError, limits


def _f(default, help: str, group: str, lo=None, hi=None, choices=None, step=None):
    meta = {"help": help, "group": group}
    if lo is not None:
        meta["min"] = lo
    if hi is not None:
        meta["max"] = hi
    if choices is not None:
        meta["choices"] = list(choices)
    if step is not None:
        meta["step"] = step
    return field(default=default, metadata=meta)


METHODS = ("lora", "qlora", "full")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
DATA_FORMATS = ("auto", "prompt_completion", "messages", "sharegpt", "alpaca", "text", "columns", "classification")


class ConfigError(StudioError, ValueError):
    """A config value is out of bounds or unknown; the message names the field."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases.

    A config never needs them, and nested aliases are how a few hundred bytes
    expand into gigabytes once the values are copied into strings. The pure
    Python loader is used (not CSafeLoader) because composition is where an
    alias can be caught before it is resolved; config files are small.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name, <<) "
                              "are not allowed in a config file; write the values out.")
        return super().compose_node(parent, index)


def read_config_yaml(path: str | os.PathLike, what: str = "run.yaml") -> dict[str, Any]:
    """The mapping in a config YAML file, read safely; ConfigError names the problem.

    The size is checked before parsing (``limits().run_yaml_bytes``) and the
    message never holds the server path (``what`` names the file instead).
    OSError (a missing file) is left to the caller.
    """
    lim = limits()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(lim.run_yaml_bytes + 1)
    try:
        lim.check("run_yaml_bytes", max(size, len(data)), f"the size of the {what} in bytes")
        text = data.decode("utf-8")
        loaded = yaml.load(text, Loader=_NoAliasLoader)
    except LimitError as exc:
        raise ConfigError(str(exc)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} is not UTF-8 text.") from None
    except RecursionError:
        raise ConfigError(f"the {what} is nested too deeply to be a config file.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"the {what} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"the {what} must be a mapping of config fields.")
    return loaded


@dataclass
class RunConfig:
    # model
    model: str = _f("bundled", "Model: 'bundled' (SmolLM2-135M-Instruct, offline), a Hub id or a local folder.", "model")
    # data
    data_path: str = _f("", "Training file (set by the Data tab; server-side path).", "data")
    data_format: str = _f("auto", "Data format; 'auto' detects it from the columns.", "data", choices=DATA_FORMATS)
    prompt_column: str = _f("", "Column holding the prompt (custom column files).", "data")
    completion_column: str = _f("", "Column holding the completion / label.", "data")
    prompt_template: str = _f("", "Prompt template with {column} placeholders, e.g. 'Summarize:\\n{dialogue}'.", "data")
    completion_template: str = _f("", "Completion template with {column} placeholders, e.g. '{summary}'.", "data")
    system_prompt: str = _f("", "Optional system message added to every example.", "data")
    eval_fraction: float = _f(0.1, "Share of rows held out for evaluation.", "data", lo=0.0, hi=0.5, step=0.01)
    eval_path: str = _f("", "Separate evaluation file (overrides the held-out share).", "data")
    max_train_rows: int = _f(0, "Use at most this many training rows (0 = all).", "data", lo=0, hi=10_000_000)
    max_eval_rows: int = _f(256, "Held-out rows used for the loss during training (0 = all); evaluation uses all.", "data", lo=0, hi=10_000_000)
    drop_bad_rows: bool = _f(True, "Drop rows that fail validation instead of refusing the file.", "data")
    # method
    method: str = _f("lora", "lora; qlora (4-bit, CUDA + bitsandbytes only); full fine-tune.", "method", choices=METHODS)
    lora_r: int = _f(16, "LoRA rank: capacity of the adapter.", "method", lo=1, hi=512)
    lora_alpha: int = _f(32, "LoRA alpha: scale of the update (often 2 x rank).", "method", lo=1, hi=1024)
    lora_dropout: float = _f(0.05, "Dropout on the LoRA path.", "method", lo=0.0, hi=0.5, step=0.01)
    target_modules: str = _f("all-linear", "Layers that get adapters: 'all-linear' or names, comma separated.", "method")
    use_dora: bool = _f(False, "DoRA: weight-decomposed LoRA (slower, sometimes better).", "method")
    use_rslora: bool = _f(False, "rsLoRA: scale by alpha/sqrt(r), steadier at high rank.", "method")
    # schedule
    num_epochs: float = _f(1.0, "Passes over the training rows (ignored when max steps > 0).", "schedule", lo=0.01, hi=100.0, step=0.1)
    max_steps: int = _f(0, "Stop after this many optimizer steps (0 = use epochs).", "schedule", lo=0, hi=1_000_000)
    learning_rate: float = _f(2e-4, "Peak learning rate.", "schedule", lo=1e-7, hi=1e-2)
    lr_scheduler: str = _f("linear", "Learning-rate schedule after warm-up.", "schedule", choices=SCHEDULERS)
    warmup_steps: int = _f(0, "Steps of linear warm-up.", "schedule", lo=0, hi=100_000)
    weight_decay: float = _f(0.0, "AdamW weight decay.", "schedule", lo=0.0, hi=1.0, step=0.01)
    batch_size: int = _f(4, "Rows per device per step.", "schedule", lo=1, hi=1024)
    grad_accum: int = _f(1, "Gradient accumulation steps (effective batch = batch x accum x devices).", "schedule", lo=1, hi=1024)
    max_length: int = _f(512, "Tokens per example; longer rows are truncated.", "schedule", lo=16, hi=131072)
    packing: bool = _f(False, "Pack short rows together (position ids keep them apart).", "schedule")
    group_by_length: bool = _f(True, "Batch rows of similar length together to avoid padding waste.", "schedule")
    completion_only_loss: bool = _f(True, "Learn only the completion tokens, not the prompt.", "schedule")
    gradient_checkpointing: str = _f("auto", "Trade speed for memory: auto (off on CPU / small models), on, off.", "schedule", choices=("auto", "on", "off"))
    eval_steps: int = _f(0, "Compute held-out loss every N steps (0 = at the end only).", "schedule", lo=0, hi=1_000_000)
    save_steps: int = _f(0, "Checkpoint every N steps (0 = only the final adapter).", "schedule", lo=0, hi=1_000_000)
    save_total_limit: int = _f(2, "Checkpoints kept on disk.", "schedule", lo=1, hi=100)
    logging_steps: int = _f(1, "Log metrics every N steps.", "schedule", lo=1, hi=10_000)
    seed: int = _f(42, "Random seed for split, shuffling and initialisation.", "schedule", lo=0, hi=2**31 - 1)
    device: str = _f("auto", "auto picks CUDA, then MPS, then CPU.", "schedule", choices=("auto", "cuda", "mps", "cpu"))
    precision: str = _f("auto", "Training precision. auto: bf16 on GPUs, and for LoRA on CPUs with bf16 matrix "
                        "instructions (AVX512-BF16, AMX); float32 elsewhere.", "schedule",
                        choices=("auto", "float32", "bfloat16"))
    speedups: str = _f("auto", "CPU speed-ups (packed attention, fused LoRA and RMSNorm steps, label-only LM head, "
                       "decode caches). auto: those that give this model the libraries' own results; off: the "
                       "libraries' own code paths only. STUDIO_SPEEDUPS=off turns them off for the whole server.",
                       "schedule", choices=("auto", "off"))

    # -- validation --------------------------------------------------------
    def validate(self) -> "RunConfig":
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if "choices" in meta and value not in meta["choices"]:
                raise ConfigError(f"{f.name}: {value!r} is not one of {', '.join(map(str, meta['choices']))}.")
            if isinstance(value, float) and not math.isfinite(value):
                # NaN passes every < and > test below, and inf has no use: refuse both by name.
                raise ConfigError(f"{f.name}: {value} is not a finite number.")
            if "min" in meta and value < meta["min"]:
                raise ConfigError(f"{f.name}: {value} is below the minimum {meta['min']}.")
            if "max" in meta and value > meta["max"]:
                raise ConfigError(f"{f.name}: {value} is above the maximum {meta['max']}.")
        for name in ("prompt_template", "completion_template", "system_prompt"):
            try:
                check_template(name, getattr(self, name), placeholders=name != "system_prompt")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return self

    # -- (de)serialisation --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        data = self.to_dict()
        if extra:
            data = {**data, **extra}
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = True) -> "RunConfig":
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in (data or {}).items():
            if key not in known:
                if strict:
                    raise ConfigError(f"Unknown config field {key!r}.")
                continue
            kwargs[key] = coerce(known[key], value)
        return cls(**kwargs).validate()

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        data = read_config_yaml(path)
        # run.yaml also records facts about the run (resolved device...): ignore those.
        return cls.from_dict(data, strict=False)

    def with_overrides(self, overrides: dict[str, Any]) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **overrides})

    def with_sets(self, sets: list[str]) -> "RunConfig":
        """Apply CLI ``key=value`` strings."""
        overrides = {}
        for item in sets:
            if "=" not in item:
                raise ConfigError(f"--set expects key=value, got {item!r}.")
            key, value = item.split("=", 1)
            overrides[key.strip()] = value
        return self.with_overrides(overrides)


def coerce(f, value):
    """Convert YAML / CLI / widget values to the field's type, naming the field on failure."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if kind == "float":
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(float("inf"))
        raise ConfigError(f"{f.name}: {str(value)[:80]!r} is not a valid {kind}.") from exc


def field_info() -> list[dict[str, Any]]:
    """Metadata of every field, for building widgets."""
    out = []
    for f in fields(RunConfig):
        default = f.default if f.default is not MISSING else None
        out.append({"name": f.name, "type": f.type if isinstance(f.type, str) else f.type.__name__, "default": default, **f.metadata})
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # Sized for a 2-core CPU with the bundled 135M model: ~3 minutes of training.
    "Quick demo (CPU)": {
        "method": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear",
        "max_steps": 60, "learning_rate": 1e-3, "lr_scheduler": "linear", "warmup_steps": 5,
        "batch_size": 8, "grad_accum": 1, "max_length": 256, "max_train_rows": 480,
        "eval_steps": 0, "save_steps": 30, "logging_steps": 2, "group_by_length": True,
    },
    "OCI AI Quick Actions defaults": {
        "method": "lora", "lora_r": 32, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear",
        "num_epochs": 3.0, "max_steps": 0, "learning_rate": 2e-4, "batch_size": 4,
    },
    "Unsloth notebook defaults": {
        "method": "lora", "lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear",
        "learning_rate": 2e-4, "lr_scheduler": "linear", "warmup_steps": 5, "weight_decay": 0.01,
        "batch_size": 2, "grad_accum": 4, "max_steps": 60,
    },
    "Full fine-tune": {
        "method": "full", "learning_rate": 2e-5, "lr_scheduler": "cosine", "warmup_steps": 10,
        "num_epochs": 1.0, "max_steps": 0, "batch_size": 4, "weight_decay": 0.0,
    },
}


def preset(name: str, base: RunConfig | None = None) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return (base or RunConfig()).with_overrides(PRESETS[name])
