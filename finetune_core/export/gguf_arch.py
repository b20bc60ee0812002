"""What llama.cpp expects of each model family the GGUF exporter writes: one `ArchSpec` per config model_type.

Facts from llama.cpp's converter (convert_hf_to_gguf.py) and loader
(src/models/*.cpp), b-version vendored by llama-cpp-python 0.3.36:

* **llama** (Llama, Mistral): normal rope, which rotates consecutive pairs,
  so the rows of Q and K are permuted from transformers' rotate-half layout;
  Llama-3 rope scaling as a ``rope_freqs`` tensor; no sliding window.
* **qwen2** (Qwen2, Qwen2.5): NEOX rope (rotate-half, no permutation), q/k/v
  biases; no sliding window.
* **qwen3**: NEOX rope, RMS norms on each head's q and k.
* **smollm3**: the Llama layout, but llama.cpp leaves out rope on every 4th
  layer (a fixed step, ``n_no_rope_layer_step = 4``), so only that NoPE
  pattern can be written.
* **phi3** (Phi-3 layout; byte-level BPE tokenizers only, as Phi-4): NEOX
  rope, fused ``qkv_proj`` (``attn_qkv``) and ``gate_up_proj`` (``ffn_up``,
  gate half first) kept fused; llama.cpp runs it without a sliding window.
* **gemma3** (Gemma 3 text): NEOX rope, RMS norms stored as ``1 + w`` (the
  shift transformers applies at run time), embeddings scaled by
  sqrt(hidden) in llama.cpp itself, post-attention/post-FFN norms, per-layer
  sliding window written as a pattern, local rope base for sliding layers.

Everything a spec cannot represent is refused up front by `refusal`, naming
the architecture and the setting (llama.cpp would load the file and answer
differently).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

SMOLLM3_NOPE_STEP = 4  # llama.cpp's fixed no-rope step for SmolLM3


@dataclass(frozen=True)
class ArchSpec:
    """How one transformers family is written for llama.cpp (the module docstring gives the facts)."""

    arch: str  # llama.cpp's architecture name (gguf.MODEL_ARCH_NAMES)
    permute_qk: bool  # llama.cpp uses normal (pairwise) rope for it: Q/K rows reordered
    norm_shift: float = 0.0  # added to every *norm.weight (Gemma stores w, computes 1 + w)
    rope_freqs: bool = False  # llama.cpp reads Llama-3 rope factors as a rope_freqs tensor
    sliding: bool = False  # llama.cpp runs this arch's sliding-window layers
    bias_keys: tuple[str, ...] = ()  # config bias switches whose tensors llama.cpp loads for this arch
    extra: Callable | None = None  # (writer, config) -> None: the family's own keys
    check: Callable | None = None  # config -> refusal reason or None
    rope_types: tuple[str, ...] = field(default=("default", "linear"))


# -- helpers shared with gguf.py ---------------------------------------------------------------------------
def rope_params(config: dict, kind: str = "full_attention") -> dict:
    """rope settings from either spelling (transformers 5 `rope_parameters`, possibly per layer type;
    older `rope_theta`/`rope_scaling`)."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if isinstance(params.get(kind), dict):
        params = dict(params[kind])
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def head_dim(config: dict) -> int:
    """Each attention head's width (`head_dim`, else hidden / heads)."""
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def rope_dims(config: dict) -> int:
    """How many dimensions of each head rope rotates (Phi-4-mini rotates 3/4 of them)."""
    factor = rope_params(config).get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    return int(head_dim(config) * float(factor or 1.0))


def sliding_window(config: dict) -> int | None:
    """The window of the model's sliding-window layers as transformers applies it, or None when it has none
    (or one at least as long as the context, which changes nothing)."""
    window = config.get("sliding_window")
    types = config.get("layer_types")
    if types is not None and "sliding_attention" not in types:
        return None
    if config.get("use_sliding_window") is False:
        return None
    if window is None or int(window) >= int(config.get("max_position_embeddings", 0) or 0) > 0:
        return None
    return int(window)


# -- per family -------------------------------------------------------------------------------------------------
def _smollm3_check(config: dict) -> str | None:
    layers = int(config["num_hidden_layers"])
    want = [int((i + 1) % SMOLLM3_NOPE_STEP != 0) for i in range(layers)]
    have = config.get("no_rope_layers")
    if have is not None and list(have) != want:
        return (f"llama.cpp leaves rope out of every {SMOLLM3_NOPE_STEP}th layer only; this model's "
                f"no_rope_layers are {list(have)}")
    return None


