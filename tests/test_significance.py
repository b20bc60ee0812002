"""evaluation.significance: the intervals and sentences every base-vs-tuned delta is shown with.

The exact p-values are worked out by hand in the comments (two-sided binomial at 1/2 on the rows
where exactly one side is right).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.significance import (
    Interval,
    describe,
    mcnemar_exact,
    outcome_interval,
    paired_bootstrap,
    paired_delta,
    paired_exact,
    sign_test,
)


def _noisy_pair(rng, n=40):
    base = rng.uniform(0, 1, n)
    return base, np.clip(base + rng.normal(0.05, 0.2, n), 0, 1)


def test_the_interval_contains_the_estimate():
    rng = np.random.default_rng(1)
    for _ in range(20):
        base, tuned = _noisy_pair(rng, n=int(rng.integers(1, 60)))
        iv = paired_bootstrap(base, tuned)
        assert iv.low <= iv.estimate <= iv.high
        assert iv.estimate == pytest.approx(float(np.mean(tuned - base)))
        hits_b, hits_t = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
        exact = paired_exact(hits_b, hits_t)
        assert exact.low <= exact.estimate <= exact.high
        votes = outcome_interval(rng.integers(-1, 2, 25))
        assert votes.low <= votes.estimate <= votes.high


def test_seeded_and_reproducible():
    base, tuned = _noisy_pair(np.random.default_rng(2))
    first, again = paired_bootstrap(base, tuned), paired_bootstrap(base, tuned, seed=0)
    assert first == again  # seed 0 unless given: the same scores always give the same interval
    other = paired_bootstrap(base, tuned, seed=7)
    assert other.estimate == first.estimate and (other.low, other.high) != (first.low, first.high)
    assert paired_bootstrap(list(base), list(tuned), seed=7) == other  # lists or arrays alike


def test_more_rows_give_a_narrower_interval():
    rng = np.random.default_rng(3)
    small = paired_bootstrap(*_noisy_pair(rng, n=20))
    large = paired_bootstrap(*_noisy_pair(rng, n=2000))
    assert large.high - large.low < (small.high - small.low) / 4


def test_the_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(4)
    trials, covered = 150, 0
    for _ in range(trials):
        deltas = rng.normal(0.1, 0.3, 60)  # the true mean delta is 0.1
        iv = paired_bootstrap(np.zeros(60), deltas, resamples=1000, seed=int(rng.integers(1 << 30)))
        covered += iv.low <= 0.1 <= iv.high
    assert 0.85 <= covered / trials <= 0.99


def test_no_change_gives_a_zero_width_interval_at_zero_that_reads_not_distinguishable():
    for scores in ([0.3, 0.5, 0.9, 0.1, 0.4], [1, 0, 1, 1, 0]):
        iv = paired_delta(scores, scores)
        assert (iv.estimate, iv.low, iv.high, iv.n) == (0.0, 0.0, 0.0, 5)
        assert iv.includes_zero and not iv.significant
        assert describe(iv) == "not distinguishable from no change on 5 rows (+0.000, 95% CI +0.000 to +0.000)"


@pytest.mark.parametrize("gained, lost, expected", [
    (6, 0, 2 / 64),  # 2 * P(X <= 0), X ~ Bin(6, 1/2)
    (5, 1, 2 * 7 / 64),  # 2 * (C(6,0) + C(6,1)) / 2^6
    (2, 8, 2 * 56 / 1024),  # 2 * (1 + 10 + 45) / 2^10
    (10, 0, 2 / 1024),
    (3, 3, 1.0),  # 2 * 42/64 > 1: capped
    (0, 0, 1.0),  # no row differs
])
def test_exact_mcnemar_p_values_by_hand(gained, lost, expected):
    # rows where both sides agree (right or wrong) do not count, whatever their number
    base = [0] * gained + [1] * lost + [1] * 5 + [0] * 4
    tuned = [1] * gained + [0] * lost + [1] * 5 + [0] * 4
    assert mcnemar_exact(base, tuned) == pytest.approx(expected)
    assert sign_test(gained, lost) == pytest.approx(expected)
    iv = paired_exact(base, tuned)
    assert iv.p_value == pytest.approx(expected) and iv.n == len(base)
    assert iv.estimate == pytest.approx((gained - lost) / len(base))


def test_paired_delta_takes_the_exact_test_only_for_0_1_scores():
    exact = paired_delta([0, 1, 0, 0], [1, 1, 1, 0])
    assert exact.method == "paired bootstrap + exact McNemar" and exact.p_value == pytest.approx(0.5)
    boot = paired_delta([0.2, 0.5, 0.1], [0.4, 0.5, 0.3])
    assert boot.method == "paired bootstrap" and boot.p_value is None
    assert paired_delta([True, False], [True, True]).p_value == pytest.approx(1.0)


def test_the_exact_test_overrules_a_collapsed_interval_and_the_sentence_says_so():
    # 3 rows, all gained: every resample is all gains, so the interval is [1, 1]; the exact test
    # says 3 of 3 happens by chance with p = 2/8 = 0.25.
    iv = paired_delta([0, 0, 0], [1, 1, 1])
    assert (iv.low, iv.high) == (1.0, 1.0) and iv.p_value == pytest.approx(0.25) and not iv.significant
    assert describe(iv) == ("not distinguishable from no change on 3 rows "
                            "(+1.000, 95% CI +1.000 to +1.000; exact test p = 0.250)")
    many = paired_delta([0] * 12, [1] * 12)  # p = 2 / 4096
    assert many.significant and describe(many).startswith("better on 12 rows")


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap([0.1, 0.2], [0.3])
    with pytest.raises(ValueError, match="same rows"):
        paired_exact([1, 0, 1], [1, 0])


def test_outcome_interval_is_the_net_win_rate_with_the_sign_test():
    iv = outcome_interval([1, 1, 0, -1])
    assert iv.estimate == pytest.approx(0.25) and iv.n == 4
    assert iv.p_value == pytest.approx(1.0)  # 2 wins vs 1 loss: 2 * (1 + 3) / 8 > 1, capped
    sweep = outcome_interval([1] * 9 + [0])  # 9 wins, no loss: p = 2 / 512
    assert sweep.p_value == pytest.approx(2 / 512) and sweep.significant
    assert outcome_interval([]).n == 0 and describe(outcome_interval([]), "prompts") == "no prompts to compare"


@pytest.mark.parametrize("bad", [[1, 2], [0.5], [-2, 0], [float("nan")]])
def test_outcome_interval_refuses_anything_but_minus_one_zero_one(bad):
    with pytest.raises(ValueError, match=r"\+1 \(tuned better\), 0 \(tie\) or -1 \(base better\)"):
        outcome_interval(bad)


@pytest.mark.parametrize("estimate, low, high, higher_is_better, word", [
    (0.2, 0.1, 0.3, True, "better"),
    (-0.2, -0.3, -0.1, True, "worse"),
    (-0.5, -0.7, -0.2, False, "better"),  # a loss that went down
    (0.5, 0.2, 0.7, False, "worse"),
])
def test_describe_says_better_or_worse_by_the_metric_direction(estimate, low, high, higher_is_better, word):
    iv = Interval(estimate, low, high, 45, "paired bootstrap")
    text = describe(iv, "items", higher_is_better)
    assert text == f"{word} on 45 items ({estimate:+.3f}, 95% CI {low:+.3f} to {high:+.3f})"


def test_describe_not_distinguishable_whichever_way_the_metric_points():
    iv = Interval(-0.02, -0.08, 0.04, 45, "paired bootstrap")
    for direction in (True, False):
        assert describe(iv, "rows", direction) == (
            "not distinguishable from no change on 45 rows (-0.020, 95% CI -0.080 to +0.040)")


def test_interval_json_round_trip():
    iv = paired_exact([0, 0, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0])
    data = json.loads(json.dumps(iv.to_dict()))
    assert set(data) == {"estimate", "low", "high", "n", "method", "p_value", "confidence", "significant"}
    assert data["significant"] is iv.significant
    assert Interval.from_dict(data) == iv
