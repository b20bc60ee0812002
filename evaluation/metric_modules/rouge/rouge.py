"""ROUGE-1/2/L/Lsum as an `evaluate` metric module shipped with the studio (loaded offline).

    >>> import evaluate                                                     # doctest: +SKIP
    >>> evaluate.load("evaluation/metric_modules/rouge").compute(           # doctest: +SKIP
    ...     predictions=["the cat sat"], references=[["a dog ran", "the cat sat"]])["rougeL"]
    1.0

F-measures with Porter stemming (Google's rouge_score, as evaluate's Hub
"rouge" with use_stemmer=True); a row with several references takes the best
F-measure per key (rouge_score's score_multi). The text scoring is
`evaluation.metrics.rouge_per_example`; this file declares the inputs and
outputs evaluate needs. Output: the four keys as the mean over rows, and
"per_row" with every row's F-measures (the paired bootstrap needs them).
"""
import datasets
import evaluate

from evaluation.metrics import ROUGE_KEYS, rouge_per_example

_FEATURES = [
    datasets.Features({"predictions": datasets.Value("string"),
                       "references": datasets.Sequence(datasets.Value("string"))}),
    datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
]


class Rouge(evaluate.Metric):
    """ROUGE F-measures per row and their means (0..1); several references per row allowed."""

    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1/2/L/Lsum F-measure with Porter stemming; best over a row's references.",
            citation="Lin, C.-Y. (2004). ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: list of str; references: list of str, or list of lists of str.",
            features=_FEATURES,
        )

    def _compute(self, predictions, references):
        per_row = rouge_per_example(list(predictions), list(references))
        means = {key: sum(v) / len(v) if v else 0.0 for key, v in per_row.items()}
        return {**{key: float(means[key]) for key in ROUGE_KEYS}, "per_row": per_row}
