"""GGUF export of every family the exporter writes, run in llama.cpp itself (llama-cpp-python).

For each family of tests/model_families.py whose GGUF cell is not a refusal, a
tiny random model (float32, in the layout llama.cpp runs: `gguf_model`) and its
tokenizer fixture are saved as a folder and written as F16, BF16 and Q8_0. Then:

* the file holds the tokenizer's chat template and end-of-turn token, and
  llama.cpp stops generating at that token;
* llama.cpp, given the file alone (its template, its tokenizer), builds the
  app's prompt tokens for every conversation;
* teacher-forced on the app's answer, llama.cpp's logits stay within a small
  fraction of the logit scale of transformers' float32 logits (a wrong tensor
  layout, rope or norm is off by the whole scale);
* greedy answers (32 tokens) equal the app's up to the first step the app's
  choice is a near tie (top-2 logit gap within twice llama.cpp's measured
  deviation there: tiny random models have many; F16, BF16 and Q8_0 alike), and
  the counts are printed: identical answers and token agreement (`-s` shows them).

A pre-tokenizer test tokenises tricky text with four byte-level BPE tokenizers
(Llama 3, Qwen2, SmolLM and GPT-2 splits) in llama.cpp and transformers.
Refusals (setting, tokenizer) need no llama.cpp. Run with:

    .venv/bin/python -m pytest -q -m "" tests/test_gguf_families.py -s
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from model_families import CORPUS, EXPECTED, FAMILIES, GGUF_LAYOUT, gguf_model  # noqa: E402

from finetune_core.export.gguf import QTYPES, GGUFExportError, write_gguf  # noqa: E402
from finetune_core.export.parity import (LLAMACPP_HINT, compare, gguf_answers, llama_cpp_available,  # noqa: E402
                                         prompt_ids, reference_answers)

WRITTEN = [f for f in FAMILIES if EXPECTED[f.name]["gguf"] is None]
CONVERSATIONS = [
    [{"role": "user", "content": "Hello there! How are you today?"}],
    [{"role": "user", "content": "Which colour is the red ball?"}],
    [{"role": "system", "content": "answer the question briefly."}, {"role": "user", "content": "Numbers 12345 and 67890"}],
    [{"role": "user", "content": "Write one word about the weather."}, {"role": "assistant", "content": "sunny"},
     {"role": "user", "content": "And tomorrow?"}],
    [{"role": "user", "content": "Summarize the meeting notes in one sentence, please."}],
    [{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}],
]
# llama.cpp computes with activations rounded to the weights' type (and an F16 KV cache): measured on these
# models, its logits stay within 1% (F16), 8% (BF16) and 14% (Q8_0) of the logit scale; a layout error is ~100%.
MAX_DEVIATION = {"f16": 0.03, "bf16": 0.15, "q8_0": 0.25}

needs_llamacpp = pytest.mark.skipif(not llama_cpp_available(), reason=f"llama.cpp is not installed: {LLAMACPP_HINT}")


@pytest.fixture(autouse=True)
def _no_amx_repack(monkeypatch):
    """llama.cpp repacks Q8_0 weights for AMX CPUs, and that path crashes the process on this machine's CPU;
    loading without the extra buffer types runs the same model with the plain CPU kernels."""
    if not llama_cpp_available():
        return
    import llama_cpp.llama as llama_module

    from finetune_core.export.llamacpp_worker import without_repack

    monkeypatch.setattr(llama_module.llama_cpp, "llama_model_default_params",
                        without_repack(llama_module.llama_cpp.llama_model_default_params))


def _save(family, folder: Path, seed: int = 1):
    """The family's GGUF-layout model (float32, generation weights) and tokenizer saved in `folder`;
    returns (model, the tokenizer as the app loads it from the folder)."""
    from transformers import AutoTokenizer

    model = gguf_model(family, family.tokenizer(), seed=seed, init=family.gen_init).eval()
    model.save_pretrained(folder)
    family.tokenizer().save_pretrained(folder)
    return model, AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module", params=WRITTEN, ids=lambda f: f.name)
def exported(request, tmp_path_factory):
    """(family, model, app tokenizer, {qtype: file}, reference answers) for one family."""
    family = request.param
    out = tmp_path_factory.mktemp(f"gguf-{family.name}")
    model, tok = _save(family, out / family.name)
    files = {q: write_gguf(out / family.name, out / f"{family.name}-{q}.gguf", q) for q in QTYPES}
    return family, model, tok, files, reference_answers(model, tok, CONVERSATIONS)


# -- what the file says -------------------------------------------------------------------------------------
def test_file_holds_the_chat_template_and_end_of_turn(exported):
    from gguf import GGUFReader

    family, model, tok, files, _ = exported
    for qtype, path in files.items():
        fields = GGUFReader(str(path)).fields
        arch = fields["general.architecture"].contents()
        assert fields["tokenizer.chat_template"].contents() == tok.chat_template, qtype
        eos = fields["tokenizer.ggml.eos_token_id"].contents()
        assert eos == tok.eos_token_id and tok.convert_ids_to_tokens(eos) == family.chat.eos, qtype
        assert fields[f"{arch}.block_count"].contents() == model.config.num_hidden_layers
        assert len(fields["tokenizer.ggml.tokens"].contents()) == model.config.vocab_size


@pytest.mark.parametrize("qtype", QTYPES)
def test_file_types(exported, qtype):
    from gguf import GGUFReader

    _, _, _, files, _ = exported
    types = {t.name: t.tensor_type.name for t in GGUFReader(str(files[qtype])).tensors}
    assert types["token_embd.weight"] == qtype.upper()
    assert all(kind == "F32" for name, kind in types.items() if "norm" in name)


# -- llama.cpp ----------------------------------------------------------------------------------------------
def _teacher_forced(path: Path, sequences: list[list[int]]) -> list[np.ndarray]:
    """llama.cpp's logits at every position of each sequence (the next-token logits after each prefix)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    try:
        out = []
        for ids in sequences:
            llm.reset()
            llm.eval(ids)
            out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
        return out
    finally:
        llm.close()


