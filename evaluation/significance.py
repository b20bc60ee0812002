"""Is a base-vs-tuned difference real? Paired intervals for every delta the studio shows.

Every comparison here is paired: the same rows (held-out examples, benchmark
items, judged prompts, voted prompts) are scored for both sides, so the
question is about the per-row differences, not about two independent means.

- `paired_bootstrap(base, tuned)`: the mean of tuned - base with a 95%
  percentile-bootstrap interval (rows resampled with replacement, both sides
  together). Used for ROUGE and any other per-row score.
- `paired_exact(base_correct, tuned_correct)`: accuracy-like 0/1 scores. The
  interval is the same bootstrap; the p-value is the exact McNemar test (a
  two-sided binomial test on the rows where exactly one side is right), which
  stays honest on few rows where a bootstrap interval can collapse to a point.
- `outcome_interval(outcomes)`: judge verdicts and blind votes as +1 (tuned
  better), 0 (tie), -1 (base better); the estimate is the net win rate, and
  zero means no preference.

`describe(interval)` is the sentence the Evaluate tab, the CLI and the report
print, e.g. "not distinguishable from no change on 45 rows".

    >>> iv = paired_bootstrap([0, 0, 1, 0], [1, 1, 1, 0], seed=0)
    >>> iv.estimate, iv.n
    (0.5, 4)
    >>> paired_exact([0] * 10, [1] * 10).significant
    True
    >>> describe(paired_exact([0, 1, 0], [1, 1, 0]))
    'not distinguishable from no change on 3 rows (+0.333, 95% CI +0.000 to +1.000)'

Seeded (seed 0 unless given): the same scores always give the same interval.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


@dataclass(frozen=True)
class Interval:
    """A paired difference (tuned - base, or a net win rate) with its interval."""

    estimate: float
    low: float
    high: float
    n: int
    method: str  # "paired bootstrap", "paired bootstrap + exact McNemar", ...
    p_value: float | None = None
    confidence: float = CONFIDENCE

    @property
    def includes_zero(self) -> bool:
        """True when zero (no change) lies within the interval, ends included."""
        return self.low <= 0.0 <= self.high

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero (and, with an exact test, p < 0.05 too)."""
        if self.n == 0 or self.includes_zero:
            return False
        return self.p_value is None or self.p_value < 1 - self.confidence

    def to_dict(self) -> dict:
        """The fields as JSON-ready values, plus "significant" (what results files and --json carry)."""
        return asdict(self) | {"significant": self.significant}

    @classmethod
    def from_dict(cls, data: dict) -> "Interval":
        """An Interval back from `to_dict`'s output ("significant" is recomputed, not read)."""
        keys = ("estimate", "low", "high", "n", "method", "p_value", "confidence")
        return cls(**{k: data[k] for k in keys if k in data})


def bootstrap_mean(values, resamples: int = RESAMPLES, seed: int = 0,
                   confidence: float = CONFIDENCE, method: str = "bootstrap") -> Interval:
    """The mean of `values` with a percentile-bootstrap interval."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return Interval(0.0, 0.0, 0.0, 0, method, None, confidence)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    # chunks keep memory flat on long evaluations (resamples x rows floats at once otherwise)
    chunk = max(1, 2_000_000 // x.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    return percentile_interval(means, float(x.mean()), int(x.size), method, confidence)


def percentile_interval(samples, estimate: float, n: int, method: str,
                        confidence: float = CONFIDENCE) -> Interval:
    """The percentile interval of resampled estimates around `estimate` (of `n` paired rows).
    Non-finite samples (a resample with nothing scorable) say nothing and are left out; with none
    left the interval is the estimate itself. A resampled statistic can differ from the estimate by
    float rounding: the bounds are kept so that low <= estimate <= high."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail]) if samples.size else (estimate, estimate)
    return Interval(estimate, float(min(low, estimate)), float(max(high, estimate)), n, method, None, confidence)


def _paired(base, tuned) -> np.ndarray:
    b, t = np.asarray(list(base), dtype=float), np.asarray(list(tuned), dtype=float)
    if b.shape != t.shape:
        raise ValueError(f"paired scores need the same rows on both sides (base {b.size}, tuned {t.size})")
    return t - b


def paired_bootstrap(base, tuned, resamples: int = RESAMPLES, seed: int = 0,
                     confidence: float = CONFIDENCE) -> Interval:
    """Mean of tuned - base over the same rows, with a paired bootstrap interval."""
    return bootstrap_mean(_paired(base, tuned), resamples, seed, confidence, "paired bootstrap")