def _phi3_extra(writer, config: dict) -> None:
    # llama.cpp's converter writes 0 for "no sliding window" (Phi-4); a window is refused before this.
    writer.add_sliding_window(0)
    original = config.get("original_max_position_embeddings") or rope_params(config).get(
        "original_max_position_embeddings")
    if original:
        writer.add_rope_scaling_orig_ctx_len(int(original))


def _gemma3_layers(config: dict) -> list[bool]:
    types = config.get("layer_types") or []
    return [t == "sliding_attention" for t in types]


def _gemma3_check(config: dict) -> str | None:
    layers = int(config["num_hidden_layers"])
    # llama.cpp scales queries by 1/sqrt(head_dim), or by 1/sqrt(hidden/heads) for its 62-layer 27B
    scale_dim = config["hidden_size"] // config["num_attention_heads"] if layers == 62 else head_dim(config)
    if int(config.get("query_pre_attn_scalar") or scale_dim) != scale_dim:
        return (f"llama.cpp scales attention by 1/sqrt({scale_dim}); this model's query_pre_attn_scalar is "
                f"{config.get('query_pre_attn_scalar')}")
    if config.get("attn_logit_softcapping"):
        return "llama.cpp's gemma3 has no attention logit soft-capping"
    if config.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        return f"llama.cpp's gemma3 uses GELU (tanh); this model uses {config.get('hidden_activation')}"
    if config.get("layer_types") and len(config["layer_types"]) != layers:
        return "its layer_types do not cover every layer"
    return None


def _gemma3_extra(writer, config: dict) -> None:
    pattern = _gemma3_layers(config)
    if any(pattern) and config.get("sliding_window"):
        writer.add_sliding_window(int(config["sliding_window"]))
        writer.add_sliding_window_pattern(pattern)  # one flag per layer: llama.cpp reads the array as is
        local = rope_params(config, "sliding_attention")
        writer.add_rope_freq_base_swa(float(local["rope_theta"]))
    if config.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))


BIASES = ("attention_bias", "mlp_bias")  # llama.cpp's llama loads every optional bias
SPECS: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama", permute_qk=True, rope_freqs=True, bias_keys=BIASES,
                      rope_types=("default", "linear", "llama3")),
    "mistral": ArchSpec("llama", permute_qk=True, bias_keys=BIASES),
    "qwen2": ArchSpec("qwen2", permute_qk=False),
    "qwen3": ArchSpec("qwen3", permute_qk=False),
    "smollm3": ArchSpec("smollm3", permute_qk=True, check=_smollm3_check),
    "phi3": ArchSpec("phi3", permute_qk=False, extra=_phi3_extra),
    "gemma3_text": ArchSpec("gemma3", permute_qk=False, norm_shift=1.0, sliding=True,
                            extra=_gemma3_extra, check=_gemma3_check),
}
LABELS = "Llama, Mistral, Qwen2/Qwen2.5, Qwen3, SmolLM3, Phi-3 (byte-level BPE) and Gemma 3 (text)"


def refusal(config: dict) -> str | None:
    """Why this config cannot be written for llama.cpp (a phrase to follow the architecture's name), or None."""
    spec = SPECS.get(config.get("model_type", ""))
    if spec is None:
        return f"is not supported (GGUF export writes {LABELS})"
    rope = rope_params(config)
    if rope["rope_type"] not in spec.rope_types:
        return f"uses rope scaling {rope['rope_type']!r}, which this exporter does not write for it"
    window = sliding_window(config)
    if window is not None and not spec.sliding:
        return (f"uses sliding-window attention ({window} tokens), which llama.cpp's {spec.arch} does not run: "
                "long prompts would answer differently")
    # (Qwen2's q/k/v biases are not switched by the config: llama.cpp loads them.)
    biased = [k for k in ("attention_bias", "mlp_bias") if config.get(k) and k not in spec.bias_keys]
    if biased:
        return f"has linear-layer biases ({', '.join(biased)}) that llama.cpp's {spec.arch} does not load"
    return spec.check(config) if spec.check else None
