"""Padding-free training on CPU: packed rows with causal attention row by row.

* Padding: TRL pads each training batch on the right to its longest row,
  and every layer then computes the padding too (4-7% of the tokens even
  with length-grouped batches), with a padding mask that sends SDPA down
  its masked path. `train_without_padding` packs a batch's real tokens
  into one row before the decoder (position ids restart at each row), runs
  causal attention row by row, and puts the hidden states back in the
  padded layout for the loss: no padding is computed and no row sees
  another's tokens.
* bf16 attention: torch's CPU flash-attention kernel runs bf16 at about
  the speed of float32, while bf16 matrix products run 4x faster than
  float32 ones on CPUs with bf16 instructions. For rows up to
  `GROUPED_MAX_LEN` tokens, `grouped_causal_attention` computes the scores
  with batched bf16 products (each key/value head shared by its query-head
  group without copying it) and the softmax in float32, as transformers'
  eager attention does: 1.24x the tokens/s of a training step that gives
  every row to the kernel (bench_train's `ours_sdpa` variant).

Row-by-row attention is plain full-causal attention: `packing_unsafe_reason`
names what a model declares that would make it differ (a sliding window
shorter than the rows, soft-capped logits, attention sinks, an attention
that does not take the row boundaries), and such a model is left alone.
"""
from __future__ import annotations

import torch
from torch import nn

PACKED_ATTENTION = "studio_packed_sdpa"


GROUPED_MAX_LEN = 512  # longer rows: the kernel wins (its memory use grows linearly, the scores' quadratically)


class CausalSoftmax(torch.autograd.Function):
    """softmax(scale * scores + future mask) over the last dim: float32 inside, the input's dtype
    out, and only those (bf16) probabilities kept for backward, where autograd would keep a
    float32 copy as well (bench_train's peak RSS for ours went from 7.7 to 6.3 GiB)."""

    @staticmethod
    def forward(ctx, scores, scale, future):
        work = torch.promote_types(scores.dtype, torch.float32)
        probs = torch.softmax(scores.to(work, copy=True).mul_(scale).add_(future), dim=-1).to(scores.dtype)
        ctx.save_for_backward(probs)
        ctx.scale = scale
        return probs

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        work = torch.promote_types(probs.dtype, torch.float32)
        p, g = probs.to(work), grad.to(work)
        dot = (g * p).sum(-1, keepdim=True)
        return g.sub_(dot).mul_(p).mul_(ctx.scale).to(grad.dtype), None, None


def grouped_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of one row, (1, heads, L, d) queries over (1, kv_heads, L, d) keys and values."""
    _, heads, length, dim = q.shape
    groups = k.shape[1]
    per = heads // groups  # query heads h*per .. h*per+per-1 read key/value head h
    scores = torch.bmm(q.reshape(groups, per * length, dim), k[0].transpose(1, 2))
    future = torch.full((length, length), float("-inf"), device=q.device).triu_(1)
    probs = CausalSoftmax.apply(scores.view(groups, per, length, length), scale, future)
    return torch.bmm(probs.view(groups, per * length, length), v[0]).view(1, heads, length, dim)


def _row_attention(q, k, v, scale, p: float, gqa: bool) -> torch.Tensor:
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and p == 0.0 and q.shape[2] <= GROUPED_MAX_LEN:
        return grouped_causal_attention(q, k, v, scale if scale is not None else q.shape[-1] ** -0.5)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, dropout_p=p,
                                                            enable_gqa=gqa)


def packed_causal_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Causal SDPA row by row over a packed batch (`cu_seq_lens_q` marks the rows); plain SDPA otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    positions = kwargs.get("position_ids")
    if bounds is None and attention_mask is None and query.shape[0] == 1 and positions is not None:
        # Packed by someone else (TRL's packing) without boundaries: rows start where positions restart.
        starts = (positions[0] == 0).nonzero().flatten()
        if starts.numel() > 1:
            bounds = torch.cat([starts, starts.new_tensor([positions.shape[-1]])])
    if bounds is None or query.shape[0] != 1 or attention_mask is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    bounds = bounds.tolist()
    sizes = [e - s for s, e in zip(bounds, bounds[1:])]
    gqa = query.shape[1] != key.shape[1]
    p = dropout if module.training else 0.0
    # split, not slicing: split's backward joins the row gradients in one pass, where each
    # slice's backward would write a full-length zero tensor.
    rows = [_row_attention(q, k, v, scaling, p, gqa)
            for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2), value.split(sizes, 2))]
    return torch.cat(rows, dim=2).transpose(1, 2).contiguous(), None


def _mask_unless_packed(*args, attention_mask=None, **kwargs):
    """SDPA's mask, except none for a packed batch (no padding mask): the rows are then kept
    apart by packed_causal_attention itself, and a tokens x tokens mask would be wasted work."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def sliding_window_reason(config, max_length: int | None) -> str:
    """The sliding window that would bind on rows of `max_length` tokens ("" when none does).

    Sliding-window layers (Mistral, Gemma 2/3, Qwen with use_sliding_window)
    attend only to the last `window` tokens; a window at least as long as the
    longest row never cuts anything, so such a model trains the same either way.
    """
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    sliding = bool(window) and getattr(config, "use_sliding_window", True) is not False and (
        not layer_types or any("sliding" in str(kind) for kind in layer_types))
    if not sliding or (max_length is not None and window >= max_length):
        return ""
    return f"sliding-window attention ({window} tokens) shorter than the rows (max_length {max_length})"


