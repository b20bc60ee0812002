"""Exact match as an `evaluate` metric module shipped with the studio (loaded offline).

A row scores 1 when the output equals its reference, or any of its
references, after lowercasing, dropping punctuation and collapsing spaces
(`evaluation.metrics.exact_match`); an empty output never scores. Output:
{"exact_match": mean over rows, "per_row": {"exact_match": [1.0 or 0.0 per row]}}.

    >>> import evaluate                                                          # doctest: +SKIP
    >>> evaluate.load("evaluation/metric_modules/exact_match").compute(          # doctest: +SKIP
    ...     predictions=["Paris."], references=[["London", "paris"]])["exact_match"]
    1.0
"""
import datasets
import evaluate

from evaluation.metrics import exact_match

_FEATURES = [
    datasets.Features({"predictions": datasets.Value("string"),
                       "references": datasets.Sequence(datasets.Value("string"))}),
    datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
]


class ExactMatch(evaluate.Metric):
    """Normalised exact match per row and its mean (0..1); several references per row allowed."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Normalised exact match (case, punctuation and spacing ignored); equal to any reference.",
            citation="",
            inputs_description="predictions: list of str; references: list of str, or list of lists of str.",
            features=_FEATURES,
        )

    def _compute(self, predictions, references):
        per_row = [exact_match(p, r) for p, r in zip(predictions, references)]
        return {"exact_match": sum(per_row) / len(per_row) if per_row else 0.0,
                "per_row": {"exact_match": per_row}}
