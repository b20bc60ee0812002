"""Prefilled batched generation (finetune_core.inference.batching): every row must get exactly
what it would get alone — same tokens, same logits — whatever the padding, the
shared opening, the cache growth or the decode-attention trimming."""
from __future__ import annotations

import threading

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from finetune_core.inference import batching as kv_batch
from finetune_core.inference.generation import GenSettings, InferenceModel
from finetune_core.inference.batching import plan_batches
from finetune_core.speedups import decode_attention, kv_cache
from finetune_core.speedups.kv_cache import GrowingCache, GrowingLayer, prefilled_batch, shared_prefix_length

PAD = 0
NEW = 6


@pytest.fixture(scope="module")
def chaotic_model():
    """A tiny random Llama with large weights: its greedy tokens swing with any change in
    positions or padding, so equal outputs mean equal computation."""
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.5, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()


def token_rows(n: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(7)
    opening = [5, 6, 7, 8, 9, 10]  # a shared "chat template" opening
    return [opening + torch.randint(3, 300, (4 + (i * 7) % 23,), generator=g).tolist() for i in range(n)]


def alone(model, tokens: list[int]):
    ids = torch.tensor([tokens])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                             do_sample=False, pad_token_id=PAD, eos_token_id=None,
                             return_dict_in_generate=True, output_logits=True)
    return out.sequences[0, len(tokens):], torch.stack(out.logits, 1)[0]


def batched(model, rows: list[list[int]], use_prefix: bool):
    prefix, n = (None, 0)
    if use_prefix:
        prefix, n = kv_cache.shared_prefix(model, rows, "cpu", lambda: torch.no_grad())
    with torch.inference_mode():
        inputs = prefilled_batch(model, rows, PAD, NEW, "cpu", prefix, n)
        out = model.generate(**inputs, max_new_tokens=NEW, do_sample=False, pad_token_id=PAD,
                             eos_token_id=None, return_dict_in_generate=True, output_logits=True)
    width = inputs["input_ids"].shape[1]
    return out.sequences[:, width:], torch.stack(out.logits, 1), n


@pytest.mark.parametrize("use_prefix", [True, False])
def test_batch_rows_match_each_row_alone(chaotic_model, use_prefix):
    rows = sorted(token_rows(12), key=len, reverse=True)  # longest first, as generate() orders them
    tokens, logits, prefix_len = batched(chaotic_model, rows, use_prefix)
    assert prefix_len == (6 if use_prefix else 0)
    for b, row in enumerate(rows):
        ref_tokens, ref_logits = alone(chaotic_model, row)
        assert tokens[b].tolist() == ref_tokens.tolist(), f"row {b} (length {len(row)})"
        torch.testing.assert_close(logits[b], ref_logits, atol=2e-4, rtol=1e-4)
    # The answers really vary from row to row: equality above is not a constant.
    assert len({tuple(t.tolist()) for t in tokens}) > 6


def test_trimmed_decode_attention_changes_reads_not_results(chaotic_model):
    rows = sorted(token_rows(20), key=len, reverse=True)  # > DECODE_GROUP rows: trimming applies
    plain_tokens, plain_logits, _ = batched(chaotic_model, rows, True)
    calls = []
    original = decode_attention.trimmed_decode_attention

    def spy(module, query, key, value, attention_mask, **kw):
        calls.append(query.shape[2])
        return original(module, query, key, value, attention_mask, **kw)

    assert decode_attention.use_trimmed_decode_attention(chaotic_model)
    try:
        from transformers import AttentionInterface

        AttentionInterface.register(decode_attention.DECODE_ATTENTION, spy)
        tokens, logits, _ = batched(chaotic_model, rows, True)
    finally:
        AttentionInterface.register(decode_attention.DECODE_ATTENTION, original)
        chaotic_model.set_attn_implementation("sdpa")
    assert 1 in calls  # decode steps went through the trimmed path
    assert tokens.tolist() == plain_tokens.tolist()
    torch.testing.assert_close(logits, plain_logits, atol=2e-4, rtol=1e-4)


def test_trimmed_attention_falls_back_when_rows_are_not_longest_first():
    class Module:
        num_key_value_groups = 2
        is_causal = True

    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(12, 4, 1, 8, generator=g), torch.randn(12, 2, 9, 8, generator=g), torch.randn(12, 2, 9, 8, generator=g)
    mask = torch.ones(12, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :5] = False  # row 0 padded more than row 1: not sorted
    out, _ = decode_attention.trimmed_decode_attention(Module(), q, k, v, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                           attn_mask=mask)
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]]) == 5
    # Each row keeps at least its last token for generate to feed.
    assert shared_prefix_length([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]]) == 4
    assert shared_prefix_length([[1, 2, 3, 9], [1, 2, 3, 8]]) == 0  # too short to be worth a pass
    assert shared_prefix_length([]) == 0


