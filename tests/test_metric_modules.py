"""The shipped `evaluate` metric modules (evaluation/metric_modules/) and the metric registry.

Each module is loaded the way the studio loads it, `evaluate.load(<its folder>)`, with every
socket refused: offline must work. Their numbers are checked against the libraries they stand
for (rouge_score, sacreBLEU) and against the hand-worked cases of tests/test_metrics.py.
"""
from __future__ import annotations

import socket

import numpy as np
import pytest

from evaluation import metric_registry
from evaluation.intervals import corpus_bootstrap
from evaluation.metric_registry import (
    MODULES_DIR, SHIPPED, available_metrics, compute_metric, load_metric, metric_names,
)
from finetune_core.errors import InputError


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test's code path loudly."""
    def refuse(*_args, **_kwargs):
        raise OSError("network used in a hermetic test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_module_loads_offline_from_its_folder(name, no_network):
    assert (MODULES_DIR / name / f"{name}.py").is_file()
    module = load_metric(name)
    out = module.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])
    assert out["per_row"] and all(len(rows) == 1 for rows in out["per_row"].values())
    headline = {"rouge": "rougeL"}.get(name, name)
    assert out[headline] == pytest.approx(1.0) and out["per_row"][headline] == pytest.approx([1.0])


def test_available_metrics_name_every_module_with_one_line():
    listed = available_metrics()
    assert sorted(listed) == sorted(p.name for p in MODULES_DIR.iterdir() if (p / f"{p.name}.py").is_file())
    assert all(text and "\n" not in text and len(text) < 120 for text in listed.values())


def test_rouge_module_equals_the_hand_worked_cases():
    # pred "a b c d" vs ref "a b e f": rouge1 F 0.5, rouge2 1/3, rougeL 0.5 (tests/test_metrics.py)
    got = compute_metric("rouge", ["a b c d", "cats running", ""], [["a b e f"], ["cat runs"], ["x"]])
    assert got.per_row["rouge1"] == pytest.approx([0.5, 1.0, 0.0])
    assert got.per_row["rouge2"] == pytest.approx([1 / 3, 1.0, 0.0])
    assert got.scores["rougeL"] == pytest.approx((0.5 + 1.0) / 3)
    assert set(got.scores) == {"rouge1", "rouge2", "rougeL", "rougeLsum"} and not got.stats


def test_rouge_with_several_references_takes_the_best_f_as_score_multi_does():
    from rouge_score import rouge_scorer

    pred = "the doctor sends the patient to a specialist"
    refs = ["a patient has trouble breathing", "the doctor sends him to a lung specialist", "tests for asthma"]
    got = compute_metric("rouge", [pred], [refs])
    expected = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score_multi(refs, pred)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert got.per_row[key] == pytest.approx([expected[key].fmeasure])
    single = compute_metric("rouge", [pred], [refs[:1]])
    assert got.per_row["rougeL"][0] > single.per_row["rougeL"][0]


def test_exact_match_and_accuracy_modules():
    em = compute_metric("exact_match", ["The answer: Paris.", "Paris", ""], [["London", "the answer paris"],
                                                                             ["London"], [""]])
    assert em.per_row["exact_match"] == [1.0, 0.0, 0.0] and em.scores["exact_match"] == pytest.approx(1 / 3)
    acc = compute_metric("accuracy", ["The emotion is joy.", "anger", "", "joy"],
                         [["joy"], ["sadness"], ["sadness"], ["joy"]], labels=["joy", "sadness", "anger"])
    assert acc.per_row["accuracy"] == [1.0, 0.0, 0.0, 1.0] and acc.scores["accuracy"] == 0.5


@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_sacrebleu_modules_equal_sacrebleu_on_a_0_1_scale(name):
    from sacrebleu.metrics import BLEU, CHRF

    preds = ["the cat sat on the mat", "a quick brown fox jumps", "hello there", ""]
    refs = [["the cat sat on a mat", "a cat sat on the mat"], ["the quick brown fox jumped"],
            ["hello there general kenobi"], ["nothing"]]
    got = compute_metric(name, preds, refs)
    lib = BLEU() if name == "bleu" else CHRF()
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(2)]
    assert got.scores[name] == pytest.approx(lib.corpus_score(preds, streams).score / 100)
    sentence = BLEU(effective_order=True) if name == "bleu" else CHRF()
    expected_rows = [sentence.sentence_score(p, r).score / 100 for p, r in zip(preds, refs)]
    assert got.per_row[name] == pytest.approx(expected_rows)
    assert got.per_row[name][-1] == 0.0  # an empty output scores nothing
    # the corpus score is recomputed from the rows' statistics: what the paired bootstrap resamples
    assert got.stats[name].shape[0] == 4
    assert got.from_stats[name](got.stats[name].sum(axis=0)) == pytest.approx(got.scores[name])


