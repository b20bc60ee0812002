"""evaluation.metrics on hand-made cases whose values are worked out in comments."""
from __future__ import annotations

import pytest

from evaluation.metrics import (
    classification_metrics,
    exact_match,
    extract_label,
    normalize_text,
    rouge_per_example,
)
from evaluation.scoring import score

LABELS = ["joy", "sadness", "anger"]


def test_normalize_text():
    assert normalize_text("  Hello,\tWORLD!!  ") == "hello world"
    assert normalize_text("“Quoted” — text…") == "quoted text"
    assert normalize_text(None) == ""
    assert normalize_text("") == ""


def test_exact_match_normalises_and_never_credits_empty():
    assert exact_match("The answer: Paris.", "the answer paris") == 1.0
    assert exact_match("Paris", "London") == 0.0
    assert exact_match("", "") == 0.0
    assert exact_match(None, "x") == 0.0


def test_rouge_identical_and_disjoint():
    got = rouge_per_example(["the cat sat on the mat", "alpha beta"], ["the cat sat on the mat", "gamma delta"])
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert got[key] == [1.0, 0.0]


def test_rouge_partial_overlap_by_hand():
    # pred "a b c d" vs ref "a b e f": unigrams 2/4 each side -> F 0.5;
    # bigrams {ab,bc,cd} vs {ab,be,ef}: 1/3 each side -> F 1/3; LCS "a b" -> 0.5.
    got = rouge_per_example(["a b c d"], ["a b e f"])
    assert got["rouge1"] == pytest.approx([0.5])
    assert got["rouge2"] == pytest.approx([1 / 3])
    assert got["rougeL"] == pytest.approx([0.5])


def test_rouge_stems_and_lsum_splits_on_newlines():
    # Porter stemming: cats->cat, running/runs->run, so these match fully.
    assert rouge_per_example(["cats running"], ["cat runs"])["rougeL"] == [1.0]
    # Sentences swapped: plain LCS over the whole text is 2 of 4 tokens, but
    # Lsum matches sentence by sentence (split on "\n") and finds all 4.
    got = rouge_per_example(["a b\nc d"], ["c d\na b"])
    assert got["rougeL"] == pytest.approx([0.5])
    assert got["rougeLsum"] == pytest.approx([1.0])


@pytest.mark.parametrize("pred", ["", "   \n ", None])
def test_rouge_empty_prediction_is_zero(pred):
    got = rouge_per_example([pred], ["some reference"])
    assert got == {"rouge1": [0.0], "rouge2": [0.0], "rougeL": [0.0], "rougeLsum": [0.0]}


def test_rouge_length_mismatch():
    with pytest.raises(ValueError, match=r"predictions \(1\) and references \(2\)"):
        rouge_per_example(["a"], ["a", "b"])


def test_extract_label_first_occurrence_wins():
    assert extract_label("Anger first, then joy", LABELS) == "anger"
    assert extract_label("JOY, not anger", LABELS) == "joy"


def test_extract_label_whole_word_only():
    assert extract_label("enjoyable sadnesses", LABELS) is None
    assert extract_label("overjoyed but sad", ["joy", "sad"]) == "sad"
    assert extract_label("label: joy.", LABELS) == "joy"


def test_extract_label_tie_goes_to_longer_label():
    assert extract_label("Very good service", ["very", "very good", "good"]) == "very good"
    # Order in the label list does not matter for the tie-break.
    assert extract_label("Very good service", ["very good", "very"]) == "very good"


def test_extract_label_returns_label_spelling_and_none():
    assert extract_label("it is SADNESS", ["Sadness"]) == "Sadness"
    assert extract_label("", LABELS) is None
    assert extract_label(None, LABELS) is None
    assert extract_label("nothing here", LABELS) is None


def test_classification_metrics_confusion_counts():
    predicted = ["joy", "joy", None, "anger", "sadness"]
    references = ["joy", "sadness", "sadness", "anger", "Sadness"]
    got = classification_metrics(predicted, references, LABELS)
    assert got["labels"] == LABELS
    assert got["columns"] == LABELS + ["none"]
    assert got["confusion"] == [
        [1, 0, 0, 0],  # joy: 1 right
        [1, 1, 0, 1],  # sadness: once joy, once right (case-insensitive), once nothing
        [0, 0, 1, 0],  # anger: 1 right
    ]
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["per_label"] == pytest.approx({"joy": 1.0, "sadness": 1 / 3, "anger": 1.0})
    assert got["support"] == {"joy": 1, "sadness": 3, "anger": 1}


def test_classification_metrics_unknown_reference_gets_a_row():
    got = classification_metrics(["joy", "joy"], ["joy", "fear"], ["joy"])
    assert got["labels"] == ["joy", "fear"]
    assert got["confusion"] == [[1, 0, 0], [1, 0, 0]]
    assert got["per_label"] == {"joy": 1.0, "fear": 0.0}


def test_score_generation():
    per_example, agg = score("generation", ["a b c d", "", "Same text."], ["a b e f", "x", "same text"])
    assert per_example == pytest.approx([0.5, 0.0, 1.0])
    assert set(agg) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match"}
    assert agg["rougeL"] == pytest.approx(0.5)
    assert agg["exact_match"] == pytest.approx(1 / 3)


def test_score_classification():
    outputs = ["The emotion is joy.", "anger", "", "joy"]
    refs = ["joy", "sadness", "sadness", "joy"]
    per_example, agg = score("classification", outputs, refs, LABELS)
    assert per_example == [1.0, 0.0, 0.0, 1.0]
    assert agg["accuracy"] == pytest.approx(0.5) == sum(per_example) / 4
    assert agg["exact_match"] == pytest.approx(0.25)  # only the bare "joy"
    assert agg["accuracy/joy"] == 1.0 and agg["accuracy/sadness"] == 0.0
    assert "accuracy/anger" not in agg  # no reference rows: recall undefined


def test_score_classification_defaults_labels_to_references():
    per_example, agg = score("classification", ["b!", "a"], ["a", "b"])
    assert per_example == [0.0, 0.0]
    assert set(agg) == {"accuracy", "exact_match", "accuracy/a", "accuracy/b"}


def test_score_errors():
    with pytest.raises(ValueError, match="empty"):
        score("generation", [], [])
    with pytest.raises(ValueError, match=r"\(2\).*\(1\)"):
        score("generation", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown task"):
        score("translation", ["a"], ["a"])
