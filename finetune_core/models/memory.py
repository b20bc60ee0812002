"""Peak memory of a training run, estimated before it starts, and whether it fits.

The estimate itself (the parts of the peak, its calibrated constants) is
`finetune_core.models.memory_estimate`. Here: what is known about the model
(`model_facts`), and the verdict: "fits" under 80% of the available memory,
"tight" up to 100%, else "will not fit", and then `suggestions` lists settings
that were estimated again and do fit. `check_fits` refuses a run before it starts.

    python -c "from finetune_core.models.memory import RunConfig, assess; print(assess(RunConfig()).summary())"
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from finetune_core.models.catalogue import BUNDLED_HUB_ID, ModelEntry, ModelShape, entry
from finetune_core.config import RunConfig
from finetune_core.models.memory_estimate import GB, Estimate, estimate
from finetune_core.models.device_memory import Device, available_ram, available_vram, probe_device, process_rss  # noqa: F401 (re-exported)
from finetune_core.models.sources import BUNDLED, BUNDLED_LABEL, HUB_ID_RE, ModelError, _offline, resolve_model_source

FITS_SHARE = 0.8  # under 80% of what is available: fits; up to 100%: tight


class WontFit(ModelError):
    """The estimate says a run will not fit; the message lists settings that would."""


@dataclass(frozen=True)
class ModelFacts:
    """What is known about a model choice, and from where."""

    source: str
    shape: ModelShape
    entry: ModelEntry | None  # the catalogue's, when it lists the model
    origin: str  # "catalogue", "cached config", "local config", "Hub config"
    context: int = 0
    architecture: str = ""
    problem: str = ""  # why training could not load it here (offline, not downloaded); "" when it can

    @property
    def params_b(self) -> float:
        """Parameter count in billions: the catalogue's stated figure where it lists the model, else the shape's."""
        return self.entry.params_b if self.entry else self.shape.params() / 1e9


@dataclass(frozen=True)
class Suggestion:
    """Settings that fit: `overrides` applied to the run's config give `total` bytes."""

    text: str
    overrides: dict
    total: float


@dataclass(frozen=True)
class Assessment:
    """The estimate for one run's settings against the memory available, with the verdict."""

    facts: ModelFacts
    estimate: Estimate
    available: float
    verdict: str  # "fits" | "tight" | "will not fit"
    suggestions: tuple[Suggestion, ...] = ()

    def summary(self) -> str:
        """One line: estimated peak and available memory in GB, and the verdict."""
        e = self.estimate
        return (f"Estimated peak {e.memory_kind} {e.total / GB:.1f} GB of {self.available / GB:.1f} GB "
                f"available: {self.verdict}")

    def breakdown(self) -> str:
        """The estimate's parts in GB, e.g. "weights 0.27, optimizer states 0.01, ... GB"."""
        return ", ".join(f"{name} {value / GB:.2f}" for name, value in self.estimate.parts.items()) + " GB"


# -- the model's shape ---------------------------------------------------------
def _config_facts(source: str, where: str, origin: str, **kwargs) -> ModelFacts:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=False, **kwargs)
        shape = ModelShape.from_config(config)
    except Exception as exc:  # noqa: BLE001 - whatever the loader raises (offline, unknown type) is a message
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ModelError(f"model: could not read the config of {source!r} ({first}).") from None
    text = config.get_text_config()
    return ModelFacts(source, shape, entry(source), origin, int(getattr(text, "max_position_embeddings", 0) or 0),
                      str(getattr(text, "model_type", "") or config.model_type))


