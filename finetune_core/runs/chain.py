"""A run's chain of models: base -> parent run -> ... -> this run.

A run may start from another run's model (``parent_run`` in run.yaml): its
adapter is merged into the base in memory and the new run trains an adapter of
its own on top (a preference run also uses that merged parent as its
reference). Everything that loads a run's model (chat, evaluation, export)
follows the chain from the base up; `chain` lists it and `chain_source` says
what to load: a base model source and the adapters to apply, oldest first. A
full fine-tune in the chain is a complete model, so the chain restarts at its
folder. `check_parent` refuses, before a run is created, a parent that is
missing, has no adapter yet or was trained on another base model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from finetune_core.runs.store import Run, RunError, get_run

MAX_CHAIN = 16  # far more than anyone stacks; stops a loop made by hand-edited run.yaml files


def parent_id(run: Run) -> str:
    """The run's ``parent_run`` ("" when it starts from the base model or run.yaml is unreadable)."""
    try:
        return str(run.run_yaml().get("parent_run") or "")
    except (OSError, ValueError):
        return ""


def parent_of(run: Run) -> Run | None:
    """The run this one started from, or None; RunError when it is named but no longer exists."""
    pid = parent_id(run)
    if not pid:
        return None
    try:
        return get_run(pid)
    except RunError:
        raise RunError(f"Run {run.id} starts from run {pid}, which no longer exists: its model cannot be "
                       "rebuilt.") from None


def chain(run: Run) -> list[Run]:
    """The runs from the oldest ancestor to `run` itself (just ``[run]`` without a parent)."""
    runs = [run]
    while (parent := parent_of(runs[0])) is not None:
        if any(r.id == parent.id for r in runs) or len(runs) >= MAX_CHAIN:
            raise RunError(f"Run {run.id}'s chain of parent runs loops or is longer than {MAX_CHAIN}.")
        runs.insert(0, parent)
    return runs


@dataclass
class ChainSource:
    """What to load for a chain: the base model source, then these adapters in order (oldest first)."""

    base: str
    adapters: list[Path] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)  # the runs whose adapters are listed, same order


def chain_source(run: Run, include_self: bool = True) -> ChainSource:
    """The base and adapters that rebuild `run`'s model (``include_self=False``: its parent's model,
    which is what the run trains on top of and, for a preference run, its reference).

    RunError when a run in the chain has no saved adapter yet."""
    runs = chain(run) if include_self else chain(run)[:-1]
    source = ChainSource(base=str(run.config().model))
    if runs:
        source.base = str(runs[0].config().model)
    for step in runs:
        if not step.has_adapter():
            raise RunError(f"Run {step.id} has no saved adapter yet: let it finish training first.")
        if step.config().method == "full":  # a complete model: what came before is inside it
            source = ChainSource(base=str(step.adapter_dir))
        else:
            source.adapters.append(step.adapter_dir)
            source.runs.append(step)
    return source


def describe_chain(run: Run) -> str:
    """The chain as a person reads it: ``bundled -> sft-run -> dpo-run`` (names, not ids)."""
    try:
        runs = chain(run)
        model = runs[0].config().model
    except (RunError, OSError, ValueError) as exc:
        return f"{run.name} (chain unreadable: {exc})"
    return " -> ".join([model, *(r.name for r in runs)])


def check_parent(cfg) -> Run | None:
    """The run a new run with config `cfg` starts from (None without ``parent_run``), refused with a
    ConfigError naming parent_run when it does not exist, has no saved adapter (nor has any run of its
    chain), or was trained on another base model than ``cfg.model``."""
    from finetune_core.config import ConfigError

    if not cfg.parent_run:
        return None
    try:
        parent = get_run(cfg.parent_run)
        chain_source(parent)  # every run of its chain exists and has its adapter
    except RunError as exc:
        raise ConfigError(f"parent_run: {exc}") from None
    try:
        parent_model = parent.config().model
    except (OSError, ValueError) as exc:
        raise ConfigError(f"parent_run: the run.yaml of run {parent.name} cannot be read ({exc}).") from None
    if parent_model != cfg.model:
        raise ConfigError(f"parent_run: run {parent.name!r} was trained on model {parent_model!r}, not on "
                          f"{cfg.model!r}; set model to {parent_model!r} to start from it.")
    return parent
