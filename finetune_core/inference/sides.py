"""The two sides of a comparison: which models answer, what they are called, and how they load.

A side key is a string the server makes (never a path from user text):

* ``"base"``: the base model of the run(s) compared (the model the oldest run
  of their chains started from);
* ``"run:<run id>"``: that run's whole chain (base -> parent adapters -> its own).

`default_sides(run)` is what a run is compared with unless someone picks
otherwise: its parent when it has one (an SFT -> DPO chain is judged by what
the DPO step changed), else the base. `side_choices(run, runs)` lists what may
be picked for a run: the base, the run, its ancestors and other runs on the
same base model. Side A answers as ``tuned=False`` and side B as
``tuned=True`` everywhere (`InferenceModel.generate`, ``side()``, streaming).

`load_pair(a, b)` is `InferenceModel.for_sides`: when both sides start from
the same base weights, the base is loaded once and every adapter of both
chains is loaded next to it by name (PEFT ``load_adapter``); a side is the
set of its chain's adapters switched on together, which equals the chain
merged into the weights up to float rounding (a LoRA layer adds each active
adapter's update to the base output). Two different bases (a full fine-tune
in a chain, or runs on different models) load two models, and only when the
memory they need fits what is free (`two_models_problem`), else InputError.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from finetune_core.errors import InputError
from finetune_core.models.sources import DevicePolicy
from finetune_core.runs.chain import chain, parent_id
from finetune_core.runs.store import RUN_ID_RE, Run, RunError, get_run

BASE = "base"
RUN_PREFIX = "run:"
PAIR_PREFIX = "sides:"  # a model cache key naming a pair: "sides:<a>|<b>"
Progress = Callable[[str], None]


# -- keys -----------------------------------------------------------------------------
def run_key(run: Run) -> str:
    """The side key of a run's chain: ``run:<run id>``."""
    return RUN_PREFIX + run.id


def check_side(key) -> str:
    """`key` when it is a well-formed side key ("base" or "run:<run id>"), else InputError naming it.

    >>> check_side("base")
    'base'
    >>> check_side("run:../x")
    Traceback (most recent call last):
    ...
    finetune_core.errors.InputError: Side 'run:../x' is neither "base" nor "run:<run id>".
    """
    if key == BASE or (isinstance(key, str) and key.startswith(RUN_PREFIX)
                       and RUN_ID_RE.match(key[len(RUN_PREFIX):])):
        return key
    raise InputError(f"Side {key!r} is neither \"base\" nor \"run:<run id>\".")


Known = dict  # run id -> Run: runs already open (a run directory outside the runs root, given to the CLI)


def side_run(key: str, known: Known | None = None) -> Run | None:
    """The run a side key names (None for "base"), from `known` or the runs root; RunError when it is gone."""
    key = check_side(key)
    if key == BASE:
        return None
    run_id = key[len(RUN_PREFIX):]
    return (known or {}).get(run_id) or get_run(run_id)


def default_sides(run: Run) -> tuple[str, str]:
    """(a, b) a run is compared with by default: its parent's chain (else the base) vs the run.

    >>> from pathlib import Path
    >>> default_sides(Run(Path("/nowhere/20260101-000000-x-abcdef")))  # no run.yaml: no parent
    ('base', 'run:20260101-000000-x-abcdef')
    """
    parent = parent_id(run)
    return (RUN_PREFIX + parent if parent else BASE), run_key(run)


def pair_key(a: str, b: str) -> str:
    """The model cache key of a pair of sides.

    >>> pair_key("base", "run:20260101-000000-x-abcdef")
    'sides:base|run:20260101-000000-x-abcdef'
    """
    return f"{PAIR_PREFIX}{check_side(a)}|{check_side(b)}"


def parse_pair_key(key: str) -> tuple[str, str]:
    """(a, b) from `pair_key`'s output; InputError for anything else."""
    body = key[len(PAIR_PREFIX):] if isinstance(key, str) and key.startswith(PAIR_PREFIX) else ""
    a, sep, b = body.partition("|")
    if not sep:
        raise InputError(f"{key!r} does not name two sides.")
    return check_side(a), check_side(b)