def hub_model_cached(hub_id: str) -> bool:
    """Whether the Hugging Face cache holds this model's config and safetensors weights."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(hub_id, name), str)

    return cached("config.json") and (cached("model.safetensors") or cached("model.safetensors.index.json"))


def offline_problem(hub_id: str) -> str:
    """Why training cannot load a Hub model here, or "" (online, or already downloaded)."""
    if not _offline() or hub_model_cached(hub_id):
        return ""
    return (f"{hub_id} is not downloaded on this machine and the Hugging Face Hub is offline here "
            f"(HF_HUB_OFFLINE): training could not load it. Use the bundled model or a local folder, or "
            f"download it first (`hf download {hub_id}`).")


def model_facts(source: str) -> ModelFacts:
    """The shape of the model a run names: the bundled model, a local folder, or a Hub id
    (the catalogue's figures, else a cached config.json, else the Hub's when online).
    ModelError names the problem (bad id, not allowed, nothing to estimate from)."""
    source = (source or "").strip()
    if source in ("", BUNDLED, BUNDLED_LABEL):
        known = entry(BUNDLED_HUB_ID)
        return ModelFacts(BUNDLED, known.shape, known, "catalogue", known.context, known.architecture)
    where = resolve_model_source(source)  # allow-list, public-mode and folder checks, no download
    if not HUB_ID_RE.match(source) or Path(where).is_dir():
        return _config_facts(source, where, "local config", local_files_only=True)
    problem = offline_problem(source)
    known = entry(source)
    if known is not None:
        return ModelFacts(source, known.shape, known, "catalogue", known.context, known.architecture, problem)
    try:
        return replace(_config_facts(source, source, "cached config", local_files_only=True), problem=problem)
    except ModelError:
        if problem:
            raise ModelError(f"model: {problem} It is not in the catalogue either, so its size is unknown.") from None
    return _config_facts(source, source, "Hub config")


# -- the verdict ---------------------------------------------------------------
def verdict(total: float, available: float) -> str:
    """The verdict on a peak of `total` bytes: "fits" (under FITS_SHARE of `available`), "tight" (up to all
    of it) or "will not fit" (over it, or nothing available)."""
    if available <= 0 or total > available:
        return "will not fit"
    return "fits" if total < FITS_SHARE * available else "tight"


# -- putting it together -------------------------------------------------------
def checkpointing_for(cfg: RunConfig, device: str, params: int) -> bool:
    """The trainer's own rule (finetune_core.models.device_plan.use_gradient_checkpointing)."""
    from finetune_core.models.sources import DevicePolicy
    from finetune_core.models.device_plan import use_gradient_checkpointing

    return use_gradient_checkpointing(cfg, DevicePolicy(device, "float32"), params)


def estimate_for(cfg: RunConfig, shape: ModelShape, dev: Device) -> Estimate:
    """The estimate for `cfg` on `dev`, with the dtype and gradient checkpointing the trainer would pick there."""
    ckpt = checkpointing_for(cfg, dev.device, shape.params())
    return estimate(cfg, shape, dev.device, dev.dtype_for(cfg.method), ckpt, dev.process_rss)


def assess(cfg: RunConfig, facts: ModelFacts | None = None, dev: Device | None = None) -> Assessment:
    """Estimate, available memory, verdict, and (unless it fits) settings that fit."""
    facts = facts or model_facts(cfg.model)
    dev = dev or probe_device(cfg)
    est = estimate_for(cfg, facts.shape, dev)
    said = verdict(est.total, dev.available)
    tips = tuple(suggestions(cfg, facts.shape, dev)) if said != "fits" else ()
    return Assessment(facts, est, dev.available, said, tips)


# -- settings that fit ---------------------------------------------------------
def _halvings(value: int, floor: int) -> list[int]:
    out = []
    while value // 2 >= floor:
        value //= 2
        out.append(value)
    return out


