"""The four general-skill benchmarks as lm-evaluation-harness tasks, on local files or from the Hub.

Each benchmark is lm-eval's own task (its YAML under ``lm_eval/tasks``: the
prompt format, the answer choices, the metrics acc and acc_norm); only where
the items come from is ours:

- a local folder (``data_dir``, else ``STUDIO_BENCHMARK_DIR``, else the
  repository's ``../shared/datasets``) holding ``arc_easy_test.jsonl``,
  ``arc_challenge_test.jsonl`` (Hugging Face ai2_arc layout),
  ``hellaswag_val.jsonl`` (original HellaSwag fields) and ``mmlu_sample.jsonl``
  (cais/mmlu layout: ``answer`` is an index, ``subject`` per row). Every row
  is checked first; a bad one is named by file, line and field.
- else, when the machine is online, lm-eval's own Hub dataset (allenai/ai2_arc,
  Rowan/hellaswag, cais/mmlu "all").

Offline with no local file, `prepare` raises an InputError naming the folder and
the file expected, before any model loads. The folder is the server's setting
(an admin's flag or environment), never a visitor's text.

MMLU is one task over every row: lm-eval's description sentence "The following
are multiple choice questions (with answers) about <subject>." is a template on
each row's own subject, so a file mixing subjects reads as lm-eval's per-subject
tasks do.

Few-shot (k > 0): lm-eval needs examples that are not scored. From a local
file they are its first k rows (for MMLU, the first k rows of each subject),
left out of scoring and shown in file order to every item. From the Hub they are
the first k rows of lm-eval's few-shot split (dev for MMLU, of the item's
subject, as lm-eval does; train for ARC and HellaSwag, where lm-eval draws k at
random instead).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_core.errors import InputError

BENCHMARKS: dict[str, str] = {"arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge",
                              "hellaswag": "HellaSwag", "mmlu": "MMLU"}
DATA_ENV = "STUDIO_BENCHMARK_DIR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MMLU_DESCRIPTION = ("The following are multiple choice questions (with answers) about "
                    "{{subject.replace('_', ' ')}}.\n\n")


@dataclass(frozen=True)
class _Spec:
    yaml: str  # lm-eval's task file, relative to lm_eval/tasks
    file: str  # the local file's name
    layout: str  # "arc" | "hellaswag" | "mmlu"
    metrics: tuple[str, ...]
    hub: dict = field(default_factory=dict)  # changes to lm-eval's Hub dataset settings


SPECS: dict[str, _Spec] = {
    "arc_easy": _Spec("arc/arc_easy.yaml", "arc_easy_test.jsonl", "arc", ("acc", "acc_norm")),
    "arc_challenge": _Spec("arc/arc_challenge.yaml", "arc_challenge_test.jsonl", "arc", ("acc", "acc_norm")),
    "hellaswag": _Spec("hellaswag/hellaswag.yaml", "hellaswag_val.jsonl", "hellaswag", ("acc", "acc_norm")),
    # lm-eval's MMLU is 57 tasks of one template; one task over cais/mmlu "all" reads the same items
    "mmlu": _Spec("mmlu/default/_default_template_yaml", "mmlu_sample.jsonl", "mmlu", ("acc",),
                  {"dataset_name": "all"}),
}


@dataclass
class Prepared:
    """One benchmark ready to score: where its items come from, the two lm-eval tasks (one per side:
    lm-eval keeps an evaluation's requests on its task), and how to show an item."""

    name: str
    title: str
    source: str  # "local folder <path>" | "Hugging Face Hub"
    metrics: tuple[str, ...]
    fewshot_from: str | None
    tasks: dict[bool, Any]  # tuned? -> lm_eval ConfigurableTask

    @property
    def items(self) -> int:
        """How many items are scored."""
        return len(self.tasks[False].eval_docs)

    def view(self, doc: dict) -> tuple[str, list[str]]:
        """(question, choices as a person reads them) of one scored item, in lm-eval's choice order."""
        layout = SPECS[self.name].layout
        if layout == "arc":
            return doc["question"], list(doc["choices"]["text"])
        if layout == "hellaswag":
            return doc["query"], list(doc["choices"])  # lm-eval's cleaned context and endings
        return doc["question"].strip(), list(doc["choices"])


# -- where the data is ------------------------------------------------------------------------------

def data_folder(data_dir: str | None = None) -> Path | None:
    """The local benchmark folder: `data_dir`, else $STUDIO_BENCHMARK_DIR, else ../shared/datasets when
    present (None then). A folder that is named but missing is an InputError."""
    named = data_dir or os.environ.get(DATA_ENV)
    if named:
        folder = Path(named).expanduser()
        if not folder.is_dir():
            raise InputError(f"Benchmark data folder {folder} does not exist.")
        return folder
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def hub_offline() -> bool:
    """Whether the Hugging Face Hub must not be used (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set)."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def prepare(name: str, folder: Path | None, num_fewshot: int = 0, limit: int | None = None) -> Prepared:
    """Benchmark `name` as two lm-eval tasks on the first `limit` items of its local file in `folder`,
    else of lm-eval's Hub dataset when online; InputError naming the folder and file when neither."""
    spec = SPECS[name]
    config = _lm_eval_config(name)
    local = folder / spec.file if folder is not None and (folder / spec.file).is_file() else None
    if local is not None:
        shots, scored = split_shots(spec.layout, read_rows(local, spec.layout), num_fewshot)
        source = f"local folder {folder}"
        fewshot = (f"the first {num_fewshot} rows of {spec.file}" + (" of each subject" if spec.layout == "mmlu"
                   else "") + ", not scored") if num_fewshot else None
    elif hub_offline():
        where = (f"the folder {folder}" if folder is not None else
                 f"a benchmark data folder ({DATA_ENV}, --data-dir, or {DEFAULT_DATA_DIR}, which is absent)")
        raise InputError(f"No local data for {BENCHMARKS[name]}: put {spec.file} in {where}; "
                         "the Hugging Face Hub is off (offline mode).")
    else:
        scored, shots, fewshot = _hub_rows(name, config, num_fewshot)
        source = "Hugging Face Hub"
    scored = scored[:limit] if limit else scored
    if not scored:
        raise InputError(f"{spec.file}: no rows left to score after {num_fewshot} few-shot rows.")
    config.update(_fewshot_settings(spec.layout, config, scored, shots, num_fewshot) if num_fewshot
                  else {"fewshot_split": None})
    config["custom_dataset"] = lambda **_metadata: _dataset(scored)
    tasks = {tuned: _task(config, num_fewshot) for tuned in (False, True)}
    return Prepared(name, BENCHMARKS[name], source, spec.metrics, fewshot, tasks)


# -- lm-eval's task, our rows --------------------------------------------------------------------

def _lm_eval_config(name: str) -> dict:
    """lm-eval's own YAML for the benchmark (prompt, choices, target, metrics), includes resolved."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(lm_eval.tasks.__file__).parent / SPECS[name].yaml, resolve_func=True)
    for key in ("tag", "include", "task_alias", "group", "fewshot_config"):
        config.pop(key, None)  # our task stands alone: no groups, no per-subject alias, our own shots
    config.update(SPECS[name].hub)
    if SPECS[name].layout == "mmlu":
        config["description"] = MMLU_DESCRIPTION
    return config | {"task": name}


def _dataset(rows: list[dict]):
    import datasets

    # the rows were checked and reduced to lm-eval's fields, so every column has one type
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _task(config: dict, num_fewshot: int):
    from lm_eval.api.task import ConfigurableTask

    task = ConfigurableTask(config=dict(config, dataset_path=None, dataset_name=None, dataset_kwargs=None,
                                        training_split=None, validation_split=None, test_split="test"))
    task.set_config(key="num_fewshot", value=num_fewshot)
    return task


def _fewshot_settings(layout: str, config: dict, scored: list[dict], shots: list[dict], k: int) -> dict:
    """lm-eval settings that show every item the first `k` of `shots` (of its own subject for MMLU).

    The few-shot split is named as the scored split only so that lm-eval hands the sampler the item
    (it passes it for the same split alone); the sampler draws from `shots`, never from scored rows."""
    by_subject = layout == "mmlu"
    if by_subject:
        counts = Counter(s["subject"] for s in shots)
        short = sorted({r["subject"] for r in scored if counts[r["subject"]] < k})
        if short:
            raise InputError(f"MMLU: fewer than {k} few-shot rows for subject(s) {', '.join(short[:5])}.")
    elif len(shots) < k:
        raise InputError(f"{k} few-shot rows were asked for; only {len(shots)} are available.")
    process = config.get("process_docs")
    if process is not None:  # HellaSwag: lm-eval's own cleaning of context and endings
        shots = list(process(_dataset(shots)["test"]))
    return {"fewshot_split": "test", "fewshot_config": {"sampler": _shot_sampler(shots, by_subject)}}


def _shot_sampler(shots: list[dict], by_subject: bool):
    """A sampler class (lm-eval's few-shot plug-in) drawing the first n of `shots` in order."""
    from lm_eval.api.samplers import ContextSampler

    class ShotSampler(ContextSampler):
        """The first n held-out examples (of the item's own subject when `by_subject`), in order."""

        def sample(self, n: int, eval_doc=None, df=None, **kwargs):
            """The first `n` examples for `eval_doc`."""
            pool = [s for s in shots if not by_subject or eval_doc is None or s["subject"] == eval_doc["subject"]]
            return pool[:n]

    return ShotSampler


def _hub_rows(name: str, config: dict, k: int) -> tuple[list[dict], list[dict], str | None]:
    """(rows to score, few-shot rows, where the shots come from) from lm-eval's own Hub dataset: its
    test split (HellaSwag: validation), shots from its few-shot split (MMLU: dev) or train split."""
    import datasets

    spec = SPECS[name]
    path, subset = config["dataset_path"], config.get("dataset_name")
    scored_split = config.get("test_split") or config["validation_split"]
    shot_split = config.get("fewshot_split") or config.get("training_split")
    check = _CHECKS[spec.layout]
    try:
        scored = datasets.load_dataset(path, subset, split=scored_split)
        shots = datasets.load_dataset(path, subset, split=shot_split) if k else []
    except (OSError, ConnectionError, ValueError) as exc:  # unreachable, gone, or a split renamed
        raise InputError(f"Could not load {BENCHMARKS[name]} from the Hugging Face Hub ({path}): {exc}. "
                         f"Put {spec.file} in a benchmark data folder to run offline.") from exc
    label = f"{path} {subset or ''}".strip()
    scored = [check(dict(r), f"{label} {scored_split} row {i}") for i, r in enumerate(scored)]
    shots = [check(dict(r), f"{label} {shot_split} row {i}") for i, r in enumerate(shots)]
    if spec.layout != "mmlu":
        shots = shots[:k]
    where = f"the first {k} rows of {label} {shot_split}" + (" of each subject" if spec.layout == "mmlu" else "")
    return scored, shots, where if k else None


# -- local files ---------------------------------------------------------------------------------

def split_shots(layout: str, rows: list[dict], k: int) -> tuple[list[dict], list[dict]]:
    """(few-shot rows, rows to score): the first `k` rows, or for MMLU the first `k` of each subject."""
    if k <= 0:
        return [], rows
    if layout != "mmlu":
        return rows[:k], rows[k:]
    seen: dict[str, int] = {}
    shots, scored = [], []
    for row in rows:
        count = seen.get(row["subject"], 0)
        (shots if count < k else scored).append(row)
        seen[row["subject"]] = count + 1
    return shots, scored


def read_rows(path: Path, layout: str) -> list[dict]:
    """Every row of a benchmark JSONL file, checked and reduced to the fields lm-eval reads;
    InputError naming the file, line and field of the first bad row."""
    check = _CHECKS[layout]
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(row, dict):
                raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}.")
            rows.append(check(row, where))
    if not rows:
        raise InputError(f"{path.name}: the file has no rows.")
    return rows


def _text(row: dict, key: str, where: str, empty_ok: bool = False) -> str:
    if key not in row:
        raise InputError(f"{where}: no field '{key}'.")
    value = row[key]
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise InputError(f"{where}: field '{key}' must be {'a' if empty_ok else 'a non-empty'} string.")
    return value


def _strings(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, (str, int)) for v in value):
        raise InputError(f"{where}: field '{key}' must be a list of at least 2 strings.")
    return [str(v) for v in value]


