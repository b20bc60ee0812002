"""The `benchmarks` command: the general-skill check of a run from the command line.

    python -m finetune_core benchmarks --run runs/<id> [--tasks arc_easy,mmlu] [--limit N] [--fewshot K]
                                       [--data-dir DIR] [--batch-size N] [--json]

Base vs tuned on ARC-Easy, ARC-Challenge, HellaSwag and MMLU (evaluation/benchmarks.py), saved to
runs/<id>/checks/benchmarks.json. Prints a table (benchmark, metric, base, tuned, delta, 95% CI) with
the plain sentence under each row, then the first flipped items; --json prints the saved object.
Progress goes to stderr. Exit status: 0 done, 2 bad input (the message names the run, benchmark,
file, line or field), 130 interrupted (nothing saved).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from evaluation.benchmark_tasks import BENCHMARKS, DATA_ENV
from evaluation.commands import attempt
from evaluation.significance import ci_text
from finetune_core.cli import Command

FLIPS_SHOWN = 3  # per direction and benchmark
CELL = 60  # characters of a question shown


def add_benchmark_arguments(ap: argparse.ArgumentParser) -> None:
    """The `benchmarks` command's flags."""
    ap.add_argument("--run", required=True, help="run directory (runs/<id>)")
    ap.add_argument("--tasks", default=",".join(BENCHMARKS),
                    help=f"comma-separated benchmarks (default: all of {', '.join(BENCHMARKS)})")
    ap.add_argument("--limit", type=int, default=100,
                    help="score the first N items of each benchmark (default 100; 0: every item)")
    ap.add_argument("--fewshot", type=int, default=0,
                    help="examples shown before each item (default 0; from a local file: its first K rows, "
                         "not scored)")
    ap.add_argument("--data-dir", help=f"folder with the benchmark files (default: ${DATA_ENV}, else "
                                       "../shared/datasets; without one, the Hub when online)")
    ap.add_argument("--batch-size", type=int, default=32, help="choices scored per forward pass (default 32)")
    ap.add_argument("--json", action="store_true", help="print the saved JSON object instead of tables")


def run_benchmarks_command(args: argparse.Namespace) -> int:
    """Run the check and print it; 0, 2 on bad input, 130 when interrupted."""
    from evaluation.benchmarks import run_benchmarks
    from finetune_core.models.sources import hub_timeouts
    from finetune_core.runs.store import run_from_dir

    hub_timeouts()  # fail fast instead of hanging when the Hub is unreachable
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notes on passing a loaded model are for developers
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]

    def work():
        run = run_from_dir(args.run)
        return run, run_benchmarks(run, names=names, limit=args.limit or None, num_fewshot=args.fewshot,
                                   data_dir=args.data_dir, batch_size=args.batch_size, progress=_progress_printer())

    done, status = attempt(work)
    if status is not None:
        return status
    run, result = done
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(render_text(result, str(run.path / "checks" / "benchmarks.json")))
    return 0


def _progress_printer(step: float = 0.05):
    """A progress callback for stderr: a line when the step changes or every `step` of the bar."""
    last = {"text": None, "fraction": 0.0}

    def show(text: str, fraction: float) -> None:
        if text != last["text"] or fraction >= last["fraction"] + step or fraction >= 1.0:
            print(f"[{fraction * 100:5.1f}%] {text}", file=sys.stderr, flush=True)
            last.update(text=text, fraction=fraction)

    return show


def render_text(result: dict, saved_to: str) -> str:
    """The table of every benchmark's metrics with its sentence, then the first flipped items."""
    shots = f"{result['num_fewshot']}-shot" if result["num_fewshot"] else "zero-shot"
    limit = f"first {result['limit']} items" if result["limit"] else "every item"
    lines = [f"General-skill check of run {result['run']} ({result['model']}): {shots}, {limit}, "
             f"lm-eval {result['lm_eval_version']}, {result['source']}, {result['seconds']:.1f} s", ""]
    lines.append(f"{'benchmark':<14} {'metric':<9} {'base':>7} {'tuned':>7} {'delta':>7}  95% CI")
    for bench in result["benchmarks"]:
        for m in bench["metrics"]:
            iv = m["interval"]
            star = "*" if m["metric"] == bench["primary"] else ""
            lines.append(f"{bench['title']:<14} {m['metric'] + star:<9} {m['base']:>7.3f} {m['tuned']:>7.3f} "
                         f"{m['delta']:>+7.3f}  {ci_text(iv)}")
            lines.append(f"{'':<14} {m['verdict_text']}")
    lines += ["", "* primary metric (flips below are judged by it)"]
    for bench in result["benchmarks"]:
        lines += _flip_lines(bench)
    lines += ["", f"saved to {saved_to}"]
    return "\n".join(lines)


def _flip_lines(bench: dict) -> list[str]:
    flips = bench["flips"]
    counts = f"{len(flips['right_to_wrong'])} right→wrong, {len(flips['wrong_to_right'])} wrong→right"
    out = ["", f"{bench['title']} ({bench['primary']}): {counts}"]
    for kind, arrow in (("right_to_wrong", "right→wrong"), ("wrong_to_right", "wrong→right")):
        for item in flips[kind][:FLIPS_SHOWN]:
            out.append(f"  #{item['doc_id']} {arrow}: {_cell(item['question'])}")
            out.append(f"      answer: {_cell(item['answer'], 40)} | base: {_cell(item['base_choice'], 40)} | "
                       f"tuned: {_cell(item['tuned_choice'], 40)}")
    return out


def _cell(text: str, width: int = CELL) -> str:
    text = " ".join(str(text).split())  # one line
    return text if len(text) <= width else text[:width - 1] + "…"


COMMANDS: tuple[Command, ...] = (
    Command("benchmarks", "Did it forget? Base vs tuned on ARC, HellaSwag, MMLU (lm-eval).",
            add_benchmark_arguments, run_benchmarks_command),
)