def test_growing_layer_appends_in_place_and_grows():
    layer = GrowingLayer()
    parts = [torch.randn(2, 3, n, 4) for n in (5, 1, 1, 200)]
    for p in parts:
        k, v = layer.update(p, -p)
    torch.testing.assert_close(k, torch.cat(parts, -2))
    torch.testing.assert_close(v, -torch.cat(parts, -2))
    assert layer.get_seq_length() == 207
    buffer = layer._kbuf
    layer.update(torch.zeros(2, 3, 1, 4), torch.zeros(2, 3, 1, 4))
    assert layer._kbuf is buffer  # room left: no re-allocation
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape == (1, 3, 208, 4)
    torch.testing.assert_close(layer.keys[0, :, :207], torch.cat(parts, -2)[1])


def test_left_padded_cache_right_aligns_rows():
    rows = [[(torch.full((1, 2, n, 3), float(n)), torch.full((1, 2, n, 3), -float(n)))] for n in (4, 2)]
    cache = GrowingCache.left_padded(rows, capacity=10)
    keys = cache.layers[0].keys
    assert keys.shape == (2, 2, 4, 3)
    assert keys[1, :, :2].abs().sum() == 0 and (keys[1, :, 2:] == 2).all()
    assert cache.layers[0]._kbuf.shape[-2] == 10


# -- through InferenceModel ---------------------------------------------------------
@pytest.fixture(scope="module")
def run_model(trained_run):
    return InferenceModel.from_run(trained_run)


def prompts(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Item {i}: " + "which colour is it? " * (1 + i % 4)}] for i in range(n)]


@pytest.mark.parametrize("tuned", [True, False])
def test_generate_batched_equals_plain_generate_per_prompt(run_model, tuned):
    """Both sides: the evaluation path answers exactly like transformers' generate on one prompt."""
    sampled = GenSettings(max_new_tokens=8)
    got = run_model.generate(prompts(7), tuned=tuned, settings=sampled, batch_size=3)
    tok = run_model.tokenizer
    expected = []
    for p in prompts(7):
        ids = tok(run_model.render(p), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode(), run_model.side_context(run_model.model, tuned):
            out = run_model.model.generate(**ids, **sampled.kwargs(tok))
        expected.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    assert got == expected


def test_cancel_during_prefill_stops(run_model):
    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        cancel.set()  # cancel after the first batch

    with pytest.raises(InterruptedError):
        run_model.generate(prompts(6), tuned=True, settings=GenSettings(max_new_tokens=4), batch_size=2,
                           progress=progress, cancel=cancel)
    assert seen == [2]
    # Cancelled between two rows' prefills (inside a batch), not only between batches.
    cancel = threading.Event()
    calls = []

    def stop_after_first():
        calls.append(1)
        return len(calls) > 1

    with torch.inference_mode(), pytest.raises(InterruptedError):
        prefilled_batch(run_model.model, [[1, 2, 3], [1, 2, 4]], PAD, 4, "cpu", should_stop=stop_after_first)


def test_plan_batches_sorts_caps_rows_and_memory():
    lengths = [50, 10, 30, 20, 40]
    # Ascending by length across batches, longest first inside each.
    assert plan_batches(lengths, 2, 0, 1, budget=10**9) == [[3, 1], [4, 2], [0]]
    # Memory cap: with 1 byte per token and a budget of 100, 2 rows of 41 (+1) fit, 3 do not.
    batches = plan_batches([40, 40, 40, 40], 64, 0, 1, budget=100)
    assert [len(b) for b in batches] == [2, 2]
    # A single row larger than the budget still runs (alone).
    assert plan_batches([500], 8, 0, 1, budget=10) == [[0]]
    assert plan_batches([], 8, 0, 1) == []
    assert sorted(i for b in plan_batches(lengths, 3, 5, 7) for i in b) == list(range(5))


def test_kv_bytes_per_token(chaotic_model):
    # 2 layers x (keys + values) x 2 key/value heads x head dim 16 x 4 bytes (float32)
    assert kv_batch.kv_bytes_per_token(chaotic_model) == 2 * 2 * 2 * 16 * 4
