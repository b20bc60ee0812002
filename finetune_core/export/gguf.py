"""GGUF export of a transformers model folder (f16, bf16 or q8_0), for llama.cpp and the tools built on it.

    python -m finetune_core export --run RUN_DIR --gguf model.gguf [--qtype bf16]
    python -c "from finetune_core.export.gguf import write_gguf; write_gguf('merged/', 'm.gguf')"

The input is a plain transformers folder (config.json, *.safetensors, tokenizer):
`finetune_core.export.artifacts.export_gguf` merges a run's adapter first. The file
follows llama.cpp's own converter (convert_hf_to_gguf.py) for the families in
`gguf_arch.SPECS` (Llama, Mistral, Qwen2/2.5, Qwen3, SmolLM3, Phi-3 layout,
Gemma 3 text); anything else, or a setting llama.cpp would run differently
(a sliding window it ignores, another NoPE pattern, ...), is refused before
any work, naming the architecture:

* hyperparameters under ``<arch>.*`` (context, widths, heads, head size, rope
  base and dimensions, RMS-norm epsilon, vocabulary size, the family's own
  keys; Llama-3 rope scaling as a ``rope_freqs`` tensor);
* tensors renamed with gguf's tensor map for that architecture
  (``blk.N.attn_q.weight`` ...), the rows of Q and K permuted where llama.cpp
  uses pairwise rope, Gemma's norms stored as ``1 + w``, fused Phi-3
  projections kept fused; ``output.weight`` only when the head is not tied;
* 1-D tensors (norms, biases) in F32; matrices in F16, BF16 or Q8_0 (a row
  whose length is not a multiple of 32 falls back to F16, as llama.cpp does);
* a byte-level BPE tokenizer (see gguf_tokenizer.py): tokens, types, merges,
  llama.cpp's pre-tokenizer name, special ids, add-bos/eos and the chat template.

tests/test_gguf_families.py loads the files in llama.cpp itself and compares
greedy answers with the transformers model; tests/test_export.py reads them
back with transformers' GGUF loader.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from finetune_core.errors import StudioError
from finetune_core.export import gguf_arch
from finetune_core.export.gguf_tokenizer import (TokenizerRefused, folder_tokenizer_refusal, tokenizer_metadata,
                                                 write_tokenizer)

QTYPES = ("f16", "bf16", "q8_0")  # the order the UI offers them
Q8_BLOCK = 32  # Q8_0 quantises rows in blocks of 32 values


class GGUFExportError(StudioError, ValueError):
    """The model cannot be written as GGUF; the message is for the user."""


# -- checks ---------------------------------------------------------------------------------
def read_config(model_dir: Path) -> dict:
    """The folder's config.json as a dict; GGUFExportError when there is none."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise GGUFExportError(f"{model_dir} has no config.json: it is not a model folder.")
    return json.loads(path.read_text(encoding="utf-8"))


def _arch_name(config: dict) -> str:
    return (config.get("architectures") or [None])[0] or config.get("model_type") or "this model"


def check_supported(config: dict) -> None:
    """Refuse a model llama.cpp cannot run as written (unknown family, or a setting the file cannot carry),
    naming its architecture."""
    reason = gguf_arch.refusal(config)
    if reason and reason.startswith("is not supported"):
        raise GGUFExportError(f"GGUF export: {_arch_name(config)} {reason}.")
    if reason:
        raise GGUFExportError(f"GGUF export cannot write {_arch_name(config)}: {reason}.")


def check_gguf_model(config: dict, tokenizer_dir: str | os.PathLike | None = None) -> None:
    """`check_supported`, then the tokenizer in `tokenizer_dir` (when given and present): only byte-level BPE
    with a pre-tokenizer llama.cpp knows is written. Reads two small files: cheap enough before a merge."""
    check_supported(config)
    if tokenizer_dir is not None:
        reason = folder_tokenizer_refusal(Path(tokenizer_dir))
        if reason:
            raise GGUFExportError(f"GGUF export cannot write {_arch_name(config)}: {reason}.")


def check_qtype(qtype: str) -> str:
    """Return `qtype` when it is one of QTYPES; else GGUFExportError naming the choices."""
    if qtype not in QTYPES:
        raise GGUFExportError(f"GGUF type {qtype!r} is not offered: choose one of {', '.join(QTYPES)}.")
    return qtype


