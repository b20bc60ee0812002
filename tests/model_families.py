"""Tiny random models and tokenizers of the families users fine-tune, and what the studio offers each.

Used by tests/test_model_matrix.py. Each family gets
* `build(tokenizer, seed, init)`: a tiny random model from that family's
  config (hidden 32, 2 layers, the vocabulary of its tokenizer fixture,
  sliding windows of `WINDOW` tokens, shorter than the matrix's rows), with
  the config's default attention implementation (sdpa where the model
  supports it; Gemma 2 gets eager, its soft-capping refuses sdpa);
* `tokenizer()`: a byte-level BPE tokenizer trained in memory on a few
  sentences with the `tokenizers` library, carrying that family's special
  tokens and a chat template the project wrote in the family's turn format
  (ChatML, Llama-3 headers, Gemma turns, Phi-3 tags, Mistral [INST], ...).
  Only the bundled SmolLM2 tokenizer ships offline: these fixtures stand in
  for the real ones (docs/model-matrix.md says which cells rest on them).

`EXPECTED` is what the studio gives each family, the one place the matrix
tests assert against and docs/model-matrix.md is rendered from
(`render_table`; test_model_matrix checks the doc holds exactly that table).
Print the table with:

    .venv/bin/python tests/model_families.py
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

WINDOW = 6  # sliding windows: shorter than every training row and most prompts in the matrix
HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 32, 2, 4, 2, 8
MAX_POSITIONS = 256
TRAIN_MAX_LENGTH = 24  # the max_length the training speed-ups are decided for (> WINDOW)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Which colour is the red ball? The red ball is red, the blue ball is blue.",
    "Summarize the meeting notes in one sentence, please.",
    "Hello there! How are you today? I am fine, thank you.",
    "Write one word about the weather: sunny, rainy or windy.",
    "user assistant system model: answer the question briefly.",
    "Numbers 12345 and 67890 are written with digits.",
]


# -- chat formats ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatFormat:
    """A family's special tokens and chat template (written by the project in that family's format)."""

    name: str
    template: str
    eos: str  # the token a turn ends with: generation stops there
    pad: str
    bos: str | None = None
    extra: tuple[str, ...] = ()

    @property
    def specials(self) -> list[str]:
        tokens = [self.pad, self.eos, *([self.bos] if self.bos else []), *self.extra]
        return list(dict.fromkeys(tokens))  # one id each, in a fixed order


CHATML = ChatFormat(
    "ChatML",
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    eos="<|im_end|>", pad="<|endoftext|>", extra=("<|im_start|>",))
LLAMA3 = ChatFormat(
    "Llama 3 headers",
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
    eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", bos="<|begin_of_text|>",
    extra=("<|start_header_id|>", "<|end_header_id|>"))
GEMMA = ChatFormat(
    "Gemma turns",
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
    eos="<end_of_turn>", pad="<pad>", bos="<bos>", extra=("<start_of_turn>", "<eos>"))
PHI3 = ChatFormat(
    "Phi-3 tags",
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
    eos="<|end|>", pad="<|endoftext|>", bos="<s>", extra=("<|user|>", "<|assistant|>", "<|system|>"))
MISTRAL = ChatFormat(
    "Mistral [INST]",
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}",
    eos="</s>", pad="<pad>", bos="<s>", extra=("[INST]", "[/INST]"))
OLMO2 = ChatFormat(
    "OLMo 2 tags",
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
    eos="<|endoftext|>", pad="<|pad|>", bos="<|endoftext|>", extra=("<|user|>", "<|assistant|>", "<|system|>"))
PLAIN = ChatFormat(  # GPT-2 and GPT-NeoX (Pythia) base models ship no chat template
    "plain 'role: text' lines",
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}",
    eos="<|endoftext|>", pad="<|padding|>")


@functools.lru_cache(maxsize=None)
def _tokenizer_json(chat: ChatFormat) -> str:
    """A byte-level BPE (GPT-2 style, as SmolLM, Qwen and Llama 3 use) trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + len(chat.specials) + 64, special_tokens=chat.specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str()