def _reference_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


@pytest.mark.llamacpp
@needs_llamacpp
def test_llama_cpp_stops_at_the_end_of_turn(exported):
    import llama_cpp

    _, _, tok, files, _ = exported
    llm = llama_cpp.Llama(model_path=str(files["f16"]), vocab_only=True, verbose=False)
    try:
        assert llm.token_eos() == tok.eos_token_id
        assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok.eos_token_id)  # noqa: SLF001
    finally:
        llm.close()


@pytest.mark.llamacpp
@needs_llamacpp
@pytest.mark.parametrize("qtype", QTYPES)
def test_llama_cpp_answers_as_the_app(exported, qtype):
    family, model, tok, files, reference = exported
    answers, prompts = gguf_answers(files[qtype], CONVERSATIONS)
    # the file's own template and tokenizer give the app's prompt tokens
    assert prompts == [prompt_ids(tok, c) for c in CONVERSATIONS]
    worst = 0.0
    forced = _teacher_forced(files[qtype], [p + a for p, a in zip(prompts, reference)])
    for conversation, prompt, want, got, cpp in zip(CONVERSATIONS, prompts, reference, answers, forced):
        ids = prompt + want
        app = _reference_logits(model, ids)[len(prompt) - 1: len(ids) - 1]
        cpp = cpp[len(prompt) - 1: len(ids) - 1]
        deviation = np.abs(cpp - app).max(axis=-1)  # per step
        worst = max(worst, float(deviation.max() / np.abs(app).max()))
        top2 = np.sort(app, axis=-1)[:, -2:]
        decided = (top2[:, 1] - top2[:, 0]) > 2 * deviation
        # llama.cpp's choice may only part from the app's at (or after) a near tie
        first_tie = int(np.argmin(decided)) if not decided.all() else len(want)
        assert got[:first_tie] == want[:first_tie], (family.name, qtype, conversation, first_tie)
        if decided.all():
            assert got == want, (family.name, qtype, conversation)  # the stop token too
    assert worst < MAX_DEVIATION[qtype], f"{family.name} {qtype}: logits off by {worst:.1%} of their scale"
    identical, agreement, _ = compare(reference, answers)
    print(f"\n{family.name} {qtype}: {identical}/{len(CONVERSATIONS)} identical in llama.cpp, "
          f"token agreement {agreement:.1%}, logit deviation {worst:.2%} of scale")


# -- pre-tokenizers -----------------------------------------------------------------------------------------
TRICKY = ["Numbers 12345 and 67890, 3.14159 and 2024-01-02.", "I'm here, you're THERE; it's 'quoted' DON'T",
          "line one\n\n\nline two\r\n  spaced   out\ttab  ", "naïve café 東京 😀 x=10*20; <tag>", "   leading and trailing   "]


