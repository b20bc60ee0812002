"""`python -m finetune_core ...`: the program entry, one command line for every layer.

It joins the core's commands (finetune_core/cli.py: inspect, train, runs, chat)
and the evaluation layer's (evaluation/commands.py: eval, export, report) into
one parser. Like app.py it is the program, not the library: it is the one
module under finetune_core that may import evaluation, and only when run.
"""
from __future__ import annotations


def commands() -> tuple:
    """Every command of the program, in the order `--help` lists them."""
    from evaluation.benchmark_commands import COMMANDS as BENCHMARKS
    from evaluation.commands import COMMANDS as EVALUATION
    from evaluation.judge_commands import COMMANDS as JUDGE
    from finetune_core.cli import COMMANDS as CORE

    return (*CORE, *EVALUATION, *BENCHMARKS, *JUDGE)


def main(argv: list[str] | None = None) -> int:
    """Run one command (`argv`, default the process's arguments); returns the exit status."""
    from finetune_core.cli import main as run

    return run(argv, commands())


if __name__ == "__main__":
    raise SystemExit(main())
