"""BLEU as an `evaluate` metric module shipped with the studio (loaded offline).

sacreBLEU with its defaults (13a tokenizer, exp smoothing, n-grams up to 4),
on a 0-1 scale like every other studio score (sacreBLEU prints 0-100). The
corpus score is sacreBLEU's: n-gram statistics summed over rows, every
reference of a row used (multi-reference). Output: {"bleu": corpus score,
"per_row": {"bleu": [each row's sentence BLEU, with effective order as
sacreBLEU advises for one sentence]}, "row_stats": {"bleu": [each row's
statistics]}}. The corpus score is not the mean of the per-row scores, so the
interval on a base-vs-tuned difference resamples the rows' statistics and
recomputes the corpus score (`score_from_stats`), as sacreBLEU's own paired
bootstrap does.

    >>> import evaluate                                                          # doctest: +SKIP
    >>> evaluate.load("evaluation/metric_modules/bleu").compute(                 # doctest: +SKIP
    ...     predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["bleu"]
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


class Bleu(evaluate.Metric):
    """sacreBLEU's corpus bleu (0..1), each row's own score and each row's statistics."""

    def _info(self):
        return evaluate.MetricInfo(
            description="BLEU by sacreBLEU (13a tokenizer, exp smoothing), 0-1 scale; several references per row.",
            citation=("Papineni et al. (2002). BLEU: a Method for Automatic Evaluation of Machine Translation. "
                      "Post (2018). A Call for Clarity in Reporting BLEU Scores."),
            inputs_description="predictions: list of str; references: list of str, or list of lists of str.",
            features=_FEATURES,
        )

    def _compute(self, predictions, references):
        corpus, per_row, stats = sacrebleu_rows("bleu", list(predictions), list(references))
        return {"bleu": corpus, "per_row": {"bleu": per_row}, "row_stats": {"bleu": stats.tolist()}}

    def score_from_stats(self, key, totals):
        """The corpus score (0..1) from row statistics summed over any set of rows (a bootstrap resample)."""
        return sacrebleu_from_stats("bleu", totals)
