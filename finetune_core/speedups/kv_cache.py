"""Prefilled key/value caches for batched generation on a CPU.

Why this exists: with a plain `model.generate` on a batch of left-padded
prompts, a CPU spends its time on three kinds of waste:
* prefill over padding (held-out prompts vary from tens to hundreds of
  tokens) and attention over it;
* the default cache re-allocating every layer's keys and values for each new
  token (`torch.cat`), which the profiler showed costing about as much as the
  attention at batch 16-64;
* the chat template's opening lines (system prompt, "Summarize ...") that all
  held-out prompts share, computed once per row.
Here the shared opening is computed once, each prompt's remainder is
prefilled on its own (no padding; a 200-token prompt already keeps the matrix
units busy), and the per-row caches are laid side by side, left-padded, in a
cache that grows in place. `model.generate` then continues from that cache
and decodes the whole batch together, where batching pays. Each row's keys
and values are exactly what it would get alone, so the answers match
one-at-a-time generation.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape [batch, heads, length, dim]
MIN_SHARED_PREFIX = 4  # shorter common openings are not worth a separate pass


class GrowingLayer(DynamicLayer):
    """A DynamicLayer that appends into spare room instead of re-allocating per token."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        """Hold `keys`/`values` (already complete) with room for `capacity` positions in all."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        n = keys.shape[-2]
        capacity = max(capacity, n)
        self._kbuf = keys.new_zeros(keys.shape[:-2] + (capacity, keys.shape[-1]))
        self._vbuf = values.new_zeros(values.shape[:-2] + (capacity, values.shape[-1]))
        self._kbuf[..., :n, :].copy_(keys)
        self._vbuf[..., :n, :].copy_(values)
        self._len = n
        self._expose()

    def _expose(self) -> None:
        # Views of the filled part: attention reads exactly what a concatenated cache would hold.
        self.keys = self._kbuf[..., :self._len, :]
        self.values = self._vbuf[..., :self._len, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized or self._kbuf is None:
            self.adopt(key_states, value_states, 2 * key_states.shape[-2] + 64)
            return self.keys, self.values
        n = key_states.shape[-2]
        if self._len + n > self._kbuf.shape[-2]:  # out of room: double it (rare; amortised)
            self.adopt(self.keys, self.values, 2 * (self._len + n))
        self._kbuf[..., self._len:self._len + n, :].copy_(key_states)
        self._vbuf[..., self._len:self._len + n, :].copy_(value_states)
        self._len += n
        self._expose()
        return self.keys, self.values

    def _readopt(self) -> None:
        # After an operation that replaced keys/values (crop, batch select, beam reorder).
        if self.is_initialized and self.keys is not None:
            self.adopt(self.keys, self.values, self._kbuf.shape[-2] if self._kbuf is not None else 0)

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._readopt()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._readopt()

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._readopt()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._readopt()

    def reset(self) -> None:
        super().reset()
        self._kbuf = self._vbuf = None
        self._len = 0


class GrowingCache(DynamicCache):
    """A DynamicCache made of GrowingLayers."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)

    @classmethod
    def left_padded(cls, rows: list[KV], capacity: int) -> "GrowingCache":
        """One batch cache from per-row caches (batch 1 each), right-aligned, room for `capacity` positions."""
        cache = cls()
        longest = max(kv[0][0].shape[-2] for kv in rows)
        for layer_idx in range(len(rows[0])):
            k0, v0 = rows[0][layer_idx]
            keys = k0.new_zeros((len(rows), k0.shape[1], longest, k0.shape[-1]))
            values = v0.new_zeros((len(rows), v0.shape[1], longest, v0.shape[-1]))
            for b, kv in enumerate(rows):
                k, v = kv[layer_idx]
                keys[b, :, longest - k.shape[-2]:] = k[0]
                values[b, :, longest - v.shape[-2]:] = v[0]
            layer = GrowingLayer()
            layer.adopt(keys, values, capacity)
            cache.layers.append(layer)
        return cache


def shared_prefix_length(token_rows: list[list[int]]) -> int:
    """Length of the opening all rows share, leaving each row at least its last token to feed generate."""
    if not token_rows:
        return 0
    limit = min(len(r) for r in token_rows) - 1
    first = token_rows[0]
    n = 0
    while n < limit and all(r[n] == first[n] for r in token_rows):
        n += 1
    return n if n >= MIN_SHARED_PREFIX else 0


def _kv_of(cache: Cache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def prefill(model, tokens: list[int], device, prefix: KV | None = None) -> KV:
    """Keys and values for `tokens` (batch 1), continuing after `prefix` when given."""
    cache = DynamicCache()
    if prefix:
        for layer_idx, (k, v) in enumerate(prefix):
            cache.update(k, v, layer_idx)
    if not tokens:
        return _kv_of(cache)
    ids = torch.tensor([tokens], dtype=torch.long, device=device)
    # logits_to_keep=1: only the cache is wanted, not 49k-wide logits for every position.
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return _kv_of(out.past_key_values)


def prefilled_batch(model, token_rows: list[list[int]], pad_id: int, max_new_tokens: int, device,
                    prefix: KV | None = None, prefix_len: int = 0,
                    should_stop: Callable[[], bool] = lambda: False) -> dict:
    """`generate` inputs for a batch: left-padded ids and mask plus a cache holding all but each row's last token.

    `prefix` is the cache of the first `prefix_len` tokens, shared by every row.
    """
    rows: list[KV] = []
    for tokens in token_rows:
        if should_stop():
            raise InterruptedError("Generation cancelled.")
        rows.append(prefill(model, tokens[prefix_len:-1], device, prefix if prefix_len else None))
    longest = max(len(t) for t in token_rows)
    input_ids = torch.full((len(token_rows), longest), pad_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(token_rows), longest), dtype=torch.long, device=device)
    for b, tokens in enumerate(token_rows):
        input_ids[b, longest - len(tokens):] = torch.tensor(tokens, dtype=torch.long, device=device)
        attention_mask[b, longest - len(tokens):] = 1
    # +1: generate's first step writes the last prompt token, then one position per new token.
    cache = GrowingCache.left_padded(rows, longest + max_new_tokens + 1)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "past_key_values": cache}


def shared_prefix(model, token_rows: list[list[int]], device, side: Callable[[], AbstractContextManager]
                  ) -> tuple[KV | None, int]:
    """The cache of the opening all rows share (computed under the `side` context), and its length."""
    n = shared_prefix_length(token_rows)
    if not n:
        return None, 0
    with side(), torch.inference_mode():
        return prefill(model, token_rows[0][:n], device), n