def make_tokenizer(chat: ChatFormat):
    """A fresh PreTrainedTokenizerFast (callers change padding_side: each gets its own)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    specials = {"eos_token": chat.eos, "pad_token": chat.pad}
    if chat.bos:
        specials["bos_token"] = chat.bos
    others = [t for t in chat.specials if t not in specials.values()]
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(chat)),
                                  extra_special_tokens=others, **specials)
    tok.chat_template = chat.template
    return tok


# -- models ------------------------------------------------------------------------------------------------
def _ids(tok) -> dict:
    return dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)


def _decoder(tok, init: float, **extra) -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=MAX_POSITIONS,
                initializer_range=init, **_ids(tok), **extra)


def _llama(tok, init):
    from transformers import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM(LlamaConfig(**_decoder(tok, init)))


def _qwen2(tok, init):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    return Qwen2ForCausalLM(Qwen2Config(**_decoder(tok, init)))  # q/k/v biases


def _qwen3(tok, init):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    return Qwen3ForCausalLM(Qwen3Config(**_decoder(tok, init, head_dim=HEAD_DIM)))  # q/k norms


def _gemma(tok, init):
    from transformers import GemmaConfig, GemmaForCausalLM
    return GemmaForCausalLM(GemmaConfig(**_decoder(tok, init, head_dim=HEAD_DIM)))  # (1 + w) RMSNorm


def _gemma2(tok, init):
    from transformers import Gemma2Config, Gemma2ForCausalLM
    # attention and final logit soft-capping, alternating sliding/full layers
    return Gemma2ForCausalLM(Gemma2Config(**_decoder(tok, init, head_dim=HEAD_DIM, sliding_window=WINDOW)))


def _gemma3(tok, init):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    return Gemma3ForCausalLM(Gemma3TextConfig(**_decoder(
        tok, init, head_dim=HEAD_DIM, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"])))


def _mistral(tok, init):
    from transformers import MistralConfig, MistralForCausalLM
    return MistralForCausalLM(MistralConfig(**_decoder(tok, init, sliding_window=WINDOW)))


def _phi3(tok, init):
    from transformers import Phi3Config, Phi3ForCausalLM
    return Phi3ForCausalLM(Phi3Config(**_decoder(tok, init)))  # fused qkv_proj and gate_up_proj


def _olmo2(tok, init):
    from transformers import Olmo2Config, Olmo2ForCausalLM
    return Olmo2ForCausalLM(Olmo2Config(**_decoder(tok, init)))  # norms after attention/MLP, q/k norms


def _smollm3(tok, init):
    from transformers import SmolLM3Config, SmolLM3ForCausalLM
    # no_rope_layer_interval=2: the second of the two layers has no rotary positions (NoPE), as every 4th does
    return SmolLM3ForCausalLM(SmolLM3Config(**_decoder(tok, init, no_rope_layer_interval=2)))


def _gpt2(tok, init):
    from transformers import GPT2Config, GPT2LMHeadModel
    # Conv1D projections, learned absolute positions, LayerNorm. GPT-2's dropouts (0.1) are set to 0, as the
    # other families' are by default: the matrix compares training steps exactly, and dropout is random.
    return GPT2LMHeadModel(GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=MAX_POSITIONS,
                                      initializer_range=init, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      **_ids(tok)))


def _gpt_neox(tok, init):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    # fused query_key_value, rotary on a quarter of each head (Pythia's default), parallel residual, LayerNorm
    cfg = GPTNeoXConfig(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=HEADS, max_position_embeddings=MAX_POSITIONS, initializer_range=init,
                        **_ids(tok))
    return GPTNeoXForCausalLM(cfg)


@dataclass(frozen=True)
class Family:
    name: str  # the test id
    label: str  # as the docs name it
    architecture: str  # the class name config.json carries
    chat: ChatFormat
    make: Callable
    # Weight scale for generation tests: larger than the default 0.02, so that logits are not flat and answers
    # differ from prompt to prompt. Gemma 2/3 want a small one: their embeddings are scaled by sqrt(hidden) and
    # each block's output is normalised, so with large weights the residual stream is the last prompt token's
    # embedding, the tied head repeats that token ("\n") and every answer is the same.
    gen_init: float = 0.3

    def tokenizer(self):
        return make_tokenizer(self.chat)

    def build(self, tokenizer=None, seed: int = 0, init: float = 0.02):
        """The family's tiny random model; the same seed gives the same weights (fresh identical copies)."""
        import torch

        torch.manual_seed(seed)
        model = self.make(tokenizer or self.tokenizer(), init)
        model.generation_config.pad_token_id = model.config.pad_token_id
        return model


