"""GGUF export of a Llama-architecture model folder (f16 or q8_0), for llama.cpp-based tools.

    python -m finetune_core export --run RUN_DIR --gguf model.gguf [--qtype q8_0]
    python -c "from finetune_core.export.gguf import write_gguf; write_gguf('merged/', 'm.gguf')"

The input is a plain transformers folder (config.json, *.safetensors, tokenizer):
`finetune_core.export.artifacts.export_gguf` merges a run's adapter first. The file
follows llama.cpp's own converter (convert_hf_to_gguf.py, `LlamaModel`):

* hyperparameters under ``llama.*`` (context, widths, heads, rope base and
  dimension, RMS-norm epsilon, vocabulary size; Llama-3 rope scaling as a
  ``rope_freqs`` tensor);
* tensors renamed with gguf's tensor map (``blk.N.attn_q.weight`` ...), with
  the rows of Q and K permuted the way llama.cpp's rope kernel expects;
  ``output.weight`` only when the head is not tied to the embeddings;
* 1-D tensors (norms, biases) in F32; matrices in F16, or Q8_0 (a row whose
  length is not a multiple of 32 falls back to F16, as llama.cpp does);
* a byte-level BPE tokenizer (``gpt2`` model: SmolLM, Llama 3): tokens in id
  order, token types, merges, pre-tokenizer name, bos/eos/unk/pad ids,
  add-bos/eos flags and the chat template.

transformers reads the file back with
``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)``; the tests
check that the round trip gives the same greedy output.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from finetune_core.errors import StudioError

SUPPORTED_MODEL_TYPE = "llama"
QTYPES = ("f16", "q8_0")
Q8_BLOCK = 32  # Q8_0 quantises rows in blocks of 32 values

# Tokenizers whose pre-tokenizer llama.cpp knows under a name it cannot be told
# apart by from tokenizer.json alone: keyed by their first vocabulary entries.
KNOWN_VOCABS = {("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>"): "smollm"}
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class GGUFExportError(StudioError, ValueError):
    """The model cannot be written as GGUF; the message is for the user."""


# -- checks ---------------------------------------------------------------------------------
def read_config(model_dir: Path) -> dict:
    """The folder's config.json as a dict; GGUFExportError when there is none."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise GGUFExportError(f"{model_dir} has no config.json: it is not a model folder.")
    return json.loads(path.read_text(encoding="utf-8"))


def check_supported(config: dict) -> None:
    """Refuse anything but Llama: other architectures need other tensor layouts."""
    if config.get("model_type") != SUPPORTED_MODEL_TYPE:
        arch = (config.get("architectures") or [None])[0] or config.get("model_type") or "this model"
        raise GGUFExportError(f"GGUF export supports Llama-architecture models; {arch} is not supported.")


def check_qtype(qtype: str) -> str:
    """Return `qtype` when it is one of QTYPES ("f16", "q8_0"); else GGUFExportError naming the choices."""
    if qtype not in QTYPES:
        raise GGUFExportError(f"GGUF type {qtype!r} is not offered: choose one of {', '.join(QTYPES)}.")
    return qtype


# -- hyperparameters -----------------------------------------------------------------------
def _rope(config: dict) -> dict:
    """rope settings from either spelling (transformers 5 `rope_parameters`, older `rope_theta`/`rope_scaling`)."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return params


def _head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def write_hparams(writer, config: dict, name: str, file_type: int) -> None:
    """The `llama.*` keys llama.cpp and transformers read (see transformers' GGUF_CONFIG_MAPPING)."""
    heads = int(config["num_attention_heads"])
    head_dim = _head_dim(config)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(config["vocab_size"]))
    if head_dim != config["hidden_size"] // heads:  # llama.cpp derives it otherwise
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = _rope(config)
    if rope.get("rope_type", "default") == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope.get("rope_type", "default") not in ("default", "llama3"):
        raise GGUFExportError(f"GGUF export does not handle rope scaling {rope.get('rope_type')!r}.")