def packing_unsafe_reason(model_or_config, max_length: int | None = None) -> str:
    """Why packed causal attention would change this model's maths ("" when it is safe).

    The packed rows get plain full-causal attention. On a Mistral config whose
    window was shorter than a row, packing gave a different loss and LoRA
    gradients than plain PEFT (tests/test_model_matrix.py), so a model that
    declares anything else keeps the library's path.
    """
    model = model_or_config.get_base_model() if hasattr(model_or_config, "get_base_model") else model_or_config
    config = getattr(model, "config", model)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = sliding_window_reason(text, max_length)
    if window:
        return window
    if getattr(text, "attn_logit_softcapping", None):
        return "attention logit soft-capping"
    if getattr(text, "model_type", "") == "gpt_oss" or any(
            name.endswith(".sinks") for name, _ in getattr(model, "named_parameters", lambda: [])()):
        return "attention sinks"
    impl = getattr(config, "_attn_implementation", None)
    if impl not in (None, "sdpa", PACKED_ATTENTION):
        return f"attention implementation {impl!r} (packing replaces sdpa only)"
    if isinstance(model, nn.Module) and not getattr(model, "_supports_attention_backend", False):
        return "its attention does not take the packed rows' boundaries"
    return ""


def _right_padded(mask) -> bool:
    return bool(mask[:, 0].all()) and bool((mask[:, 1:] <= mask[:, :-1]).all())


def train_without_padding(model: nn.Module, max_length: int | None = None) -> bool:
    """Pack right-padded batches before the decoder and unpack its output (see the module docstring).

    Applies only to a decoder using SDPA with plain causal attention (see
    `packing_unsafe_reason`), called with `input_ids` and a 2-D right-padding
    mask, no cache and no explicit position ids; anything else passes through
    untouched. Returns whether the decoder was hooked.
    """
    from .attention_swap import swap_sdpa

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if packing_unsafe_reason(base, max_length):
        return False
    decoder = getattr(base, "base_model", None)  # the backbone under the LM head (model, transformer, ...)
    if not isinstance(decoder, nn.Module) or decoder is base:
        return False
    if not swap_sdpa(model, PACKED_ATTENTION, packed_causal_attention, _mask_unless_packed):
        return False
    # The layout of the batch inside the decoder now, for unpack (one call at a time: the hooks
    # belong to this training's own model).
    pending: dict = {}

    def pack(module, args, kwargs):
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if (args or ids is None or mask is None or mask.dim() != 2 or kwargs.get("past_key_values") is not None
                or kwargs.get("position_ids") is not None or kwargs.get("use_cache") or not _right_padded(mask)):
            pending.clear()
            return None
        keep = mask.bool()
        lengths = keep.sum(1)
        bounds = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)[keep][None]
        pending["layout"] = (keep, *ids.shape)
        return (), {**kwargs, "input_ids": ids[keep][None], "attention_mask": None, "position_ids": positions,
                    "cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds,
                    "max_length_q": int(lengths.max()), "max_length_k": int(lengths.max())}

    def unpack(module, args, kwargs, output):
        layout = pending.pop("layout", None)
        if layout is None:
            return None
        keep, batch, length = layout
        hidden = output.last_hidden_state
        full = hidden.new_zeros((batch, length, hidden.shape[-1]))
        full[keep] = hidden[0]
        output.last_hidden_state = full
        return output

    decoder.register_forward_pre_hook(pack, with_kwargs=True)
    decoder.register_forward_hook(unpack, with_kwargs=True)
    return True