def pair_slug(a: str, b: str) -> str:
    """A folder name for a pair's results, made only from server-made keys.

    >>> pair_slug("base", "run:20260101-000000-x-abcdef")
    'base--vs--20260101-000000-x-abcdef'
    """
    def one(key: str) -> str:
        return check_side(key).removeprefix(RUN_PREFIX)

    return f"{one(a)}--vs--{one(b)}"


def root_model(run: Run) -> str:
    """The base model source the oldest run of `run`'s chain started from."""
    return str(chain(run)[0].config().model)


def newer_run(a: str, b: str, known: Known | None = None) -> Run | None:
    """The newer of the runs two sides name (run ids start with their creation time); None when
    neither is a run. This run holds the pair's votes and, by default, gives the held-out rows."""
    runs = [r for r in (side_run(a, known), side_run(b, known)) if r is not None]
    return max(runs, key=lambda r: r.id) if runs else None


# -- words ----------------------------------------------------------------------------
def side_label(key: str, known: Known | None = None) -> str:
    """How results and panes name a side: "Base model", or the run's human name."""
    if key == BASE:
        return "Base model"
    try:
        run = side_run(key, known)
    except (RunError, InputError):
        return str(key)
    return run.name if run is not None else "Base model"


def pair_labels(a: str, b: str, known: Known | None = None) -> dict[bool, str]:
    """{False: side A's label, True: side B's}: `side_label`, or the run's name with its id's time and
    tail (`Run.label`) when both runs have the same name."""
    labels = {False: side_label(a, known), True: side_label(b, known)}
    if labels[False] == labels[True]:
        for tuned, key in ((False, a), (True, b)):
            try:
                run = side_run(key, known)
            except (RunError, InputError):
                run = None
            labels[tuned] = run.label() if run is not None else labels[tuned]
    return labels


def model_id(key: str, base_model: str) -> str:
    """How a vote line names the model on a side: ``base:<model source>`` or ``run:<run id>``."""
    return f"base:{base_model or '?'}" if key == BASE else check_side(key)


def vote_target(a: str, b: str, known: Known | None = None) -> tuple[Run | None, dict[str, str]]:
    """(the run whose votes.jsonl keeps this pair's votes: the newer one, {"base": side A's model id,
    "tuned": side B's}) for a blind vote between sides `a` and `b`."""
    run = newer_run(a, b, known)
    base = root_model(run) if run is not None else ""
    return run, {"base": model_id(a, base), "tuned": model_id(b, base)}


def side_choices(run: Run, runs: list[Run]) -> list[tuple[str, str]]:
    """(label, key) of what may be compared for `run`: the base, the run, its ancestors, then other
    runs of `runs` (those the visitor may see) that start from the same base model and have a model."""
    try:
        ancestors = chain(run)[:-1]
        base = root_model(run)
    except (RunError, OSError, ValueError):
        ancestors, base = [], ""
    choices = [(f"Base model ({base})" if base else "Base model", BASE), (f"{run.label()} · this run", run_key(run))]
    choices += [(f"{r.label()} · its parent" if i == len(ancestors) - 1 else f"{r.label()} · an ancestor",
                 run_key(r)) for i, r in reversed(list(enumerate(ancestors)))]
    taken = {key for _, key in choices}
    for other in runs:
        if run_key(other) in taken or not other.has_adapter():
            continue
        try:
            same = root_model(other) == base
        except (RunError, OSError, ValueError):
            same = False  # a broken chain cannot be loaded: not offered
        if same:
            choices.append((other.label(), run_key(other)))
    return choices


# -- what to load -----------------------------------------------------------------------
@dataclass
class SideSource:
    """What one side loads: a base model source, then these named adapters (oldest first) switched on."""

    key: str
    base: str
    adapters: list[tuple[str, Path]] = field(default_factory=list)  # (adapter name, folder)
    run: Run | None = None

    @property
    def names(self) -> list[str]:
        """The adapter names this side switches on."""
        return [name for name, _ in self.adapters]


def adapter_name(run: Run) -> str:
    """The PEFT adapter name of a run's adapter: a module-name-safe form of its id.

    >>> from pathlib import Path
    >>> adapter_name(Run(Path("/r/20260101-000000-a-b-abcdef")))
    'run_20260101_000000_a_b_abcdef'
    """
    return "run_" + re.sub(r"[^0-9A-Za-z_]", "_", run.id)