def candidates(cfg: RunConfig, dev: Device, checkpointing: bool) -> list[tuple[str, str, dict]]:
    """(kind, words, overrides) of changes that lower the peak, least disruptive first within a kind."""
    effective = cfg.batch_size * cfg.grad_accum
    ckpt = {} if checkpointing else {"gradient_checkpointing": "on"}
    ckpt_words = "" if checkpointing else "gradient checkpointing on, "

    def batches(kind: str, base: dict, words: str) -> list[tuple[str, str, dict]]:
        out = []
        for b in _halvings(cfg.batch_size, 1):
            accum = min(1024, math.ceil(effective / b))
            out.append((kind, f"{words}batch {b} x gradient accumulation {accum} (effective batch "
                        f"{b * accum})", {**base, "batch_size": b, "grad_accum": accum}))
        return out

    out = [("checkpointing", "gradient checkpointing on (about 30% slower)", ckpt)] if ckpt else []
    out += batches("batch", {}, "") + batches("batch", ckpt, ckpt_words)
    methods = [("lora", "LoRA instead of a full fine-tune")] if cfg.method == "full" else []
    if dev.device == "cuda" and cfg.method != "qlora":
        methods.append(("qlora", "QLoRA (4-bit base weights)"))
    for method, words in methods:
        out.append(("method", words, {"method": method}))
        out += batches("method", {"method": method, **ckpt}, f"{words}, {ckpt_words}")
    for length in _halvings(cfg.max_length, 64):
        out.append(("length", f"max length {length} tokens (longer rows are truncated)", {"max_length": length}))
        out.append(("length", f"max length {length} tokens, {ckpt_words}batch 1 x gradient accumulation "
                    f"{min(1024, effective)}", {"max_length": length, **ckpt, "batch_size": 1,
                                                "grad_accum": min(1024, effective)}))
    return [c for c in out if c[2]]


def suggestions(cfg: RunConfig, shape: ModelShape, dev: Device) -> list[Suggestion]:
    """For each kind of change (checkpointing, batch, method, length), the first that fits."""
    current = estimate_for(cfg, shape, dev)
    found: dict[str, Suggestion] = {}
    for kind, words, overrides in candidates(cfg, dev, current.gradient_checkpointing):
        if kind in found:
            continue
        total = estimate_for(cfg.with_overrides(overrides), shape, dev).total
        if verdict(total, dev.available) == "fits":
            found[kind] = Suggestion(words, overrides, total)
    return list(found.values()) or smaller_models(cfg, shape, dev)


def smaller_models(cfg: RunConfig, shape: ModelShape, dev: Device, limit: int = 3) -> list[Suggestion]:
    """Catalogue models that fit with the run's own settings (when no setting makes this one fit)."""
    from finetune_core.models.catalogue import ENTRIES

    out = []
    for e in sorted(ENTRIES, key=lambda e: -e.params_b):
        if e.shape.params() >= shape.params():
            continue
        total = estimate_for(cfg.with_overrides({"model": e.hub_id}), e.shape, dev).total
        if verdict(total, dev.available) == "fits":
            out.append(Suggestion(f"a smaller model, {e.hub_id}", {"model": e.hub_id}, total))
    return out[:limit]


def refusal(a: Assessment) -> str:
    """Why a run is refused, with the settings that would fit."""
    text = f"This run will not fit. {a.summary()} ({a.breakdown()})."
    if not a.suggestions:
        return text + " No smaller setting of this run fits; choose a smaller model."
    tips = "; ".join(f"{s.text}: {s.total / GB:.1f} GB" for s in a.suggestions)
    return f"{text} Settings that would fit: {tips}."


def check_fits(cfg: RunConfig, force: bool = False, facts: ModelFacts | None = None,
               dev: Device | None = None) -> Assessment:
    """Refuse a run before it starts when its model cannot be loaded here (offline and not
    downloaded: ModelError) or when the estimate says it will not fit (WontFit, with the
    settings that would; `force` trains anyway, the estimate being approximate)."""
    facts = facts or model_facts(cfg.model)
    if facts.problem:
        raise ModelError(facts.problem)
    a = assess(cfg, facts, dev)
    if a.verdict == "will not fit" and not force:
        raise WontFit(refusal(a))
    return a
