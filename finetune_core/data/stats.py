"""Token statistics and the "what will the model learn" view of normalised rows.

Tokenisation follows TRL 1.16's SFTTrainer for prompt/completion
conversational rows exactly: the prompt is rendered with the chat template and
``add_generation_prompt=True``, prompt + completion without it, and the
completion mask starts where the two token lists first differ
(``trl.data_utils.common_prefix_length``). Language-modelling rows are
tokenised plainly with EOS appended and every token is trained. TRL 1.16's
DPOTrainer tokenises a pair the same way, once with each answer: a pair's
"completion" length is its longer answer (the one a max length cuts first),
and ``token_stats`` adds the chosen and rejected lengths apart.

    python -m finetune_core inspect sample_data/fact_cards.jsonl --model bundled
"""
from __future__ import annotations

import statistics

ROW_EXAMPLES = 10  # rows named per count (too long, prompt alone too long): enough to find them
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
FALLBACK_NOTE = (
    "The tokenizer has no chat template; using the ChatML fallback "
    "'<|im_start|>{role}\\n{content}<|im_end|>\\n' for training, preview and chat."
)


def ensure_chat_template(tokenizer) -> str | None:
    """Give a template-less tokenizer the ChatML fallback; return a note when it did."""
    if getattr(tokenizer, "chat_template", None):
        return None
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return FALLBACK_NOTE


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading token ids `a` and `b` share (where the completion mask starts)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"])


def _lm_text(text: str, tokenizer) -> str:
    eos = tokenizer.eos_token or ""
    return text if text.endswith(eos) else text + eos  # TRL's add_eos for text rows


def training_tokens(row: dict, tokenizer, max_length: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids and the 0/1 completion mask TRL would build for ``row``
    (truncated from the end to ``max_length`` like TRL's keep_start)."""
    if "prompt" in row:
        ensure_chat_template(tokenizer)
        prompt_ids = _chat_ids(tokenizer, row["prompt"], add_generation_prompt=True)
        ids = _chat_ids(tokenizer, row["prompt"] + row["completion"])
        n = common_prefix_length(prompt_ids, ids)
        mask = [0] * n + [1] * (len(ids) - n)
    else:
        ids = list(tokenizer(_lm_text(row["text"], tokenizer))["input_ids"])
        mask = [1] * len(ids)
    if max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


def render_training_view(row: dict, tokenizer, max_length: int | None = None) -> list[tuple[str, bool]]:
    """The row as the model sees it: (text, trained) spans, trained = completion tokens."""
    ids, mask = training_tokens(row, tokenizer, max_length)
    spans: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False)
            spans.append((text, bool(mask[start])))
            start = i
    return spans


def token_lengths(rows: list[dict], tokenizer) -> list[tuple[int, int]]:
    """(masked prompt tokens, trained tokens) per row.

    Renders the templates to text and tokenises in one batch: the same ids as
    ``apply_chat_template(tokenize=True)`` (which encodes the rendered text
    without special tokens), at a fraction of the time on large files.
    """
    return [(prompt, max(answers)) for prompt, answers in answer_lengths(rows, tokenizer)]


def _answers(row: dict) -> list[list[dict]]:
    return [row["chosen"], row["rejected"]] if "chosen" in row else [row["completion"]]


def answer_lengths(rows: list[dict], tokenizer) -> list[tuple[int, list[int]]]:
    """(masked prompt tokens, [trained tokens per answer]) per row: one answer for SFT, thumbs
    and text rows, two (chosen, rejected) for a preference pair."""
    ensure_chat_template(tokenizer)
    conv = [r for r in rows if "prompt" in r]
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in conv]
    fulls = [tokenizer.apply_chat_template(r["prompt"] + answer, tokenize=False) for r in conv for answer in _answers(r)]
    texts = [_lm_text(r["text"], tokenizer) for r in rows if "prompt" not in r]
    encoded_p = tokenizer(prompts, add_special_tokens=False)["input_ids"] if conv else []
    full_iter = iter(tokenizer(fulls, add_special_tokens=False)["input_ids"] if conv else [])
    conv_iter = iter(encoded_p)
    text_iter = iter(tokenizer(texts)["input_ids"] if texts else [])
    out = []
    for row in rows:
        if "prompt" not in row:
            out.append((0, [len(next(text_iter))]))
            continue
        p = next(conv_iter)
        full = [next(full_iter) for _ in _answers(row)]
        n = min(common_prefix_length(p, f) for f in full)  # where TRL's DPO starts the answers, too
        out.append((n, [len(f) - n for f in full]))
    return out


def _describe(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "median": 0.0, "p95": 0}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": round(statistics.fmean(ordered), 1),
        "median": float(statistics.median(ordered)),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def token_stats(rows: list[dict], tokenizer, max_length: int = 512, max_rows: int = 5000) -> dict:
    """Length distribution (prompt, completion, total) and truncation counts.

    Files larger than ``max_rows`` are measured on an evenly spaced sample
    (``rows_measured`` says how many), so the Data tab stays responsive.
    """
    note = ensure_chat_template(tokenizer)
    step = max(1, -(-len(rows) // max_rows)) if max_rows else 1
    sample = rows[::step]
    measured = answer_lengths(sample, tokenizer)
    pairs = [(p, max(answers)) for p, answers in measured]
    prompt = [p for p, _ in pairs]
    completion = [c for _, c in pairs]
    total = [p + c for p, c in pairs]
    # The prompt alone fills max_length: truncation leaves nothing to learn.
    lost = [i * step for i, p in enumerate(prompt) if p and p >= max_length]
    cut = [i * step for i, (p, t) in enumerate(zip(prompt, total)) if t > max_length and p < max_length]
    out = {
        "rows_measured": len(sample),
        "max_length": max_length,
        "over_max_length": sum(t > max_length for t in total),
        "completion_lost": len(lost),
        # Where they are (positions in ``rows``, the first ROW_EXAMPLES), so a message can name the rows:
        # rows whose answer is cut short, rows whose prompt alone is too long.
        "cut_at": cut[:ROW_EXAMPLES],
        "completion_lost_at": lost[:ROW_EXAMPLES],
        "prompt": _describe(prompt),
        "completion": _describe(completion),
        "total": _describe(total),
        "lengths": {"prompt": prompt, "completion": completion, "total": total},
        "chat_template_note": note,
    }
    if sample and "chosen" in sample[0]:  # pairs: each answer's own length
        out["chosen"] = _describe([answers[0] for _, answers in measured])
        out["rejected"] = _describe([answers[-1] for _, answers in measured])
    return out
