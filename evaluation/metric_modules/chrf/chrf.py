"""chrF as an `evaluate` metric module shipped with the studio (loaded offline).

sacreBLEU's chrF with its defaults (chrF2: character 6-grams, beta 2), on a
0-1 scale like every other studio score (sacreBLEU prints 0-100). The corpus
score is sacreBLEU's: character n-gram statistics summed over rows, every
reference of a row used (multi-reference). Output: {"chrf": corpus score,
"per_row": {"chrf": [each row's own chrF]}, "row_stats": {"chrf": [each row's
statistics]}}. The corpus score is not the mean of the per-row scores, so the
interval on a base-vs-tuned difference resamples the rows' statistics and
recomputes the corpus score (`score_from_stats`), as sacreBLEU's own paired
bootstrap does.

    >>> import evaluate                                                          # doctest: +SKIP
    >>> evaluate.load("evaluation/metric_modules/chrf").compute(                 # doctest: +SKIP
    ...     predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["chrf"]
    1.0
"""
import datasets
import evaluate

from evaluation.metrics import sacrebleu_from_stats, sacrebleu_rows

_FEATURES = [
    datasets.Features({"predictions": datasets.Value("string"),
                       "references": datasets.Sequence(datasets.Value("string"))}),
    datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
]


class Chrf(evaluate.Metric):
    """sacreBLEU's corpus chrf (0..1), each row's own score and each row's statistics."""

    def _info(self):
        return evaluate.MetricInfo(
            description="chrF2 by sacreBLEU (character 6-grams, beta 2), 0-1 scale; several references per row.",
            citation=("Popovic (2015). chrF: character n-gram F-score for automatic MT evaluation. "
                      "Post (2018). A Call for Clarity in Reporting BLEU Scores."),
            inputs_description="predictions: list of str; references: list of str, or list of lists of str.",
            features=_FEATURES,
        )

    def _compute(self, predictions, references):
        corpus, per_row, stats = sacrebleu_rows("chrf", list(predictions), list(references))
        return {"chrf": corpus, "per_row": {"chrf": per_row}, "row_stats": {"chrf": stats.tolist()}}

    def score_from_stats(self, key, totals):
        """The corpus score (0..1) from row statistics summed over any set of rows (a bootstrap resample)."""
        return sacrebleu_from_stats("chrf", totals)