def side_source(key: str, other: str, known: Known | None = None) -> SideSource:
    """What side `key` loads; "base" is the base model of `other`'s chain. RunError when a run in a
    chain is gone or has no saved adapter yet."""
    from finetune_core.runs.chain import chain_source

    if key == BASE:
        run = side_run(other, known)
        if run is None:
            raise InputError("Both sides are the base model: pick a run for at least one side.")
        return SideSource(BASE, root_model(run), [], None)
    run = side_run(key, known)
    source = chain_source(run)
    return SideSource(key, source.base, [(adapter_name(r), r.adapter_dir) for r in source.runs], run)


def resolve_sides(a: str, b: str, known: Known | None = None) -> tuple[SideSource, SideSource]:
    """Both sides' sources; InputError when they are the same model."""
    if check_side(a) == check_side(b):
        raise InputError("Side A and side B are the same model: pick two different ones.")
    return side_source(a, b, known), side_source(b, a, known)


# -- memory ---------------------------------------------------------------------------
def available_memory(device: str) -> float:
    """Bytes free for two more models: free VRAM on a GPU, else the RAM the kernel says is available."""
    from finetune_core.models.device_memory import available_ram, available_vram

    return available_vram() if device == "cuda" else available_ram(rss=0.0)


def weights_bytes(source: str, dtype: str) -> float:
    """Bytes of a model's weights in `dtype` (the memory estimate's arithmetic)."""
    from finetune_core.models.memory import model_facts
    from finetune_core.models.memory_estimate import weight_bytes

    return weight_bytes(model_facts(source).shape, "lora", dtype)


def two_models_problem(sources: list[str], policy: DevicePolicy) -> str:
    """Why two models with these bases cannot be held at once ("" when the estimate says both fit)."""
    from finetune_core.models.memory import verdict
    from finetune_core.models.memory_estimate import GB

    need = sum(weights_bytes(s, policy.dtype) for s in sources)
    free = available_memory(policy.device)
    if verdict(need, free) != "will not fit":
        return ""
    return (f"The two sides start from different models ({' and '.join(sources)}), which would need two "
            f"models in memory: about {need / GB:.1f} GB of weights, with {free / GB:.1f} GB free here. "
            "Compare runs that share a base model, or free memory first.")


# -- loading ----------------------------------------------------------------------------
def with_adapters(model, adapters: list[tuple[str, Path]], progress: Progress | None = None):
    """`model` wrapped with every named adapter loaded beside the others (none switched off; each
    name once), or `model` itself when there is none."""
    from peft import PeftModel

    seen: dict[str, Path] = {}
    for name, folder in adapters:
        seen.setdefault(name, folder)
    for i, (name, folder) in enumerate(seen.items()):
        if progress:
            progress(f"Loading the adapter of run {folder.parent.name}...")
        if i == 0:
            model = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
        else:
            model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    return model.eval()


def load_pair(a: str, b: str, progress: Progress | None = None, known: Known | None = None):
    """`InferenceModel.for_sides(a, b)`: one base with both chains' adapters, or two models when the bases
    differ and both fit (InputError otherwise). Device and speed-up setting: the newer run's."""
    from finetune_core.inference.generation import InferenceModel
    from finetune_core.models.sources import device_policy, load_model, load_tokenizer

    left, right = resolve_sides(a, b, known)
    newest = newer_run(a, b, known)
    cfg = newest.config()
    policy = device_policy(cfg.device)
    tokenizer = load_tokenizer(root_model(newest), progress)
    shared = dict(label=newest.id, speedups=cfg.speedups, sides={False: left.names, True: right.names},
                  side_labels=pair_labels(a, b, known), side_keys=(a, b))
    if left.base == right.base:  # one copy of the weights, the sides switch adapters
        model = with_adapters(load_model(left.base, policy, progress).eval(), left.adapters + right.adapters,
                              progress)
        return InferenceModel(model, tokenizer, policy, **shared)
    problem = two_models_problem([left.base, right.base], policy)
    if problem:
        raise InputError(problem)
    first = with_adapters(load_model(left.base, policy, progress).eval(), left.adapters, progress)
    second = with_adapters(load_model(right.base, policy, progress).eval(), right.adapters, progress)
    return InferenceModel(first, tokenizer, policy, tuned_model=second, **shared)
