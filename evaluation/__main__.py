"""`python -m evaluation`: the `eval` command under its old name (same flags, same output).

    python -m evaluation --run runs/<id>                 # readable summary
    python -m evaluation --run runs/<id> --json          # one JSON object on stdout
    python -m evaluation --run runs/<id> --data other.jsonl --limit 50 --batch-size 8 --loss

The same as ``python -m finetune_core eval ...``; the command is declared in
evaluation/commands.py. Exit status: 0 on success, 2 on bad input (not a run
directory, no adapter, unusable data), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys

from evaluation.commands import EVAL


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` as the `eval` command's flags and run it; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=EVAL.help)
    EVAL.add_arguments(parser)
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code or 0)
    return EVAL.run(args)


if __name__ == "__main__":
    sys.exit(main())
