"""The catalogue: small instruct models people fine-tune in a studio like this.

Each entry carries what the Train tab's picker shows (label, parameter count,
context length, architecture, whether the Hub gates it behind a licence) and
the shape a memory estimate needs without downloading anything
(`finetune_core.models.memory`). The figures are those of each model's config.json
on the Hub; tests/test_memory.py checks that every shape adds up to the
parameter count its model card states.

On a public deployment the catalogue is the default allow-list, and its
parameter counts let the size ceiling be checked offline
(`finetune_core.models.sources.check_model_size`).

    python -c "from finetune_core.models.catalogue import ENTRIES; print(*(e.label for e in ENTRIES), sep='\\n')"
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the bundled GGUF is a quantisation of


@dataclass(frozen=True)
class ModelShape:
    """The config numbers a memory estimate needs (names as in transformers' configs)."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    vocab_size: int
    num_attention_heads: int
    num_key_value_heads: int
    tie_word_embeddings: bool
    head_dim: int = 0  # 0: hidden_size // num_attention_heads (most configs leave it out)

    @property
    def dim_per_head(self) -> int:
        """Width of one attention head: `head_dim` where the config gives it, else hidden_size / heads."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_width(self) -> int:
        """Width of the queries (and of the attention output before o_proj)."""
        return self.num_attention_heads * self.dim_per_head

    @property
    def kv_width(self) -> int:
        """Width of the keys (and of the values): key-value heads times the head width (smaller under GQA)."""
        return self.num_key_value_heads * self.dim_per_head

    def layer_linear_params(self) -> int:
        """Weights of one decoder layer's linear projections (q, k, v, o, gate, up, down)."""
        h = self.hidden_size
        return h * self.q_width * 2 + h * self.kv_width * 2 + 3 * h * self.intermediate_size

    def embedding_params(self) -> int:
        """Input embeddings, plus the LM head when it is a separate matrix."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def params(self) -> int:
        """All parameters, to within the norms and biases (well under 0.1%)."""
        return self.num_hidden_layers * self.layer_linear_params() + self.embedding_params()

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a transformers config (its text part for multimodal ones); ValueError names a missing field."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        try:
            return cls(hidden_size=int(text.hidden_size), num_hidden_layers=int(text.num_hidden_layers),
                       intermediate_size=int(text.intermediate_size), vocab_size=int(text.vocab_size),
                       num_attention_heads=int(text.num_attention_heads),
                       num_key_value_heads=int(getattr(text, "num_key_value_heads", None)
                                               or text.num_attention_heads),
                       tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)
                                                or getattr(config, "tie_word_embeddings", False)),
                       head_dim=int(getattr(text, "head_dim", 0) or 0))
        except (AttributeError, TypeError) as exc:
            raise ValueError(f"the model's config lacks a field a memory estimate needs ({exc})") from None


@dataclass(frozen=True)
class ModelEntry:
    """One catalogue model."""

    hub_id: str
    name: str  # short display name
    params_b: float  # billions, from the model card
    context: int  # max_position_embeddings
    architecture: str  # transformers' model_type
    gated: bool  # the Hub asks for a licence to be accepted before downloading
    shape: ModelShape

    @property
    def label(self) -> str:
        """The picker's line: name, size, context, architecture, gating."""
        ctx = f"{self.context // 1024}k" if self.context >= 1024 else str(self.context)
        size = f"{self.params_b * 1000:.0f}M" if self.params_b < 1 else f"{self.params_b:.2f}B".replace(".00B", "B")
        gate = " · licence-gated" if self.gated else ""
        return f"{self.name} · {size} params · {ctx} context · {self.architecture}{gate}"


def _e(hub_id, params_b, context, arch, gated, h, layers, inter, vocab, heads, kv, tied, head_dim=0) -> ModelEntry:
    shape = ModelShape(h, layers, inter, vocab, heads, kv, tied, head_dim)
    return ModelEntry(hub_id, hub_id.split("/", 1)[1], params_b, context, arch, gated, shape)


# hub id, params (B), context, model_type, gated | hidden, layers, intermediate, vocab, heads, kv heads, tied, head_dim
ENTRIES: tuple[ModelEntry, ...] = (
    _e(BUNDLED_HUB_ID, 0.135, 8192, "llama", False, 576, 30, 1536, 49152, 9, 3, True),
    _e("HuggingFaceTB/SmolLM2-360M-Instruct", 0.36, 8192, "llama", False, 960, 32, 2560, 49152, 15, 5, True),
    _e("HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.71, 8192, "llama", False, 2048, 24, 8192, 49152, 32, 32, True),
    _e("HuggingFaceTB/SmolLM3-3B", 3.08, 65536, "smollm3", False, 2048, 36, 11008, 128256, 16, 4, True),
    _e("Qwen/Qwen2.5-0.5B-Instruct", 0.49, 32768, "qwen2", False, 896, 24, 4864, 151936, 14, 2, True),
    _e("Qwen/Qwen2.5-1.5B-Instruct", 1.54, 32768, "qwen2", False, 1536, 28, 8960, 151936, 12, 2, True),
    _e("Qwen/Qwen3-0.6B", 0.6, 40960, "qwen3", False, 1024, 28, 3072, 151936, 16, 8, True, 128),
    _e("Qwen/Qwen3-1.7B", 1.7, 40960, "qwen3", False, 2048, 28, 6144, 151936, 16, 8, True, 128),
    _e("meta-llama/Llama-3.2-1B-Instruct", 1.24, 131072, "llama", True, 2048, 16, 8192, 128256, 32, 8, True),
    _e("meta-llama/Llama-3.2-3B-Instruct", 3.21, 131072, "llama", True, 3072, 28, 8192, 128256, 24, 8, True, 128),
    _e("google/gemma-3-270m-it", 0.27, 32768, "gemma3_text", True, 640, 18, 2048, 262144, 4, 1, True, 256),
    _e("google/gemma-3-1b-it", 1.0, 32768, "gemma3_text", True, 1152, 26, 6912, 262144, 4, 1, True, 256),
    _e("microsoft/Phi-3.5-mini-instruct", 3.82, 131072, "phi3", False, 3072, 32, 8192, 32064, 32, 32, False),
    _e("allenai/OLMo-2-0425-1B-Instruct", 1.48, 4096, "olmo2", False, 2048, 16, 8192, 100352, 16, 16, False),
)
BY_ID = MappingProxyType({e.hub_id: e for e in ENTRIES})
# Hub id -> parameters in billions: the allow-list and the size ceiling's figures (read-only).
CATALOGUE = MappingProxyType({e.hub_id: e.params_b for e in ENTRIES})


def entry(hub_id: str) -> ModelEntry | None:
    """The catalogue entry of a Hub id, else None."""
    return BY_ID.get((hub_id or "").strip())
