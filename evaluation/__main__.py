"""Command line: evaluate a trained run, base vs tuned, on its held-out rows.

    python -m evaluation --run runs/<id>                 # readable summary
    python -m evaluation --run runs/<id> --json          # one JSON object on stdout
    python -m evaluation --run runs/<id> --data other.jsonl --limit 50 --batch-size 8 --loss

Results are also saved in runs/<id>/eval/. Progress goes to stderr, so stdout
holds only the summary (or the JSON object). Exit status: 0 on success, 2 on
bad input (not a run directory, no adapter, unusable data), 130 when
interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys

from evaluation.run_eval import LOWER_IS_BETTER, evaluate_run, load_meta
from finetune_core.errors import run_cli

EXAMPLES_SHOWN = 3
CELL = 48  # characters of text shown per cell of the example lists


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m evaluation",
                                 description="Compare a run's base and tuned model on held-out rows.")
    ap.add_argument("--run", required=True, help="run directory (runs/<id>)")
    ap.add_argument("--data", help="evaluate on this file instead, mapped like the run's training data")
    ap.add_argument("--limit", type=int, help="use only the first N rows")
    ap.add_argument("--batch-size", type=int, default=64,
                    help="most prompts per generation batch (default 64; fewer when their cache would pass 2 GiB)")
    ap.add_argument("--max-new-tokens", type=int,
                    help="default: longest label + 8 (classification), longest reference + 16 up to 256")
    ap.add_argument("--loss", action="store_true", help="also compute held-out loss and perplexity")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code or 0)
    from finetune_core.models.sources import hub_timeouts

    hub_timeouts()  # fail fast instead of hanging when the Hub is unreachable
    try:
        # a StudioError (not a run, no adapter, unusable data) is "error: ..." and 2; a bug keeps its traceback
        return run_cli(lambda: _evaluate_and_print(args))
    except (InterruptedError, KeyboardInterrupt):
        print("interrupted: nothing was saved", file=sys.stderr)
        return 130


def _evaluate_and_print(args: argparse.Namespace) -> int:
    """Evaluate the run named on the command line and print the summary (or the JSON object)."""
    from finetune_core.runs.store import run_from_dir

    run = run_from_dir(args.run)
    comparison = evaluate_run(run, data_path=args.data, limit=args.limit, batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens, with_loss=args.loss,
                              progress=_print_progress)
    meta = load_meta(run)
    if args.json:
        out = {**comparison.to_json_dict(), "seconds": meta.get("seconds", {}),
               "max_new_tokens": meta.get("max_new_tokens"), "batch_size": meta.get("batch_size"),
               "lower_is_better": [m for m in LOWER_IS_BETTER if m in comparison.base_metrics],
               "saved_to": str(run.eval_dir)}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(render_text(comparison, meta, str(run.eval_dir)))
    return 0


def _print_progress(text: str, fraction: float) -> None:
    print(f"[{fraction * 100:5.1f}%] {text}", file=sys.stderr, flush=True)


# -- readable output -----------------------------------------------------------

def render_text(comparison, meta: dict, saved_to: str) -> str:
    """Summary table, win/tie/loss and the biggest wins and losses, as plain text."""
    seconds = meta.get("seconds", {})
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    lines = [f"{comparison.task}: {comparison.rows} rows" + (f" ({timing})" if timing else ""), ""]
    lines += _summary_table(comparison.summary)
    if comparison.task != "language_modeling":
        lines += ["", f"per example, tuned vs base: {comparison.wins} wins, {comparison.ties} ties, "
                      f"{comparison.losses} losses"]
        lines += _example_lines("Biggest wins", comparison.biggest_wins(EXAMPLES_SHOWN))
        lines += _example_lines("Biggest losses", comparison.biggest_losses(EXAMPLES_SHOWN))
    lines += ["", f"saved to {saved_to}"]
    return "\n".join(lines)


def _summary_table(summary: list[dict]) -> list[str]:
    width = max([len(e["metric"]) for e in summary] + [6])
    out = [f"{'metric':<{width}}  {'base':>12}  {'tuned':>12}  {'delta':>12}"]
    for e in summary:
        # Say it in the table: a negative delta is an improvement for these.
        note = "  (lower is better)" if e.get("higher_is_better") is False else ""
        out.append(f"{e['metric']:<{width}}  {_num(e['base']):>12}  {_num(e['tuned']):>12}  "
                   f"{_num(e['delta'], signed=True):>12}{note}")
    return out


def _num(value, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _example_lines(title: str, table) -> list[str]:
    out = ["", f"{title}:"]
    if table.empty:
        return out + ["  (none)"]
    for row, ex in table.iterrows():
        out.append(f"  row {row}  delta {ex['delta']:+.3f}  input: {_cell(ex['input'])}")
        out.append(f"      reference: {_cell(ex['reference'])}")
        out.append(f"      base:      {_cell(ex['base_output'])}")
        out.append(f"      tuned:     {_cell(ex['tuned_output'])}")
    return out


def _cell(text) -> str:
    text = " ".join(str(text).split())  # one line: newlines would break the layout
    text = text if len(text) <= CELL else text[:CELL - 1] + "…"
    return repr(text) if not text else text


if __name__ == "__main__":
    sys.exit(main())