def _index(value: Any, key: str, where: str, count: int) -> int:
    """An answer index given as an int or a string of digits, within 0..count-1."""
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not text.isdigit() or int(text) >= count:
        raise InputError(f"{where}: field '{key}' must be an index from 0 to {count - 1}, got {value!r}.")
    return int(text)


def _arc_row(row: dict, where: str) -> dict:
    question = _text(row, "question", where)
    choices = row.get("choices")
    if not isinstance(choices, dict) or "text" not in choices or "label" not in choices:
        raise InputError(f"{where}: field 'choices' must be an object with 'text' and 'label' lists.")
    texts = _strings(choices["text"], "choices.text", where)
    labels = [label.strip() for label in _strings(choices["label"], "choices.label", where)]
    if len(texts) != len(labels):
        raise InputError(f"{where}: 'choices.text' has {len(texts)} entries but 'choices.label' {len(labels)}.")
    if "answerKey" not in row:
        raise InputError(f"{where}: no field 'answerKey'.")
    key = str(row["answerKey"]).strip()
    if key not in labels:  # digit keys ("1".."4") are looked up the same way: lm-eval's own target rule
        raise InputError(f"{where}: field 'answerKey' is {key!r}, not one of choices.label ({', '.join(labels)}).")
    return {"question": question, "choices": {"text": texts, "label": labels}, "answerKey": key}


