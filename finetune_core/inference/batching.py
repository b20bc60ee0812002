"""How held-out prompts are grouped into generation batches.

Rows are sorted by length (little padding) and each batch is capped so that
its key/value cache fits a memory budget: larger models get fewer rows per
batch instead of running out of memory.
"""
from __future__ import annotations

# Cap on one batch's key/value cache: batch 64 x 500 tokens of the bundled 135M model
# is 1.5 GB in float32; larger models get fewer rows per batch instead of running out.
KV_BUDGET_BYTES = 2 * 1024 ** 3


def kv_bytes_per_token(model) -> int:
    """Bytes of cached keys and values per token of one row, from the model's config."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(cfg, "num_attention_heads", 1) or 1
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    element = next(model.parameters()).element_size()
    return cfg.num_hidden_layers * 2 * kv_heads * head_dim * element


def plan_batches(lengths: list[int], batch_size: int, max_new_tokens: int, bytes_per_token: int,
                 budget: int = KV_BUDGET_BYTES) -> list[list[int]]:
    """Row indices in batches: sorted by length (little padding), longest first inside a batch
    (see trimmed_decode_attention), at most `batch_size` rows and a cache of at most `budget` bytes."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending: row i is the longest so far, every row pads to its length.
        cache = (len(current) + 1) * (lengths[i] + max_new_tokens + 1) * bytes_per_token
        if current and (len(current) >= max(1, batch_size) or cache > budget):
            batches.append(current[::-1])
            current = []
        current.append(i)
    if current:
        batches.append(current[::-1])
    return batches
