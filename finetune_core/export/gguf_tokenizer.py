"""The tokenizer half of a GGUF file: byte-level BPE vocabularies and llama.cpp's pre-tokenizer names.

llama.cpp does not read tokenizer.json: it splits text with regexes of its
own, chosen by the ``tokenizer.ggml.pre`` name the file carries, and then
applies the merges. A wrong name gives different token ids for digits,
contractions or newlines, and a model that answers differently from the one
tested. `pre_tokenizer_name` therefore identifies the split from
tokenizer.json itself (the Split regex, Digits, ByteLevel), never from the
model's family:

* Llama 3 and SmolLM3: Split with ``\\p{N}{1,3}`` + ByteLevel, whole words
  looked up before merging (``ignore_merges``) -> ``llama-bpe``; the same
  split with merges always applied (cl100k-style) -> ``dbrx``;
* Qwen2, Qwen2.5, Qwen3: Split with single ``\\p{N}`` + ByteLevel -> ``qwen2``;
* SmolLM/SmolLM2 (``smollm``) and StarCoder (``starcoder``): Digits
  (individual) + ByteLevel; they differ only in cleaning spaces when decoding;
* GPT-2 style: ByteLevel alone -> ``gpt-2``.

Anything else is refused rather than guessed (llama.cpp would fall back to
its "default" split and warn that quality is degraded). SentencePiece
tokenizers and BPE with byte fallback (Llama 2, Mistral v0.1-v0.3, Gemma,
Phi-3) are refused too: they need llama.cpp's "llama" vocabulary, which this
exporter does not write.
"""
from __future__ import annotations

import json
from pathlib import Path

# The Split regexes of the real tokenizer.json files, as llama.cpp's converter hashes them.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# (regex, ignore_merges) -> name: llama.cpp's "llama-bpe" looks whole words up first, its "dbrx" and "qwen2" do not
SPLITS = {(LLAMA3_SPLIT, True): "llama-bpe", (LLAMA3_SPLIT, False): "dbrx", (QWEN2_SPLIT, False): "qwen2"}
# The bundled SmolLM2 tokenizer is rebuilt by transformers from the GGUF file the model ships as (whose
# pre-tokenizer is "smollm"); that rebuild keeps only the ByteLevel step and drops the Digits split. Its
# vocabulary has no multi-digit token, so both splits give the same ids; the file keeps the original name.
KNOWN_VOCABS = {("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>"): "smollm"}


class TokenizerRefused(ValueError):
    """The tokenizer cannot be written for llama.cpp; the message says why (gguf.py adds the model)."""


def _parts(node: dict | None) -> list[dict]:
    node = node or {}
    return list(node.get("pretokenizers") or []) if node.get("type") == "Sequence" else ([node] if node else [])


def pre_tokenizer_name(tokenizer_json: dict, clean_spaces: bool = False, tokens: list[str] | None = None) -> str:
    """llama.cpp's name for how this tokenizer splits text before BPE merges; TokenizerRefused when it has none.

    `clean_spaces`: the tokenizer's clean_up_tokenization_spaces (llama.cpp's
    "starcoder" cleans, its "smollm" does not; both split alike).
    """
    parts = _parts(tokenizer_json.get("pre_tokenizer"))
    kinds = [p.get("type") for p in parts]
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        pattern = (parts[0].get("pattern") or {}).get("Regex")
        key = (pattern, bool((tokenizer_json.get("model") or {}).get("ignore_merges")))
        if key in SPLITS and parts[0].get("behavior") == "Isolated" and not parts[0].get("invert"):
            return SPLITS[key]
        raise TokenizerRefused(f"its pre-tokenizer regex is not one llama.cpp knows ({pattern!r})")
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "starcoder" if clean_spaces else "smollm"
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return KNOWN_VOCABS.get(tuple((tokens or [])[:5]), "gpt-2")
    raise TokenizerRefused(f"its pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) "
                           "is not one llama.cpp knows")


def tokenizer_kind_refusal(tokenizer_json: dict | None) -> str | None:
    """Why this tokenizer.json cannot be written as a byte-level BPE vocabulary, or None when it can."""
    if tokenizer_json is None:
        return "it has no tokenizer.json (a SentencePiece tokenizer.model); only byte-level BPE is written"
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        return f"its tokenizer is {model.get('type') or 'of an unknown kind'}, not byte-level BPE"
    if model.get("byte_fallback"):
        return ("its tokenizer is SentencePiece-style BPE with byte fallback (as Llama 2, Mistral, Gemma, Phi-3), "
                "not byte-level BPE")
    try:
        pre_tokenizer_name(tokenizer_json)
    except TokenizerRefused as exc:
        return str(exc)
    return None


def folder_tokenizer_refusal(folder: Path) -> str | None:
    """`tokenizer_kind_refusal` for a model folder's files; None when the folder has no tokenizer at all
    (a tokenizer elsewhere is checked when the file is written)."""
    path = folder / "tokenizer.json"
    if path.is_file():
        return tokenizer_kind_refusal(json.loads(path.read_text(encoding="utf-8")))
    if (folder / "tokenizer.model").is_file():
        return tokenizer_kind_refusal(None)
    return None


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts BOS in front of the text itself: the file's add_bos flag, and why an Ollama
    template leaves BOS out (llama.cpp and Ollama then add it). Measured rather than read from a flag whose
    name moved between transformers versions."""
    probe = tokenizer("a")["input_ids"]
    return bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id


def tokenizer_metadata(tokenizer, vocab_size: int) -> dict:
    """Everything the file says about the tokenizer, as plain Python values; TokenizerRefused for another kind."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    refusal = tokenizer_kind_refusal(data)
    if refusal:
        raise TokenizerRefused(refusal)
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
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    probe = tokenizer("a")["input_ids"]
    return {
        "tokens": tokens, "types": types, "merges": merges,
        "pre": pre_tokenizer_name(data, bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)), tokens),
        "ids": {key: getattr(tokenizer, f"{key}_token_id", None) for key in ("bos", "eos", "unk", "pad")},
        "add_bos": adds_bos(tokenizer),
        # whether the tokenizer adds eos itself: measured, as `adds_bos`
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
