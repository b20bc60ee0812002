"""The `sweep` command: a sweep's runs put on the persisted run queue from the command line.

    python -m finetune_core sweep --config run.yaml [--preset P] --axis learning_rate=1e-4,2e-4 \
        --axis lora_r=8,16 [--mode grid|list] [--metric eval_loss] [--name N] [--set key=value ...]

The runs wait in runs/queue.json (finetune_core/training/queue.py): a running app, or
``python -m finetune_core queue work``, trains them in order. The sweep itself
(fields, values, limits, tags) is finetune_core/training/sweep.py; here are its flags
and the checks made before anything is queued. Listed in finetune_core/cli.py's COMMANDS.
"""
from __future__ import annotations

import argparse

from finetune_core.config import PRESETS, ConfigError, config_from_args
from finetune_core.training.sweep import MAX_FIELDS, MAX_RUNS, METRICS, MODES, expand, queue_sweep


def add_sweep_arguments(s: argparse.ArgumentParser) -> None:
    """The `sweep` command's flags."""
    s.add_argument("--config", help="run.yaml of the base run (default: built-in defaults).")
    s.add_argument("--preset", choices=list(PRESETS), help="Apply a preset before --set overrides.")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="Override one base field (repeatable).")
    s.add_argument("--axis", action="append", required=True, metavar="FIELD=V1,V2",
                   help=f"A field and its values, comma separated (repeatable, at most {MAX_FIELDS} fields and "
                        f"{MAX_RUNS} runs).")
    s.add_argument("--mode", choices=MODES, default="grid",
                   help="grid: every combination (default); list: the values zipped, every list as long.")
    s.add_argument("--metric", default="eval_loss",
                   help=f"What ranks the runs: {', '.join(METRICS)} (an evaluation metric needs "
                        "--set evaluate_after=true).")
    s.add_argument("--name", default="", help="The sweep's name; each run is '<name> · field=value, ...'.")


def sweep_axes(items: list[str]) -> dict[str, str]:
    """`--axis FIELD=V1,V2` flags as {field: "V1,V2"}; ConfigError for a flag without '=' or a field twice.

    >>> sweep_axes(["learning_rate=1e-4,2e-4", "lora_r = 8,16"])
    {'learning_rate': '1e-4,2e-4', 'lora_r': '8,16'}
    """
    axes: dict[str, str] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--axis expects FIELD=V1,V2, got {item[:80]!r}.")
        if name.strip() in axes:
            raise ConfigError(f"--axis {name.strip()}: the field is given twice; put its values in one --axis.")
        axes[name.strip()] = values.strip()
    return axes


def cmd_sweep(args) -> int:
    """Put a sweep's runs on the persisted run queue; prints each run's position, id and name.
    0 when queued; a bad field, value or data file is "error: ..." and 2 (finetune_core/cli.py main)."""
    base = config_from_args(args.config, args.preset, args.set)  # a ConfigError is reported by main
    axes = sweep_axes(args.axis)
    planned = expand(base, axes, args.mode)  # bad fields and values: refused before the trainer's libraries load
    from finetune_core.training.preference import check_objective, check_start

    check_start(base)  # a data file or parent run the runs cannot use: refused before any is queued
    for cfg, _values in planned:
        check_objective(cfg)  # a swept setting the objective's trainer would refuse mid-way
    queue = run_queue()
    runs = queue_sweep(queue, base, axes, args.mode, args.metric, owner={}, name=args.name)
    positions = {item.get("run"): item.get("position") for item in queue.items()}
    tag = runs[0].run_yaml().get("sweep") or {}
    print(f"sweep {tag.get('id')} ({tag.get('name')}): {len(runs)} runs queued, ranked by {tag.get('metric')}")
    for run in runs:
        print(f"  {positions.get(run.id, '?')}. {run.id}  {run.name!r}")
    return 0


def run_queue():
    """The persisted run queue of the runs root, to add to (nothing starts here)."""
    from finetune_core.training.queue import RunQueue
    from finetune_core.training.runner import TrainingSlot

    return RunQueue(TrainingSlot())


__all__ = ["add_sweep_arguments", "cmd_sweep", "run_queue", "sweep_axes"]