def test_corpus_bootstrap_estimate_is_the_corpus_delta():
    preds_b = ["a cat", "the dog ran", "birds fly south", "", "rain today"]
    preds_t = ["the cat sat", "the dog ran home", "birds fly south in winter", "snow", "rain"]
    refs = [["the cat sat"], ["the dog ran home"], ["birds fly south in winter"], ["snow falls"], ["rain today"]]
    base, tuned = compute_metric("bleu", preds_b, refs), compute_metric("bleu", preds_t, refs)
    iv = corpus_bootstrap(base.stats["bleu"], tuned.stats["bleu"], base.from_stats["bleu"], tuned.from_stats["bleu"])
    assert iv.estimate == pytest.approx(tuned.scores["bleu"] - base.scores["bleu"])
    assert iv.low <= iv.estimate <= iv.high and iv.n == 5 and iv.method.startswith("paired bootstrap")
    same = corpus_bootstrap(base.stats["bleu"], base.stats["bleu"], base.from_stats["bleu"], base.from_stats["bleu"])
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_corpus_bootstrap_skips_resamples_with_nothing_to_score():
    from evaluation.heldout_loss import mean_loss

    # (summed NLL, tokens) per row; rows 2-4 were truncated away, so many resamples hold no token
    base = np.array([[5.0, 2], [0, 0], [0, 0], [0, 0]])
    tuned = np.array([[3.0, 2], [0, 0], [0, 0], [0, 0]])
    iv = corpus_bootstrap(base, tuned, mean_loss, mean_loss)
    assert (iv.estimate, iv.low, iv.high) == (-1.0, -1.0, -1.0)
    assert np.isfinite([iv.low, iv.high]).all()


# -- names: what a user may ask for -------------------------------------------------------------

def test_metric_names_parse_check_and_keep_the_defaults_first(monkeypatch):
    monkeypatch.delenv("STUDIO_HUB_METRICS", raising=False)
    assert metric_names("chrf, BLEU ,,chrf") == ["chrf", "bleu"]
    assert metric_names(["bleu", "rouge"], task="generation") == ["rouge", "exact_match", "bleu"]
    assert metric_names(None, task="classification") == ["accuracy", "exact_match"]


@pytest.mark.parametrize("env, needle", [
    ({}, "STUDIO_HUB_METRICS=1"),
    ({"STUDIO_PUBLIC": "1", "STUDIO_HUB_METRICS": "1"}, "STUDIO_PUBLIC=1"),
])
def test_an_unknown_or_hub_name_is_refused_naming_it_and_the_setting(monkeypatch, env, needle):
    for key in ("STUDIO_PUBLIC", "STUDIO_HUB_METRICS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InputError) as err:
        metric_names("chrf,meteor")
    text = str(err.value)
    assert "'meteor'" in text and needle in text
    assert all(name in text for name in SHIPPED)  # the available ones are listed
    assert not metric_registry.hub_metrics_allowed()


@pytest.mark.parametrize("bad", ["../evaluation/metric_modules/rouge", "/etc/passwd", "a/b/c", "tests"])
def test_a_path_is_never_taken_for_a_hub_metric(monkeypatch, bad):
    monkeypatch.setenv("STUDIO_HUB_METRICS", "1")
    monkeypatch.delenv("STUDIO_PUBLIC", raising=False)
    with pytest.raises(InputError, match="Unknown metric"):
        metric_names([bad])


def test_a_hub_metric_loads_only_when_allowed_and_fails_clearly_offline(monkeypatch, no_network):
    monkeypatch.setenv("STUDIO_HUB_METRICS", "1")
    monkeypatch.delenv("STUDIO_PUBLIC", raising=False)
    assert metric_registry.hub_metrics_allowed() and metric_names("meteor") == ["meteor"]
    with pytest.raises(InputError, match="Could not load the metric 'no-such-studio-metric'"):
        load_metric("no-such-studio-metric")


def test_a_hub_metric_s_numbers_and_per_row_lists_become_entries(monkeypatch):
    class FakeHubMetric:
        def compute(self, predictions, references):
            assert references == ["a", "b"]  # one reference per row: plain strings, as most Hub metrics take
            return {"precision": [0.5, 1.0], "f1": np.array([0.2, 0.4]), "hashcode": "x", "fancy": 0.7}

    monkeypatch.setattr(metric_registry, "load_metric", lambda name: FakeHubMetric())
    got = compute_metric("owner/fancy", ["p", "q"], [["a"], ["b"]])
    assert got.scores == pytest.approx({"owner/fancy/precision": 0.75, "owner/fancy/f1": 0.3, "owner/fancy": 0.7})
    assert got.per_row == {"owner/fancy/precision": [0.5, 1.0], "owner/fancy/f1": [0.2, 0.4]}
    assert metric_registry.higher_is_better("wer") is False and metric_registry.higher_is_better("bleu")
