"""The arithmetic of the memory estimate: a training run's peak in bytes for given settings.

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
docs/benchmarks.md). Whether a run fits, and what would, is
`finetune_core.models.memory`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from finetune_core.config import RunConfig
from finetune_core.models.catalogue import ModelShape

GB = 1e9
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