FAMILIES = [
    Family("llama", "Llama", "LlamaForCausalLM", LLAMA3, _llama),
    Family("qwen2", "Qwen2", "Qwen2ForCausalLM", CHATML, _qwen2),
    Family("qwen3", "Qwen3", "Qwen3ForCausalLM", CHATML, _qwen3),
    Family("gemma", "Gemma", "GemmaForCausalLM", GEMMA, _gemma),
    Family("gemma2", "Gemma 2", "Gemma2ForCausalLM", GEMMA, _gemma2, gen_init=0.03),
    Family("gemma3", "Gemma 3 (text)", "Gemma3ForCausalLM", GEMMA, _gemma3, gen_init=0.03),
    Family("mistral", "Mistral", "MistralForCausalLM", MISTRAL, _mistral),
    Family("phi3", "Phi-3", "Phi3ForCausalLM", PHI3, _phi3),
    Family("olmo2", "OLMo 2", "Olmo2ForCausalLM", OLMO2, _olmo2),
    Family("smollm3", "SmolLM3", "SmolLM3ForCausalLM", CHATML, _smollm3),
    Family("gpt2", "GPT-2", "GPT2LMHeadModel", PLAIN, _gpt2),
    Family("gpt_neox", "GPT-NeoX", "GPTNeoXForCausalLM", PLAIN, _gpt_neox),
]
BY_NAME = {f.name: f for f in FAMILIES}


# -- what the studio offers each family ---------------------------------------------------------------------
# Per family, for the speed-ups whose decision depends on the model: None when applied, else a phrase the
# report's reason must contain (float32 LoRA on CPU with max_length TRAIN_MAX_LENGTH). The label-only LM head
# applies to every family; fused LoRA is off for DoRA and full fine-tunes everywhere (test_model_matrix checks
# both). `gguf`: None when the exporter writes the family (tests/test_gguf_families.py runs it in llama.cpp),
# else a phrase its refusal must contain.
SLIDING = "sliding-window attention"
NOT_LLAMA_NORM = "not Llama's RMSNorm"
CONV1D = "no plain LoRA linear layer"


def _expect(packed=None, norm=None, lora=None, decode=None, gguf="is not supported"):
    return {"packed_attention": packed, "fused_rms_norm": norm, "fused_lora": lora,
            "trimmed_decode_attention": decode, "prefilled_kv_cache": None, "gguf": gguf}


EXPECTED: dict[str, dict] = {
    "llama": _expect(gguf=None),
    "qwen2": _expect(gguf=None),
    "qwen3": _expect(gguf=None),
    "gemma": _expect(norm=NOT_LLAMA_NORM),
    "gemma2": _expect(packed=SLIDING, norm=NOT_LLAMA_NORM, decode="'eager'"),
    "gemma3": _expect(packed=SLIDING, norm=NOT_LLAMA_NORM, gguf=None),
    "mistral": _expect(packed=SLIDING, gguf=None),
    "phi3": _expect(gguf=None),
    "olmo2": _expect(norm=NOT_LLAMA_NORM),
    "smollm3": _expect(gguf=None),
    "gpt2": _expect(norm=NOT_LLAMA_NORM, lora=CONV1D),
    "gpt_neox": _expect(norm=NOT_LLAMA_NORM),
}

# GGUF: the matrix's own models of these families carry a setting llama.cpp runs differently (and are refused,
# naming it); the GGUF tests write the family in the layout llama.cpp runs: (config changes, the refusal's phrase).
GGUF_LAYOUT: dict[str, tuple[dict, str]] = {
    # llama.cpp leaves rope out of every 4th layer, as SmolLM3-3B does (the matrix model: every 2nd)
    "smollm3": (dict(num_hidden_layers=4, no_rope_layer_interval=4), "every 4th layer only"),
    # Mistral v0.2 and later have no sliding window; llama.cpp's llama has none
    "mistral": (dict(sliding_window=None), "sliding-window attention"),
    # llama.cpp scales attention by 1/sqrt(head_dim), as Gemma 3 1B-12B's query_pre_attn_scalar does
    "gemma3": (dict(query_pre_attn_scalar=HEAD_DIM), "query_pre_attn_scalar"),
}