def _hellaswag_row(row: dict, where: str) -> dict:
    out = {key: _text(row, key, where, empty_ok=key == "ctx_b") for key in ("activity_label", "ctx_a", "ctx_b")}
    if "endings" not in row:
        raise InputError(f"{where}: no field 'endings'.")
    out["endings"] = _strings(row["endings"], "endings", where)
    if "label" not in row:
        raise InputError(f"{where}: no field 'label'.")
    out["label"] = _index(row["label"], "label", where, len(out["endings"]))
    return out


def _mmlu_row(row: dict, where: str) -> dict:
    question = _text(row, "question", where)
    subject = _text(row, "subject", where)
    if "choices" not in row:
        raise InputError(f"{where}: no field 'choices'.")
    choices = _strings(row["choices"], "choices", where)
    if len(choices) != 4:  # lm-eval's MMLU prompt lists exactly A. to D.
        raise InputError(f"{where}: field 'choices' must hold 4 answers (A to D), it holds {len(choices)}.")
    if "answer" not in row:
        raise InputError(f"{where}: no field 'answer'.")
    return {"question": question, "subject": subject, "choices": choices,
            "answer": _index(row["answer"], "answer", where, 4)}


_CHECKS = {"arc": _arc_row, "hellaswag": _hellaswag_row, "mmlu": _mmlu_row}
