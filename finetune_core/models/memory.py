"""Peak memory of a training run, estimated before it starts, and whether it fits.

RAM (the training process's peak RSS) on a CPU, VRAM on a CUDA GPU, for a
model x method (LoRA / QLoRA / full, DoRA) x precision x batch x max_length x
gradient checkpointing. The parts:

* weights, in the dtype the run trains in (QLoRA: 4-bit linear layers);
* optimizer states: AdamW keeps two values per trainable parameter;
* working set: activations kept for backward, TRL's chunked LM head (it
  scores tiles of at most 4096 tokens x 32768 vocabulary entries) and the
  gradients. The Trainer sets gradients to None before each forward, yet a
  full fine-tune's second step peaked higher than its first by about the
  gradients' size (the allocator keeps their freed buffers), so they count in
  full;
* baseline: the libraries and the Trainer (CPU), or CUDA's workspace (GPU).

The estimate is for the worst case of a run's settings: every row fills
max_length and every position is a label (language-modelling rows; prompt/
completion rows with completion-only loss score fewer positions). The
constants were calibrated against measured peaks (bench/bench_memory.py,
docs/benchmarks.md); the verdict is "fits" under 80% of the available memory,
"tight" up to 100%, else "will not fit", and then `suggestions` lists
settings that were estimated again and do fit.

    python -c "from finetune_core.models.memory import RunConfig, assess; print(assess(RunConfig()).summary())"
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from finetune_core.models.catalogue import BUNDLED_HUB_ID, ModelEntry, ModelShape, entry
from finetune_core.config import RunConfig
from finetune_core.models.device_memory import Device, available_ram, available_vram, probe_device, process_rss  # noqa: F401 (re-exported)
from finetune_core.models.sources import BUNDLED, BUNDLED_LABEL, HUB_ID_RE, ModelError, _offline, resolve_model_source

GB = 1e9
FITS_SHARE = 0.8  # under 80% of what is available: fits; up to 100%: tight
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# -- calibrated on this project's CPU (bench/bench_memory.py; the measured table is in docs/benchmarks.md) --
IMPORTS_RSS = 0.45 * GB  # RSS once torch, transformers, trl, peft and datasets are imported: 450 MB measured
RUN_OVERHEAD = 0.09 * GB  # the Trainer and its data: a 2-layer model's peak (609 MB) minus the above and its LM head
# layer_activation_floats counts what autograd keeps: 10,784 values per token per layer of the bundled model,
# where torch's saved-tensor hooks found 10,707 (speed-ups on) and 10,127 (off) in a training step.
ACTIVATION_SCALE = 1.0
# RSS is more than the live tensors when temporaries fragment the heap: with the libraries' own code paths
# (speedups off) a layer's forward grew RSS by 74 MiB against 57 MiB with the speed-ups (bundled model,
# 1024 tokens, traced layer by layer); without this factor the bench's speedups-off run was 22% over the estimate.
SPEEDUPS_OFF_RSS = 1.3
# With checkpointing a layer keeps its input, yet RSS grew by 0.34 (bundled model) to 0.45 (small
# model) of a layer's activations per layer in the forward pass: glibc keeps the freed buffers of the
# discarded activations in its heap (traced layer by layer with forward hooks; the second step reuses them).
CHECKPOINT_RESIDUE = 0.4
LM_HEAD_TILES_CPU = 8.3  # TRL's torch backward of its chunked head peaks at 8.3 float32 tiles (measured, any N and V)
# -- not measured here (no GPU was lent): from the code and the libraries' documentation --
LM_HEAD_TILES_CUDA = 2  # the projection tile and one fp32 buffer: the Triton kernels fold tiles in place
CUDA_OVERHEAD = 0.6 * GB  # cuBLAS workspace and the caching allocator's rounding
QLORA_LINEAR_BYTES = 0.53  # NF4: half a byte per weight plus block constants (double-quantised)
TOKEN_TILE, VOCAB_TILE = 4096, 32768  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE, trl's vocabulary chunk
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
class Estimate:
    """Peak memory in bytes, by part; `parts` adds up to `total`."""

    device: str
    dtype: str
    gradient_checkpointing: bool
    parts: dict = field(default_factory=dict)  # weights, optimizer states, working set, baseline
    detail: dict = field(default_factory=dict)  # activations, LM head, gradients (the working set's parts)

    @property
    def total(self) -> float:
        """The estimated peak in bytes: the sum of `parts`."""
        return sum(self.parts.values())

    @property
    def memory_kind(self) -> str:
        """The word the UI uses for the memory in question: "VRAM" on CUDA, else "RAM"."""
        return "VRAM" if self.device == "cuda" else "RAM"


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


# -- the estimate --------------------------------------------------------------
def lora_params(shape: ModelShape, rank: int, targets: str = "all-linear") -> int:
    """Adapter parameters: r x (in + out) per adapted projection per layer."""
    h, q, kv, i = shape.hidden_size, shape.q_width, shape.kv_width, shape.intermediate_size
    dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
            "up_proj": (h, i), "down_proj": (i, h), "qkv_proj": (h, q + 2 * kv), "gate_up_proj": (h, 2 * i)}
    names = [t.strip() for t in (targets or "").split(",") if t.strip()]
    if not names or names == ["all-linear"] or not all(n in dims for n in names):
        names = list(PROJECTIONS)  # all-linear, or names we cannot size: every projection (an upper bound)
    return shape.num_hidden_layers * rank * sum(sum(dims[n]) for n in names)


def layer_activation_floats(shape: ModelShape, cfg: RunConfig) -> float:
    """Values one decoder layer keeps per token for its backward pass, counted from the code:
    the two norms' inputs and outputs (4h), queries/keys/values after rotary and the attention
    output plus its copy for o_proj (3q + 2kv), and the MLP's gate, up, activation and product
    (4i). LoRA adds its rank-r intermediates; LoRA dropout keeps a mask and the dropped input per
    projection; DoRA keeps each projection's base and adapter outputs."""
    h, q, kv, i = shape.hidden_size, shape.q_width, shape.kv_width, shape.intermediate_size
    floats = 4 * h + 3 * q + 2 * kv + 4 * i
    if cfg.method != "full":
        floats += len(PROJECTIONS) * cfg.lora_r
        if cfg.lora_dropout > 0:
            floats += 2 * (5 * h + q + i)
        if cfg.use_dora:
            floats += 2 * (q + 2 * kv + 2 * h + 2 * i)
    return floats