# -- hyperparameters -----------------------------------------------------------------------
def write_hparams(writer, config: dict, name: str, file_type: int) -> None:
    """The `<arch>.*` keys llama.cpp reads: the ones every family shares, then the family's own."""
    spec = gguf_arch.SPECS[config["model_type"]]
    heads = int(config["num_attention_heads"])
    rope = gguf_arch.rope_params(config)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(gguf_arch.rope_dims(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(config["vocab_size"]))
    # always written: llama.cpp would derive hidden/heads, which Qwen3 and Gemma 3 do not use
    writer.add_key_length(gguf_arch.head_dim(config))
    writer.add_value_length(gguf_arch.head_dim(config))
    if rope["rope_type"] == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    if spec.extra:
        spec.extra(writer, config)


def llama3_rope_factors(config: dict) -> np.ndarray | None:
    """Per-frequency rope factors for Llama-3 rope scaling (llama.cpp stores them as `rope_freqs`)."""
    rope = gguf_arch.rope_params(config)
    if rope.get("rope_type") != "llama3":
        return None
    dim = gguf_arch.head_dim(config)
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
    """(array, raw ggml type or None): norms and biases stay F32, matrices become F16, BF16 or Q8_0."""
    import gguf

    if data.ndim == 1 or name.endswith("_norm.weight"):
        return data.astype(np.float32), None
    if qtype == "bf16":
        kind = gguf.GGMLQuantizationType.BF16
        return gguf.quants.quantize(data.astype(np.float32), kind), kind
    if qtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        kind = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data.astype(np.float32), kind), kind
    return data.astype(np.float16), None


def _prepare(hf_name: str, data: np.ndarray, config: dict, spec: gguf_arch.ArchSpec) -> np.ndarray:
    """The family's changes to one tensor before it is renamed: Q/K permutation, norm shift."""
    heads = int(config["num_attention_heads"])
    if spec.permute_qk and ".self_attn.q_proj." in hf_name:
        data = permute_rope(data, heads, heads)
    elif spec.permute_qk and ".self_attn.k_proj." in hf_name:
        data = permute_rope(data, heads, int(config.get("num_key_value_heads") or heads))
    if spec.norm_shift and hf_name.endswith("norm.weight"):
        data = data + np.float32(spec.norm_shift)
    return data


def add_tensors(writer, model_dir: Path, config: dict, qtype: str) -> int:
    """Add every tensor of the folder to `writer` (renamed and prepared for the family, a tied LM head left
    out, Llama-3 `rope_freqs` added) in `qtype`; returns how many were added. The writer holds them until
    the file is written."""
    import gguf

    spec = gguf_arch.SPECS[config["model_type"]]
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == spec.arch)
    tensor_map = gguf.get_tensor_name_map(arch, int(config["num_hidden_layers"]))
    factors = llama3_rope_factors(config) if spec.rope_freqs else None
    count = 0
    if factors is not None:
        writer.add_tensor("rope_freqs.weight", factors)
        count += 1
    for hf_name, data in read_state_dict(model_dir):
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from the rope settings
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        name = gguf_tensor_name(tensor_map, hf_name)
        array, raw = encode_tensor(name, _prepare(hf_name, data, config, spec), qtype)
        writer.add_tensor(name, array, raw_dtype=raw)
        count += 1
    return count


# -- the file ---------------------------------------------------------------------------------
FILE_TYPES = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}


def file_name_key(name: str) -> str:
    """The `general.name` to write: llama.cpp gives a model whose name contains "phi3"/"phi-3" the special-token
    habits of Phi-3's SentencePiece vocabulary (strips spaces after them, and fails to load a vocabulary
    without "</s>"), so such a name is written with a space before the 3.

    >>> file_name_key("phi3-mini-run"), file_name_key("Phi-3 tuned"), file_name_key("qwen")
    ('phi 3-mini-run', 'Phi- 3 tuned', 'qwen')
    """
    return re.sub(r"(?i)(phi-?)(3)", r"\1 \2", name)


def write_gguf(model_dir: str | os.PathLike, out_file: str | os.PathLike, qtype: str = "f16",
               name: str | None = None) -> Path:
    """Write `model_dir` (a transformers folder of a supported family) as one GGUF file; returns its path.

    Everything is checked before the file is started, and the file is written
    beside its final name and renamed, so a failure never leaves a truncated
    .gguf behind.
    """
    import gguf
    from transformers import AutoTokenizer

    model_dir, out_file = Path(model_dir), Path(out_file)
    check_qtype(qtype)
    config = read_config(model_dir)
    check_gguf_model(config, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        meta = tokenizer_metadata(tokenizer, int(config["vocab_size"]))
    except TokenizerRefused as exc:
        raise GGUFExportError(f"GGUF export cannot write {_arch_name(config)}: {exc}.") from None
    spec = gguf_arch.SPECS[config["model_type"]]
    file_type = getattr(gguf.LlamaFileType, FILE_TYPES[qtype])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), spec.arch)
    try:
        write_hparams(writer, config, file_name_key(name or model_dir.name), int(file_type))
        write_tokenizer(writer, meta)
        if qtype == "q8_0":
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
