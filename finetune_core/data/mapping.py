"""DataMapping: the one description of which data a run learns from and how it is read.

The file, its format, the column mapping and templates, the system prompt, the
held-out share (a fraction, 0..0.5) or a separate evaluation file, the split
seed and the row caps, and for rows read from the Hugging Face Hub where they
came from (``hub_source``, see finetune_core/data/hub.py). The Data tab builds one from its widgets, `RunConfig`
holds one as ``cfg.data`` (its fields stay flat keys in run.yaml), training
splits with it and evaluation re-reads another file with it.

    >>> m = DataMapping.from_dict({"data_path": "notes.csv", "eval_fraction": "0.2"})
    >>> (m.data_path, m.eval_fraction)
    ('notes.csv', 0.2)
    >>> DataMapping.from_dict({"eval_fracton": 0.2})
    Traceback (most recent call last):
    ...
    ValueError: Unknown data mapping field 'eval_fracton'; the fields are: data_path, ...
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from finetune_core.data.formats import FORMATS
from finetune_core.data.templates import check_template
from finetune_core.fieldmeta import check_values, coerce, setting

DATA_FORMATS = ("auto", *FORMATS)
TEMPLATE_FIELDS = ("prompt_template", "completion_template", "system_prompt")
DEFAULT_SEED = 42


@dataclass
class DataMapping:
    """What the user chose about the data (classification: the prompt column is the
    text column, the completion column the label column; a classification prompt
    template may use ``{labels}`` for the comma-separated label set).

    Building one does not check it (a Data tab shows bad choices as issues);
    ``from_dict`` and ``validate`` do, naming the field.
    """

    data_path: str = setting("", "Training file (set by the Data tab; server-side path).", "data")
    data_format: str = setting("auto", "Data format; 'auto' detects it from the columns.", "data",
                               choices=DATA_FORMATS)
    prompt_column: str = setting("", "Column holding the prompt (custom column files).", "data")
    completion_column: str = setting("", "Column holding the completion / label.", "data")
    prompt_template: str = setting("", "Prompt template with {column} placeholders, e.g. "
                                   "'Summarize:\\n{dialogue}'.", "data")
    completion_template: str = setting("", "Completion template with {column} placeholders, e.g. '{summary}'.",
                                       "data")
    system_prompt: str = setting("", "Optional system message added to every example.", "data")
    eval_fraction: float = setting(0.1, "Share of rows held out for evaluation.", "data", lo=0.0, hi=0.5, step=0.01)
    eval_path: str = setting("", "Separate evaluation file (overrides the held-out share).", "data")
    seed: int = setting(DEFAULT_SEED, "Random seed for the held-out split; training also shuffles and "
                        "initialises with it.", "data", lo=0, hi=2**31 - 1)
    max_train_rows: int = setting(0, "Use at most this many training rows (0 = all).", "data", lo=0, hi=10_000_000)
    max_eval_rows: int = setting(256, "Held-out rows used for the loss during training (0 = all); evaluation "
                                 "uses all.", "data", lo=0, hi=10_000_000)
    drop_bad_rows: bool = setting(True, "Drop rows that fail validation instead of refusing the file.", "data")
    hub_source: str = setting("", "Where the data came from when it was read from the Hugging Face Hub: "
                              "'owner/name?config=C&split=S&rows=N&revision=SHA' (set by the Data tab; the rows "
                              "are the split's first N, in order, so row numbers match the dataset's).", "data")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order (the flat run.yaml keys of the mapping)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any], check_templates: bool = True) -> "DataMapping":
        """A validated mapping from YAML / widget / API values; an unknown key is a
        ValueError naming it (a misspelt key must not be dropped silently).

        ``check_templates=False`` leaves the templates to ``prepare_data``, which
        reports them as issues (the Data tab shows them beside the file's)."""
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in (data or {}).items():
            if key not in known:
                raise ValueError(f"Unknown data mapping field {key!r}; the fields are: {', '.join(known)}.")
            kwargs[key] = coerce(known[key], value)
        mapping = cls(**kwargs)
        check_values(mapping)
        return mapping.validate() if check_templates else mapping

    def validate(self) -> "DataMapping":
        """Bounds, choices and template limits (ValueError naming the field); returns self."""
        check_values(self)
        if self.hub_source:
            from finetune_core.data.hub import HubRequest  # only when used: it is the Hub side of the data layer

            try:
                HubRequest.parse(self.hub_source)
            except ValueError as exc:
                raise ValueError(f"hub_source: {str(exc).removeprefix('hub_source: ')}") from None
        problems = self.template_problems()
        if problems:
            raise ValueError(problems[0])
        return self

    def template_problems(self) -> list[str]:
        """What is wrong with the templates and system prompt (limits, placeholders), one message per field."""
        problems = []
        for name in TEMPLATE_FIELDS:
            try:
                check_template(name, str(getattr(self, name) or ""), placeholders=name != "system_prompt")
            except ValueError as exc:
                problems.append(str(exc))
        return problems

    def to_dict(self) -> dict[str, Any]:
        """The flat fields, as run.yaml and the Data tab's state hold them."""
        return asdict(self)

    def for_file(self, path: str) -> "DataMapping":
        """The same mapping read from another file (the evaluation file, or a file given to evaluation)."""
        return replace(self, data_path=str(path))