def _split_tokenizer(pre_tokenizer, ignore_merges: bool = False):
    """A byte-level BPE tokenizer with `pre_tokenizer`, trained on the matrix corpus and TRICKY."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS + TRICKY * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _pre_tokenizers():
    from tokenizers import Regex, pre_tokenizers

    from finetune_core.export.gguf_tokenizer import LLAMA3_SPLIT, QWEN2_SPLIT

    def split(pattern):
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    return {  # expected llama.cpp name: (pre-tokenizer, ignore_merges)
        "llama-bpe": (split(LLAMA3_SPLIT), True),
        "dbrx": (split(LLAMA3_SPLIT), False),
        "qwen2": (split(QWEN2_SPLIT), False),
        "smollm": (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                            pre_tokenizers.ByteLevel(add_prefix_space=False)]), False),
        "gpt-2": (pre_tokenizers.ByteLevel(add_prefix_space=False), False),
    }


@pytest.mark.llamacpp
@needs_llamacpp
@pytest.mark.parametrize("name", ["llama-bpe", "dbrx", "qwen2", "smollm", "gpt-2"])
def test_llama_cpp_splits_text_as_the_tokenizer(name, tmp_path):
    """The pre-tokenizer named in the file makes llama.cpp give transformers' token ids on digits, contractions,
    newlines, runs of spaces and non-ASCII text."""
    import llama_cpp
    from gguf import GGUFReader
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    pre, ignore_merges = _pre_tokenizers()[name]
    _split_tokenizer(pre, ignore_merges).save_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4)).save_pretrained(tmp_path / "m")
    path = write_gguf(tmp_path / "m", tmp_path / "m.gguf")
    assert GGUFReader(str(path)).fields["tokenizer.ggml.pre"].contents() == name
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        for text in TRICKY + CORPUS:
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok(text)["input_ids"], text
    finally:
        llm.close()


# -- refusals -------------------------------------------------------------------------------------------------
def _folder(tmp_path: Path, tokenizer) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path / "qwen"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_refuses_a_tokenizer_with_byte_fallback(tmp_path):
    """SentencePiece-style BPE (byte fallback, as Llama 2, Mistral, Gemma and Phi-3 ship) needs llama.cpp's other
    vocabulary kind: refused before the file is started, naming the model and the tokenizer kind."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"],
                                                        show_progress=False))
    folder = _folder(tmp_path, PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>"))
    with pytest.raises(GGUFExportError, match=r"cannot write Qwen2ForCausalLM: .*byte fallback"):
        write_gguf(folder, tmp_path / "out" / "m.gguf")
    assert not (tmp_path / "out").exists()


def test_a_run_with_such_a_tokenizer_is_refused_before_the_merge(tmp_path, runs_root, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from finetune_core.config import RunConfig
    from finetune_core.export import artifacts as export
    from finetune_core.runs.store import create_run

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"],
                                                        show_progress=False))
    folder = _folder(tmp_path, PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>"))
    run = create_run(RunConfig.from_dict(dict(model=str(folder), data_path="x.jsonl")))
    get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig(r=2, target_modules=["q_proj"])
                   ).save_pretrained(run.adapter_dir)
    monkeypatch.setattr(export, "merge", lambda *a, **k: pytest.fail("merged before refusing"))
    with pytest.raises(GGUFExportError, match=r"cannot write Qwen2ForCausalLM: .*SentencePiece-style"):
        export.export_gguf(run, tmp_path / "out" / "run.gguf")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_refuses_a_pre_tokenizer_llama_cpp_does_not_know(tmp_path):
    from tokenizers import Regex, pre_tokenizers

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}{1,2}|\p{L}+|\s+|."), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    folder = _folder(tmp_path, _split_tokenizer(pre))
    with pytest.raises(GGUFExportError, match=r"Qwen2ForCausalLM: its pre-tokenizer regex is not one llama.cpp knows"):
        write_gguf(folder, tmp_path / "out" / "m.gguf")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(GGUF_LAYOUT))
def test_refuses_a_layout_llama_cpp_runs_differently(name, tmp_path):
    """The matrix's own model of these families (NoPE every 2nd layer, a 6-token sliding window, Gemma 3's default
    query scale with head size 8) would load in llama.cpp and answer differently: refused, naming the setting."""
    family = next(f for f in FAMILIES if f.name == name)
    tok = family.tokenizer()
    family.build(tok).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with pytest.raises(GGUFExportError, match=re.escape(f"cannot write {family.architecture}: ")) as caught:
        write_gguf(tmp_path / "m", tmp_path / "out" / "m.gguf")
    assert GGUF_LAYOUT[name][1] in str(caught.value)
    assert not (tmp_path / "out").exists()