def speedups_off(cfg: RunConfig) -> bool:
    """Whether the run trains on the libraries' own code paths (its setting, or STUDIO_SPEEDUPS=off)."""
    from finetune_core.speedups import effective_mode

    return effective_mode(cfg.speedups)[0] == "off"


def activation_bytes(shape: ModelShape, cfg: RunConfig, act_bytes: int, checkpointing: bool,
                     rss_scale: float = 1.0) -> float:
    """Activations kept for backward: every layer's, or with checkpointing each layer's input
    (plus the heap's residue, see CHECKPOINT_RESIDUE) and one layer recomputed at a time."""
    tokens = cfg.batch_size * cfg.max_length
    per_layer = layer_activation_floats(shape, cfg)
    layers = shape.num_hidden_layers
    if checkpointing:
        floats = layers * (shape.hidden_size + CHECKPOINT_RESIDUE * per_layer) + per_layer
    else:
        floats = layers * per_layer
    return tokens * floats * act_bytes * ACTIVATION_SCALE * rss_scale


def lm_head_bytes(shape: ModelShape, cfg: RunConfig, device: str) -> float:
    """TRL's chunked LM head: tile-sized float32 temporaries, the labelled hidden states and
    their float32 gradient; a full fine-tune also gets the head's float32 weight gradient."""
    labels = cfg.batch_size * cfg.max_length
    tiles = LM_HEAD_TILES_CUDA if device == "cuda" else LM_HEAD_TILES_CPU
    working = tiles * min(labels, TOKEN_TILE) * min(shape.vocab_size, VOCAB_TILE) * 4
    working += 2 * labels * shape.hidden_size * 4
    if cfg.method == "full":
        working += shape.vocab_size * shape.hidden_size * 4
    return working


def weight_bytes(shape: ModelShape, method: str, dtype: str) -> float:
    """Bytes of the base weights: `dtype`'s width per parameter, or for QLoRA NF4 linears with bf16 embeddings."""
    if method == "qlora":
        return (shape.num_hidden_layers * shape.layer_linear_params() * QLORA_LINEAR_BYTES
                + shape.embedding_params() * DTYPE_BYTES["bfloat16"])
    return shape.params() * DTYPE_BYTES[dtype]


def estimate(cfg: RunConfig, shape: ModelShape, device: str, dtype: str, checkpointing: bool,
             process_rss: float = 0.0) -> Estimate:
    """The peak for these settings (pure arithmetic). `process_rss`: what the process that will
    train already holds (the app trains in its own process); the libraries' RSS at least."""
    wbytes = DTYPE_BYTES[dtype]
    if cfg.method == "full":  # AdamW keeps its states in the parameters' dtype
        trainable, tbytes = shape.params(), wbytes
    else:  # PEFT keeps adapters in float32 over a half-precision base
        trainable, tbytes = lora_params(shape, cfg.lora_r, cfg.target_modules), 4
        if cfg.use_dora:
            trainable += shape.num_hidden_layers * (shape.q_width + 2 * shape.kv_width + 2 * shape.hidden_size
                                                    + 2 * shape.intermediate_size)
    on_cpu_own_paths = device != "cuda" and speedups_off(cfg)  # GPUs get no speed-ups, and count allocations
    activations = activation_bytes(shape, cfg, wbytes, checkpointing, SPEEDUPS_OFF_RSS if on_cpu_own_paths else 1.0)
    head = lm_head_bytes(shape, cfg, device)
    grads = trainable * tbytes
    baseline = CUDA_OVERHEAD if device == "cuda" else max(IMPORTS_RSS, process_rss) + RUN_OVERHEAD
    parts = {"weights": weight_bytes(shape, cfg.method, dtype), "optimizer states": 2 * trainable * tbytes,
             "working set": activations + head + grads, "baseline": baseline}
    detail = {"activations": activations, "LM head": head, "gradients": grads, "trainable params": trainable}
    return Estimate(device, dtype, checkpointing, parts, detail)


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