def gguf_model(family: Family, tokenizer, seed: int = 0, init: float = 0.02):
    """The family's tiny model in the layout llama.cpp runs (`GGUF_LAYOUT`); the matrix model otherwise."""
    import torch

    model = family.build(tokenizer, seed, init)
    if family.name not in GGUF_LAYOUT:
        return model
    changes = GGUF_LAYOUT[family.name][0]
    config = {**model.config.to_dict(), **changes}
    if "num_hidden_layers" in changes:  # per-layer lists are derived again for the new depth
        config.pop("no_rope_layers", None)
        config.pop("layer_types", None)
    torch.manual_seed(seed)
    model = type(model)(type(model.config).from_dict(config))
    model.generation_config.pad_token_id = model.config.pad_token_id
    return model


# Failures of the studio the matrix found, kept as strict xfail tests (test_model_matrix) until fixed: remove an
# entry with its fix, and the table (regenerated) says "yes".
KNOWN_BUGS: dict[str, str] = {}  # feature -> why it fails today (its tests become strict xfails)

# Why a speed-up falls back, in the table's words (keyed by the phrase in EXPECTED).
WHY = {
    SLIDING: f"sliding window ({WINDOW}) < max_length → library attention",
    NOT_LLAMA_NORM: "norm is not Llama's RMSNorm → library backward",
    CONV1D: "Conv1D layers → PEFT's LoRA step",
    "'eager'": "eager attention (sdpa refused) → library attention",
}
LABELS = {"packed_attention": "packed attention", "fused_rms_norm": "RMSNorm backward", "fused_lora": "fused LoRA",
          "trimmed_decode_attention": "trimmed decode attention", "prefilled_kv_cache": "prefilled KV cache"}
# Cells resting on the project's tokenizer fixtures (chat templates, BPE) rather than a family's real tokenizer.
FIXTURE_ONLY = "†"
REAL_TOKENIZER = {"llama"}  # the bundled SmolLM2 (a Llama) is also covered with its real tokenizer elsewhere


def _cell(outcomes: dict, names: tuple[str, ...]) -> str:
    falls = [f"{LABELS[n]}: {WHY[outcomes[n]]}" for n in names if outcomes[n]]
    return "yes" if not falls else "falls back: " + "; ".join(falls)


# What the GGUF cell adds for a family: the layouts and tokenizers llama.cpp runs as the app does (the others are
# refused before any work, naming the setting). Families shipping SentencePiece tokenizers (byte-fallback BPE) are
# written only when fine-tuned with a byte-level BPE one.
GGUF_NOTES = {
    "mistral": "no sliding window (v0.2+); SentencePiece tokenizers refused",
    "gemma3": "query scaling as released; Gemma's SentencePiece tokenizer refused",
    "phi3": "byte-level BPE tokenizers (Phi-4); Phi-3's SentencePiece tokenizer refused",
    "smollm3": "NoPE on every 4th layer, as SmolLM3-3B",
}


def _gguf_cell(family: Family, refusal: str | None) -> str:
    if refusal is not None:
        return f"refused: names {family.architecture}"
    if family.name in REAL_TOKENIZER:
        cell = "yes (f16, bf16, q8_0)"
    else:  # the family's real tokenizer cannot be checked offline
        cell = "unverified (f16, bf16, q8_0): answers as the app in llama.cpp on the fixture"
    return cell + (f"; {GGUF_NOTES[family.name]}" if family.name in GGUF_NOTES else "")


def table_rows() -> list[list[str]]:
    rows = []
    for family in FAMILIES:
        e = EXPECTED[family.name]
        mark = "" if family.name in REAL_TOKENIZER else f" {FIXTURE_ONLY}"
        gguf = _gguf_cell(family, e["gguf"])
        rows.append([
            family.label,
            "yes (LoRA, DoRA, full)",
            _cell(e, ("packed_attention", "fused_lora", "fused_rms_norm")),
            _cell(e, ("prefilled_kv_cache", "trimmed_decode_attention")) + mark,
            ("yes (LoRA); DoRA: fails, a known bug" if "chat_dora" in KNOWN_BUGS else "yes (LoRA, DoRA)") + mark,
            "yes (LoRA, DoRA)",
            gguf + (mark if e["gguf"] is None else ""),
        ])
    return rows


HEADER = ["family", "training", "speed-ups", "batched evaluation", "chat", "merge", "GGUF"]


def render_table() -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_table(), end="")