# Settings of released checkpoints (their config.json, trimmed to what the exporter reads): written, or refused
# naming the setting llama.cpp would run differently.
RELEASED = {
    "Qwen2.5-0.5B-Instruct": (dict(model_type="qwen2", num_hidden_layers=24, hidden_size=896, num_attention_heads=14,
                                   use_sliding_window=False, sliding_window=32768, max_position_embeddings=32768,
                                   tie_word_embeddings=True), None),
    "SmolLM3-3B": (dict(model_type="smollm3", num_hidden_layers=36, hidden_size=2048, num_attention_heads=16,
                        no_rope_layers=[int((i + 1) % 4 != 0) for i in range(36)], use_sliding_window=False,
                        max_position_embeddings=65536), None),
    "Mistral-7B-Instruct-v0.3": (dict(model_type="mistral", num_hidden_layers=32, hidden_size=4096,
                                      num_attention_heads=32, sliding_window=None, max_position_embeddings=32768),
                                 None),
    "Mistral-7B-v0.1": (dict(model_type="mistral", num_hidden_layers=32, hidden_size=4096, num_attention_heads=32,
                             sliding_window=4096, max_position_embeddings=32768), "sliding-window attention (4096"),
    "Phi-3-mini-4k-instruct": (dict(model_type="phi3", num_hidden_layers=32, hidden_size=3072, num_attention_heads=32,
                                    sliding_window=2047, max_position_embeddings=4096), "sliding-window attention"),
    "gemma-3-1b-it": (dict(model_type="gemma3_text", num_hidden_layers=26, hidden_size=1152, num_attention_heads=4,
                           head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
                           layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                        for i in range(26)], max_position_embeddings=32768), None),
    "gemma-3-27b (text)": (dict(model_type="gemma3_text", num_hidden_layers=62, hidden_size=5376,
                                num_attention_heads=32, head_dim=128, query_pre_attn_scalar=168), None),
    "Qwen3 with o_proj bias": (dict(model_type="qwen3", num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                    attention_bias=True), "attention_bias"),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_settings_are_judged_as_llama_cpp_runs_them(name):
    from finetune_core.export.gguf_arch import refusal

    config, phrase = RELEASED[name]
    reason = refusal(config)
    assert (reason is None) if phrase is None else (phrase in (reason or "")), reason


# Settings the family tests' models do not have, each run once in llama.cpp (F16, teacher-forced).
VARIANTS = {
    "llama": dict(attention_bias=True, mlp_bias=True, tie_word_embeddings=True, rope_parameters=dict(
        rope_type="llama3", factor=8.0, rope_theta=500000.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)),  # shorter than the sequence: the scaling matters
    "qwen2": dict(tie_word_embeddings=True, rope_parameters=dict(rope_type="linear", factor=2.0, rope_theta=1e6)),
    "qwen3": dict(head_dim=16, tie_word_embeddings=True),  # head size other than hidden / heads
    "phi3": dict(tie_word_embeddings=True, rope_parameters=dict(rope_type="default", rope_theta=1e4,
                                                                 partial_rotary_factor=0.5)),
    "mistral": dict(head_dim=16),
    "gemma3": dict(final_logit_softcapping=2.0, rope_parameters={
        "full_attention": dict(rope_type="linear", factor=8.0, rope_theta=1e6),
        "sliding_attention": dict(rope_type="default", rope_theta=1e4)}),
}


@pytest.mark.llamacpp
@needs_llamacpp
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_llama_cpp_runs_family_settings(name, tmp_path):
    import torch
    from transformers import AutoTokenizer

    family = next(f for f in FAMILIES if f.name == name)
    model = gguf_model(family, family.tokenizer(), seed=1, init=family.gen_init)
    torch.manual_seed(1)
    model = type(model)(type(model.config).from_dict({**model.config.to_dict(), **VARIANTS[name]})).eval()
    model.save_pretrained(tmp_path / "m")
    family.tokenizer().save_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    conversation = CONVERSATIONS[2] + [{"role": "assistant", "content": CORPUS[0]}, {"role": "user", "content": CORPUS[1]}]
    ids = prompt_ids(tok, conversation) + reference_answers(model, tok, [conversation])[0]
    app = _reference_logits(model, ids)
    cpp = _teacher_forced(write_gguf(tmp_path / "m", tmp_path / "m.gguf"), [ids])[0]
    assert np.abs(cpp - app).max() / np.abs(app).max() < MAX_DEVIATION["f16"]
