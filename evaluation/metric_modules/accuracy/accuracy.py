"""Label accuracy as an `evaluate` metric module shipped with the studio (loaded offline).

The label of an output is the first label of the label set found in it as a
whole word (case-insensitive; ties go to the longer label), as
`evaluation.metrics.extract_label` reads it; a row scores 1 when that is its
reference label. `labels` (the run's label set) is passed to compute; without
it the distinct references are the label set. Output:
{"accuracy": mean over rows, "per_row": {"accuracy": [1.0 or 0.0 per row]}}.

    >>> import evaluate                                                          # doctest: +SKIP
    >>> evaluate.load("evaluation/metric_modules/accuracy").compute(             # doctest: +SKIP
    ...     predictions=["It is joy."], references=["joy"], labels=["joy", "anger"])["accuracy"]
    1.0
"""
import datasets
import evaluate

from evaluation.metrics import default_labels, label_hits, reference_list

_FEATURES = [
    datasets.Features({"predictions": datasets.Value("string"),
                       "references": datasets.Sequence(datasets.Value("string"))}),
    datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
]


class Accuracy(evaluate.Metric):
    """Share of rows whose output names the reference label (0..1), with the per-row hits."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Label accuracy: the first label named in the output (whole word) is the reference label.",
            citation="",
            inputs_description="predictions: list of str (model outputs); references: list of str (labels), "
                               "or lists of str; labels (optional): the label set.",
            features=_FEATURES,
        )

    def _compute(self, predictions, references, labels=None):
        references = list(references)
        if not labels:
            labels = default_labels([r for ref in references for r in reference_list(ref)])
        per_row = label_hits(list(predictions), references, list(labels))
        return {"accuracy": sum(per_row) / len(per_row) if per_row else 0.0, "per_row": {"accuracy": per_row}}
