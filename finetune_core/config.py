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

import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from finetune_core.data.mapping import DataMapping
from finetune_core.fieldmeta import check_values, field_rows
from finetune_core.fieldmeta import coerce as _coerce
from finetune_core.fieldmeta import setting as _f
from finetune_core.errors import StudioError
from finetune_core.limits import LimitError, limits


METHODS = ("lora", "qlora", "full")
# what the run learns from: demonstrations (SFT), preference pairs (DPO, ORPO) or thumbs up/down (KTO)
OBJECTIVES = ("sft", "dpo", "kto", "orpo")
PREFERENCE_OBJECTIVES = ("dpo", "kto", "orpo")
# TRL's loss variants per objective; "auto" takes the trainer's default (DPO sigmoid, KTO kto)
# "sigmoid+sft": DPO plus the SFT loss of the chosen answers (TRL's loss list; RPO, LLaMA-Factory's pref_ftx)
LOSS_TYPES = {"dpo": ("sigmoid", "sigmoid+sft", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair",
                      "apo_zero", "apo_down"),
              "kto": ("kto", "apo_zero_unpaired"), "orpo": (), "sft": ()}
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
# where a run trains: a thread of the app, or its own process(es) that outlive the app (training/launcher.py)
LAUNCHERS = ("thread", "process", "torchrun", "accelerate")
TRACKERS = ("none", "tensorboard", "trackio", "wandb")  # report_to: the experiment tracker besides our own plot


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
    """Every setting of one training run, validated whenever one is made.

    Each field carries its help text, bounds and choices as metadata (the UI
    builds its widgets from them, see `field_info`); the data mapping is one
    `DataMapping` in ``data``. Construction validates (`__post_init__`), so no
    path -- direct construction, `from_dict`, `load`, `with_overrides`,
    `with_sets` -- yields an out-of-bounds config; the ConfigError names the field.

    >>> RunConfig(lora_r=8).lora_r
    8
    >>> RunConfig(lora_r=0)
    Traceback (most recent call last):
    ...
    finetune_core.config.ConfigError: lora_r: 0 is below the minimum 1.
    """

    # model
    model: str = _f("bundled", "Model: 'bundled' (SmolLM2-135M-Instruct, offline), a Hub id or a local folder.", "model")
    parent_run: str = _f("", "Start from this run's model (its adapter merged into the base in memory; a "
                         "preference run also uses it as the reference). Empty: start from the base model.", "model")
    # data: the file, its mapping, the split and the row caps, described once in DataMapping;
    # run.yaml keeps them as flat keys (see to_dict / from_dict)
    data: DataMapping = field(default_factory=DataMapping, metadata={"group": "data"})
    # method
    objective: str = _f("sft", "What the run learns from: sft (demonstrations), dpo (chosen/rejected pairs), "
                        "kto (thumbs up/down answers), orpo (pairs, no reference model).", "method", choices=OBJECTIVES)
    method: str = _f("lora", "lora; qlora (4-bit, CUDA + bitsandbytes only); full fine-tune.", "method", choices=METHODS)
    lora_r: int = _f(16, "LoRA rank: capacity of the adapter.", "method", lo=1, hi=512)
    lora_alpha: int = _f(32, "LoRA alpha: scale of the update (often 2 x rank).", "method", lo=1, hi=1024)
    lora_dropout: float = _f(0.05, "Dropout on the LoRA path.", "method", lo=0.0, hi=0.5, step=0.01)
    target_modules: str = _f("all-linear", "Layers that get adapters: 'all-linear' or names, comma separated.", "method")
    use_dora: bool = _f(False, "DoRA: weight-decomposed LoRA (slower, sometimes better).", "method")
    use_rslora: bool = _f(False, "rsLoRA: scale by alpha/sqrt(r), steadier at high rank.", "method")
    beta: float = _f(0.1, "Preference strength (DPO/KTO/ORPO beta): lower lets the model move further from "
                     "the reference.", "method", lo=0.001, hi=10.0, step=0.01)
    loss_type: str = _f("auto", "Preference loss variant: auto (DPO sigmoid, KTO kto); DPO: sigmoid, sigmoid+sft "
                        "(DPO plus the chosen answers' SFT loss: keeps their likelihood up), ipo, hinge, robust, "
                        "bco_pair, sppo_hard, nca_pair, apo_zero, apo_down; KTO: kto, apo_zero_unpaired.",
                        "method", choices=("auto", *sorted({t for v in LOSS_TYPES.values() for t in v})))
    reference: str = _f("start", "Reference model of a DPO/KTO run: start (the model the run starts from: the "
                        "base, or the parent run merged) or none (reference-free).", "method", choices=("start", "none"))
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
    early_stopping_patience: int = _f(0, "Stop when the held-out loss has not improved for this many evaluations "
                                      "(0 = off). Needs held-out rows; eval_steps (when 0: a tenth of the run) and "
                                      "save_steps are set to match.", "schedule", lo=0, hi=1000)
    keep_best: bool = _f(False, "Keep the checkpoint with the lowest held-out loss as the final adapter (not the "
                         "last one). Needs held-out rows; a checkpoint is saved at every evaluation.", "schedule")
    device: str = _f("auto", "auto picks CUDA, then MPS, then CPU.", "schedule", choices=("auto", "cuda", "mps", "cpu"))
    precision: str = _f("auto", "Training precision. auto: bf16 on GPUs, and for LoRA on CPUs with bf16 matrix "
                        "instructions (AVX512-BF16, AMX); float32 elsewhere.", "schedule",
                        choices=("auto", "float32", "bfloat16"))
    speedups: str = _f("auto", "CPU speed-ups (packed attention, fused LoRA and RMSNorm steps, label-only LM head, "
                       "decode caches). auto: those that give this model the libraries' own results; off: the "
                       "libraries' own code paths only. STUDIO_SPEEDUPS=off turns them off for the whole server.",
                       "schedule", choices=("auto", "off"))

    # launch: where the run trains and what else records it
    launcher: str = _f("thread", "thread: inside the app (stops with it); process: its own Python process, which "
                       "outlives the app; torchrun / accelerate: that tool starts num_processes processes "
                       "(one per GPU; gloo on a CPU).", "launch", choices=LAUNCHERS)
    num_processes: int = _f(1, "Processes that train together under torchrun or accelerate (data parallel).",
                            "launch", lo=1, hi=64)
    report_to: str = _f("none", "Experiment tracker besides the studio's own plot: tensorboard (event files in the "
                        "run folder), trackio (local dashboard: trackio show), or wandb (pip install wandb; offline "
                        "in the run folder unless WANDB_API_KEY is set).", "launch", choices=TRACKERS)
    evaluate_after: bool = _f(False, "When the run completes, evaluate it on its held-out rows (base vs tuned) "
                              "before the next queued run starts.", "launch")

    def __post_init__(self) -> None:
        # Every construction path passes here, so an invalid config cannot exist.
        self.validate()

    # -- validation --------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Check bounds, choices and template limits of every field, the mapping's included; returns self.

        Raises ConfigError naming the field (construction already calls it; kept
        public for callers that change a field in place).
        """
        try:
            check_values(self)
            self.data.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._check_objective()
        return self

    def _check_objective(self) -> None:
        """The preference fields agree with the objective; the parent is a run id (never a path)."""
        if self.parent_run and not RUN_ID.match(self.parent_run):
            raise ConfigError(f"parent_run: {self.parent_run[:80]!r} is not a run id.")
        if self.loss_type != "auto" and self.loss_type not in LOSS_TYPES[self.objective]:
            allowed = ", ".join(LOSS_TYPES[self.objective]) or "none (leave it on auto)"
            raise ConfigError(f"loss_type: {self.loss_type!r} does not apply to objective {self.objective!r}; "
                              f"choose one of: {allowed}.")
        if self.num_processes > 1 and self.launcher not in ("torchrun", "accelerate"):
            raise ConfigError(f"num_processes: {self.num_processes} processes need launcher torchrun or accelerate "
                              f"(not {self.launcher!r}).")
        if self.objective == "orpo" and self.reference == "none":
            raise ConfigError("reference: ORPO has no reference model; leave it on 'start'.")

    # -- (de)serialisation --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat fields (the mapping's in the place of ``data``): the keys run.yaml has always had."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "data":
                out.update(self.data.to_dict())
            else:
                out[f.name] = getattr(self, f.name)
        return out

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """Write the config as YAML to `path`; `extra` adds facts (resolved device...) after the fields."""
        data = self.to_dict()
        if extra:
            data = {**data, **extra}
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = True) -> "RunConfig":
        """A validated config from flat keys (run.yaml, CLI, widgets); the mapping's keys
        go to ``data``. An unknown key is a ConfigError naming it, unless ``strict`` is
        False (run.yaml also records facts about the run).

        >>> RunConfig.from_dict({"lora_r": "8", "packing": "yes", "eval_fraction": "0.2"}).data.eval_fraction
        0.2
        >>> RunConfig.from_dict({"lora_rank": 8})
        Traceback (most recent call last):
        ...
        finetune_core.config.ConfigError: Unknown config field 'lora_rank'.
        """
        known = {f.name: f for f in fields(cls) if f.name != "data"}
        mapping_names = set(DataMapping.names())
        kwargs, mapping = {}, {}
        for key, value in (data or {}).items():
            if key in mapping_names:
                mapping[key] = value
            elif key in known:
                kwargs[key] = coerce(known[key], value)
            elif strict:
                raise ConfigError(f"Unknown config field {key!r}.")
        try:
            kwargs["data"] = DataMapping.from_dict(mapping)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """The config in a run.yaml (or any config YAML), read safely; extra keys are ignored."""
        data = read_config_yaml(path)
        # run.yaml also records facts about the run (resolved device...): ignore those.
        return cls.from_dict(data, strict=False)

    def with_overrides(self, overrides: dict[str, Any]) -> "RunConfig":
        """A new config with `overrides` (flat field -> value, coerced) applied; this one is unchanged."""
        return RunConfig.from_dict({**self.to_dict(), **overrides})

    def with_sets(self, sets: list[str]) -> "RunConfig":
        """A new config with CLI ``key=value`` strings applied.

        >>> RunConfig().with_sets(["batch_size=2", "method=full"]).batch_size
        2
        >>> RunConfig().with_sets(["batch_size"])
        Traceback (most recent call last):
        ...
        finetune_core.config.ConfigError: --set expects key=value, got 'batch_size'.
        """
        overrides = {}
        for item in sets:
            if "=" not in item:
                raise ConfigError(f"--set expects key=value, got {item!r}.")
            key, value = item.split("=", 1)
            overrides[key.strip()] = value
        return self.with_overrides(overrides)


def coerce(f, value):
    """Convert YAML / CLI / widget values to the field's type, naming the field on failure (ConfigError).

    >>> fields_by_name = {f.name: f for f in fields(RunConfig)}
    >>> coerce(fields_by_name["packing"], "off"), coerce(fields_by_name["max_steps"], "1e3")
    (False, 1000)
    >>> coerce(fields_by_name["lora_r"], 8.5)
    Traceback (most recent call last):
    ...
    finetune_core.config.ConfigError: lora_r: '8.5' is not a valid int.
    """
    try:
        return _coerce(f, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc.__cause__


def field_info() -> list[dict[str, Any]]:
    """Metadata of every field, for building widgets; the mapping's fields stand in for ``data``."""
    out = []
    for info in field_rows(RunConfig):
        out.extend(field_rows(DataMapping) if info["name"] == "data" else [info])
    for info in out:
        if info["default"] is MISSING:
            info["default"] = None
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # Sized for a 2-core CPU with the bundled 135M model: ~3 minutes of training.
    "Quick demo (CPU)": {
        "method": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear",
        "max_steps": 60, "learning_rate": 1e-3, "lr_scheduler": "linear", "warmup_steps": 5,
        "batch_size": 8, "grad_accum": 1, "max_length": 256, "max_train_rows": 480,
        "eval_steps": 0, "save_steps": 30, "logging_steps": 2, "group_by_length": True,
    },
    # DPO on chosen/rejected pairs, a few minutes on 2 cores; start it from an SFT run (parent_run) to
    # get base -> SFT -> DPO. A step (4 pairs, 384 tokens at most each side: ~2,400 tokens with the
    # reference's forward) took 7-11 s on the bundled model on 2 busy cores. Figures in docs/benchmarks.md.
    "Quick demo DPO (CPU)": {
        "objective": "dpo", "method": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "target_modules": "all-linear", "beta": 0.1, "loss_type": "auto", "reference": "start",
        "max_steps": 24, "learning_rate": 2e-4, "lr_scheduler": "linear", "warmup_steps": 2,
        "batch_size": 4, "grad_accum": 1, "max_length": 384, "max_train_rows": 240,
        "eval_steps": 0, "save_steps": 12, "logging_steps": 2, "group_by_length": True,
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


def config_from_args(config: str | None, preset_name: str | None, sets: list[str] | None) -> RunConfig:
    """A command line's config: the `config` file (default: the defaults), then the preset, then each
    ``key=value`` of `sets`; a file that cannot be read or a bad value is a ConfigError naming it."""
    try:
        cfg = RunConfig.load(config) if config else RunConfig()
    except OSError as exc:  # the run.yaml named on the command line cannot be read
        raise ConfigError(str(exc)) from None
    if preset_name:
        cfg = preset(preset_name, cfg)
    return cfg.with_sets(sets or [])


def preset(name: str, base: RunConfig | None = None) -> RunConfig:
    """`base` (default: the defaults) with the named preset's overrides applied; ConfigError names an unknown one."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return (base or RunConfig()).with_overrides(PRESETS[name])