def llama3_rope_factors(config: dict) -> np.ndarray | None:
    """Per-frequency rope factors for Llama-3 rope scaling (llama.cpp stores them as `rope_freqs`)."""
    rope = _rope(config)
    if rope.get("rope_type") != "llama3":
        return None
    dim = _head_dim(config)
    freqs = 1.0 / (float(rope["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            out.append(1.0)
        elif wavelen > old_context / low:
            out.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


# -- tokenizer --------------------------------------------------------------------------------
def pre_tokenizer_name(tokenizer_json: dict, tokens: list[str]) -> str:
    """The llama.cpp pre-tokenizer name: how text is split before BPE merges apply."""
    known = KNOWN_VOCABS.get(tuple(tokens[:5]))
    if known:
        return known
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if "Split" in kinds:
        pattern = (parts[kinds.index("Split")].get("pattern") or {}).get("Regex")
        if pattern == LLAMA3_SPLIT:
            return "llama-bpe"
    if kinds == ["Digits", "ByteLevel"]:
        return "starcoder"  # llama.cpp: single digits, then the GPT-2 split
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    return "default"


def tokenizer_metadata(tokenizer, vocab_size: int) -> dict:
    """Everything the file says about the tokenizer, as plain Python values."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise GGUFExportError("GGUF export handles byte-level BPE tokenizers (SmolLM, Llama 3); "
                              "this model's tokenizer is of another kind (e.g. SentencePiece).")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # the embedding matrix is larger than the vocabulary
            tokens.append(f"[PAD{i}]")
            types.append(5)  # UNUSED
            continue
        tokens.append(by_id[i])
        types.append(1 if i not in added else 3 if added[i].special else 4)  # NORMAL / CONTROL / USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    probe = tokenizer("a")["input_ids"]
    return {
        "tokens": tokens, "types": types, "merges": merges,
        "pre": pre_tokenizer_name(data, tokens),
        "ids": {key: getattr(tokenizer, f"{key}_token_id", None) for key in ("bos", "eos", "unk", "pad")},
        # Whether the tokenizer adds bos/eos itself, measured rather than read from a flag
        # whose name moved between transformers versions.
        "add_bos": bool(probe) and probe[0] == tokenizer.bos_token_id,
        "add_eos": bool(probe) and probe[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id != probe[0],
        "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
    }


def write_tokenizer(writer, meta: dict) -> None:
    """Add the tokenizer keys (from `tokenizer_metadata`) to `writer`: a byte-level BPE ("gpt2") vocabulary,
    merges, special-token ids that are set, add-bos/eos flags and the chat template when there is one."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(meta["pre"])
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["types"])
    writer.add_token_merges(meta["merges"])
    setters = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
               "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}
    for key, token_id in meta["ids"].items():
        if token_id is not None:
            setters[key](int(token_id))
    writer.add_add_bos_token(meta["add_bos"])
    writer.add_add_eos_token(meta["add_eos"])
    writer.add_add_space_prefix(False)  # byte-level BPE encodes the space itself
    if meta["chat_template"]:
        writer.add_chat_template(meta["chat_template"])


# -- tensors ----------------------------------------------------------------------------------
def permute_rope(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Reorder Q/K rows from HF's rotate-half layout to llama.cpp's interleaved pairs
    (llama.cpp's `LlamaModel.permute`; transformers' GGUF loader undoes it)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def read_state_dict(model_dir: Path):
    """(name, float32 array) for every tensor of the folder's safetensors files."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"{model_dir} has no .safetensors weights.")
    for path in files:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                # via torch: numpy has no bfloat16
                yield key, fh.get_tensor(key).float().numpy()


def gguf_tensor_name(tensor_map, hf_name: str) -> str:
    """The GGUF name of a transformers tensor (e.g. ``blk.0.attn_q.weight``); GGUFExportError for an unknown one."""
    name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise GGUFExportError(f"GGUF export does not know where tensor {hf_name} goes.")
    return name


def encode_tensor(name: str, data: np.ndarray, qtype: str):
    """(array, raw ggml type or None): norms and biases stay F32, matrices become F16 or Q8_0."""
    import gguf

    if data.ndim == 1 or name.endswith("_norm.weight"):
        return data.astype(np.float32), None
    if qtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        return gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0), \
            gguf.GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None


def add_tensors(writer, model_dir: Path, config: dict, qtype: str) -> int:
    """Add every tensor of the folder to `writer` (Q/K rows permuted, a tied LM head left out, Llama-3
    `rope_freqs` added) in `qtype`; returns how many were added. The writer holds them until the file is written."""
    import gguf

    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, int(config["num_hidden_layers"]))
    factors = llama3_rope_factors(config)
    count = 0
    if factors is not None:
        writer.add_tensor("rope_freqs.weight", factors)
        count += 1
    for hf_name, data in read_state_dict(model_dir):
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from the rope settings
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if ".self_attn.q_proj." in hf_name:
            data = permute_rope(data, heads, heads)
        elif ".self_attn.k_proj." in hf_name:
            data = permute_rope(data, heads, kv_heads)
        name = gguf_tensor_name(tensor_map, hf_name)
        array, raw = encode_tensor(name, data, qtype)
        writer.add_tensor(name, array, raw_dtype=raw)
        count += 1
    return count


# -- the file ---------------------------------------------------------------------------------
def write_gguf(model_dir: str | os.PathLike, out_file: str | os.PathLike, qtype: str = "f16",
               name: str | None = None) -> Path:
    """Write `model_dir` (a Llama transformers folder) as one GGUF file; returns its path.

    The file is written beside its final name and renamed, so a failure never
    leaves a truncated .gguf behind.
    """
    import gguf
    from transformers import AutoTokenizer

    model_dir, out_file = Path(model_dir), Path(out_file)
    check_qtype(qtype)
    config = read_config(model_dir)
    check_supported(config)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    meta = tokenizer_metadata(tokenizer, int(config["vocab_size"]))
    file_type = gguf.LlamaFileType.MOSTLY_F16 if qtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        write_hparams(writer, config, name or model_dir.name, int(file_type))
        write_tokenizer(writer, meta)
        if qtype != "f16":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tensors(writer, model_dir, config, qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_file)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out_file