def mcnemar_exact(base_correct, tuned_correct) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 scores (1.0 when no row differs).

    >>> round(mcnemar_exact([0] * 6, [1] * 6), 4)
    0.0312
    """
    diff = _paired([bool(v) for v in base_correct], [bool(v) for v in tuned_correct])
    return sign_test(int((diff > 0).sum()), int((diff < 0).sum()))


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact binomial (sign) test of gained vs lost at p = 1/2 (1.0 when both are 0)."""
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def paired_exact(base_correct, tuned_correct, resamples: int = RESAMPLES, seed: int = 0,
                 confidence: float = CONFIDENCE) -> Interval:
    """Accuracy delta with a paired bootstrap interval and the exact McNemar p-value."""
    iv = paired_bootstrap(base_correct, tuned_correct, resamples, seed, confidence)
    return Interval(iv.estimate, iv.low, iv.high, iv.n, "paired bootstrap + exact McNemar",
                    mcnemar_exact(base_correct, tuned_correct), confidence)


def is_binary(values) -> bool:
    """True when every score is 0 or 1 (accuracy-like): `paired_delta` then adds the exact test."""
    return all(v in (0, 1, 0.0, 1.0, True, False) for v in values)


def paired_delta(base, tuned, seed: int = 0) -> Interval:
    """The right interval for these scores: exact McNemar for 0/1 scores, bootstrap otherwise."""
    base, tuned = list(base), list(tuned)
    if is_binary(base) and is_binary(tuned):
        return paired_exact(base, tuned, seed=seed)
    return paired_bootstrap(base, tuned, seed=seed)


def outcome_interval(outcomes, seed: int = 0) -> Interval:
    """Net win rate of +1 / 0 / -1 outcomes (judge verdicts, blind votes) with its interval.

    The exact test is the sign test on the non-tied outcomes (McNemar with the ties left out).
    """
    values = [float(o) for o in outcomes]
    if any(v not in (-1.0, 0.0, 1.0) for v in values):
        raise ValueError("outcomes must be +1 (tuned better), 0 (tie) or -1 (base better)")
    iv = bootstrap_mean(values, seed=seed, method="bootstrap + exact sign test")
    wins, losses = values.count(1.0), values.count(-1.0)
    return Interval(iv.estimate, iv.low, iv.high, iv.n, iv.method, sign_test(wins, losses), iv.confidence)


def ci_text(interval: dict | None, missing: str = "—") -> str:
    """A saved interval's bounds (``Interval.to_dict()``) as "-0.040 to +0.080", or `missing` without one.

    >>> ci_text({"low": -0.04, "high": 0.08}), ci_text(None, "n/a")
    ('-0.040 to +0.080', 'n/a')
    """
    if not isinstance(interval, dict) or interval.get("low") is None or interval.get("high") is None:
        return missing
    return f"{interval['low']:+.3f} to {interval['high']:+.3f}"


def describe(iv: Interval, unit: str = "rows", higher_is_better: bool = True) -> str:
    """The plain sentence for an interval: whether the change is distinguishable from none.

    >>> describe(Interval(0.2, 0.1, 0.3, 45, "paired bootstrap"))
    'better on 45 rows (+0.200, 95% CI +0.100 to +0.300)'
    >>> describe(Interval(1.0, 1.0, 1.0, 1, "bootstrap + exact sign test", 1.0), "votes")
    'not distinguishable from no change on 1 vote (+1.000, 95% CI +1.000 to +1.000; exact test p = 1.000)'
    """
    numbers = f"{iv.estimate:+.3f}, {round(iv.confidence * 100)}% CI {iv.low:+.3f} to {iv.high:+.3f}"
    if iv.n == 0:
        return f"no {unit} to compare"
    if iv.n == 1 and unit.endswith("s"):  # "1 vote", "1 row", "1 item", "1 prompt"
        unit = unit[:-1]
    if not iv.significant:
        if not iv.includes_zero:
            # The exact test overrules a bootstrap interval that collapsed on few rows: say so, or the
            # sentence would contradict its own numbers.
            numbers += f"; exact test p = {iv.p_value:.3f}"
        return f"not distinguishable from no change on {iv.n} {unit} ({numbers})"
    word = "better" if (iv.estimate > 0) == higher_is_better else "worse"
    return f"{word} on {iv.n} {unit} ({numbers})"
