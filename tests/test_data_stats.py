"""Token statistics and the training view, checked against TRL's own tokenisation."""
from __future__ import annotations

import copy

import pytest

from finetune_core.data.stats import (
    FALLBACK_NOTE, ensure_chat_template, render_training_view, token_lengths, token_stats, training_tokens,
)


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


ROWS = [
    {"prompt": [U("Name a colour.")], "completion": [A("Blue.")]},
    {"prompt": [{"role": "system", "content": "Be brief."}, U("Hi"), A("Hello!"), U("Bye")], "completion": [A("Goodbye!")]},
    {"prompt": [U("Classify: I won!")], "completion": [A("joy")], "label": "joy"},
    {"prompt": [U("Count.")], "completion": [A("one two three four five six seven eight nine ten")]},
]


def trl_prepared(tokenizer, tmp_path, rows, max_length=None):
    """Let TRL 1.16's SFTTrainer tokenise the rows and return (input_ids, labels) per row."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from conftest import build_tiny_model

    args = SFTConfig(output_dir=str(tmp_path), max_length=max_length, use_cpu=True, bf16=False,
                     report_to="none", disable_tqdm=True, per_device_train_batch_size=1)
    trainer = SFTTrainer(model=build_tiny_model(tokenizer), args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows))
    ds = trainer.train_dataset
    return [(list(ids), list(labels)) for ids, labels in zip(ds["input_ids"], ds["labels"])]


def test_training_mask_matches_trl(tokenizer, tmp_path):
    rows = [{k: v for k, v in r.items() if k != "label"} for r in ROWS]
    for row, (ids, labels) in zip(rows, trl_prepared(tokenizer, tmp_path, rows)):
        mine_ids, mask = training_tokens(row, tokenizer)
        assert mine_ids == ids
        assert mask == [int(label != -100) for label in labels]


def test_text_rows_match_trl(tokenizer, tmp_path):
    rows = [{"text": "Once upon a time."}, {"text": "The end."}]
    for row, (ids, labels) in zip(rows, trl_prepared(tokenizer, tmp_path, rows)):
        mine_ids, mask = training_tokens(row, tokenizer)
        assert mine_ids == ids and mask == [1] * len(ids) and labels == ids
        assert mine_ids[-1] == tokenizer.eos_token_id


def test_render_training_view_marks_exactly_the_completion(tokenizer):
    spans = render_training_view(ROWS[1], tokenizer)
    assert [trained for _, trained in spans] == [False, True]
    assert spans[1][0] == "Goodbye!<|im_end|>\n"
    assert spans[0][0].endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    assert spans[0][0].startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    ids, _ = training_tokens(ROWS[1], tokenizer)
    assert "".join(t for t, _ in spans) == tokenizer.decode(ids, skip_special_tokens=False)


def test_render_training_view_truncates_like_trl(tokenizer):
    ids, mask = training_tokens(ROWS[3], tokenizer)
    cut = mask.index(1) + 2
    spans = render_training_view(ROWS[3], tokenizer, max_length=cut)
    assert spans[0][1] is False and spans[1][1] is True
    assert tokenizer(spans[1][0], add_special_tokens=False)["input_ids"] == ids[cut - 2:cut]


def test_batched_lengths_equal_trl_path(tokenizer):
    rows = ROWS + [{"text": "Plain text row."}]
    expected = []
    for row in rows:
        _, mask = training_tokens(row, tokenizer)
        expected.append((mask.count(0), mask.count(1)))
    assert token_lengths(rows, tokenizer) == expected


def test_token_stats_counts_rows_over_max_length(tokenizer):
    rows = [{"prompt": [U("Say words.")], "completion": [A("word " * k)]} for k in (1, 10, 30, 60)]
    totals = sorted(len(training_tokens(r, tokenizer)[0]) for r in rows)
    assert len(set(totals)) == 4  # distinct lengths make the threshold exact
    stats = token_stats(rows, tokenizer, max_length=totals[1])
    assert stats["over_max_length"] == 2
    assert stats["rows_measured"] == 4
    assert sorted(stats["lengths"]["total"]) == totals
    assert stats["total"]["min"] == totals[0] and stats["total"]["max"] == totals[3]
    assert stats["chat_template_note"] is None
    assert token_stats(rows, tokenizer, max_length=totals[3])["over_max_length"] == 0
    prompt_only = token_stats(rows, tokenizer, max_length=min(stats["lengths"]["prompt"]))
    assert prompt_only["completion_lost"] == 4 and prompt_only["completion_lost_at"] == [0, 1, 2, 3]
    assert stats["cut_at"] == [2, 3]  # positions in `rows`, for messages that name the rows


def test_token_stats_samples_large_inputs(tokenizer):
    rows = [ROWS[0]] * 10
    stats = token_stats(rows, tokenizer, max_length=512, max_rows=4)
    assert stats["rows_measured"] == 4  # every third row: 0, 3, 6, 9


def test_fallback_chat_template(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    assert ensure_chat_template(bare) == FALLBACK_NOTE
    assert ensure_chat_template(bare) is None  # applied once, then it is the template
    text = bare.apply_chat_template([U("Hi"), A("Yo")], tokenize=False)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"
    spans = render_training_view(ROWS[0], bare)
    assert spans == [("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n", False),
                     ("Blue.<|im_end|>\n", True)]
    assert ensure_chat_template(tokenizer) is None


@pytest.mark.parametrize("row", ROWS)
def test_spans_cover_every_token(tokenizer, row):
    ids, mask = training_tokens(row, tokenizer)
    spans = render_training_view(row, tokenizer)
    trained = "".join(t for t, on in spans if on)
    assert tokenizer(trained, add_special_tokens=False)["input_ids"] == [i for i, m in zip(ids, mask) if m]
