"""The evaluation layer's commands: `eval`, `export` and `report`.

    python -m finetune_core eval [--run] runs/<id> [--against base|parent|<run id>] [--json]
                                 [--data other.jsonl] [--limit N] [--loss] [--metrics chrf,bleu]
    python -m finetune_core export --run runs/<id> --adapter-zip a.zip | --merged DIR | --gguf f.gguf
                                   [--qtype f16|bf16|q8_0] [--parity-prompts N]
    python -m finetune_core report --run runs/<id> [--out DIR] [--compare RUN_ID ...]
    python -m finetune_core compare RUN_ID RUN_ID [...] [--json]

They are declared here, where their code lives, as `finetune_core.cli.Command`
records (COMMANDS); finetune_core/__main__.py joins them with the core's.
`export` is here and not in the core because the model card it adds is built
from the evaluation (evaluation/model_card.py). A merged model or GGUF file ends
with its parity verdict (finetune_core/export/parity.py; `--parity-prompts 0`
skips the check and says so); a GGUF file gets its Ollama Modelfile beside it. `python -m evaluation` is the
`eval` command under its old name.

`eval` compares the run with its default side (its parent run when it has one, else
the base model) or with `--against`, and saves its results in runs/<id>/eval/ (another
pair: runs/<id>/eval/pairs/<pair>/); progress goes to stderr, so stdout
holds only the summary with each metric's 95% interval and the sentence for
the headline metric (or the JSON object, intervals in its "summary" entries). Exit status of every command: 0
on success, 2 on bad input (not a run directory, no adapter, unusable data),
130 when interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, TypeVar

from evaluation.significance import ci_text
from finetune_core.cli import Command
from finetune_core.export.parity import PARITY_PROMPTS
from finetune_core.errors import USER_ERROR_EXIT, InputError, StudioError, run_cli

T = TypeVar("T")
INTERRUPTED_EXIT = 130
EXAMPLES_SHOWN = 3
CELL = 48  # characters of text shown per cell of the example lists


# -- eval ------------------------------------------------------------------------------
def add_eval_arguments(ap: argparse.ArgumentParser) -> None:
    """The `eval` command's flags (also `python -m evaluation`'s)."""
    ap.add_argument("run_dir", nargs="?", metavar="RUN", help="run directory (runs/<id>), or give it as --run")
    ap.add_argument("--run", help="run directory (runs/<id>)")
    ap.add_argument("--against", metavar="SIDE",
                    help="compare the run with: base (the base model), parent (its parent run) or a run id "
                         "(default: its parent when it has one, else base)")
    ap.add_argument("--data", help="evaluate on this file instead, mapped like the run's training data")
    ap.add_argument("--limit", type=int, help="use only the first N rows")
    ap.add_argument("--batch-size", type=int, default=64,
                    help="most prompts per generation batch (default 64; fewer when their cache would pass 2 GiB)")
    ap.add_argument("--max-new-tokens", type=int,
                    help="default: longest label + 8 (classification), longest reference + 16 up to 256")
    ap.add_argument("--loss", action="store_true", help="also compute held-out loss and perplexity")
    ap.add_argument("--metrics", default="",
                    help="extra metrics, comma separated, besides the task's defaults: "
                         + ", ".join(_extra_metric_names()) + " (a Hub metric name only where the server allows)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate the run against its default side or --against on its held-out rows (or --data); print the summary."""
    from evaluation.heldout_loss import LOWER_IS_BETTER
    from evaluation.pair_eval import result_dir
    from evaluation.run_eval import evaluate_run, load_meta
    from finetune_core.models.sources import hub_timeouts
    from finetune_core.runs.store import run_from_dir

    hub_timeouts()  # fail fast instead of hanging when the Hub is unreachable

    def work():
        if not (args.run or args.run_dir) or (args.run and args.run_dir):
            raise InputError("Give the run directory once: `eval runs/<id>` or `eval --run runs/<id>`.")
        run = run_from_dir(args.run or args.run_dir)
        sides = against_sides(run, args.against)
        return run, sides, evaluate_run(run, data_path=args.data, limit=args.limit, batch_size=args.batch_size,
                                        max_new_tokens=args.max_new_tokens, with_loss=args.loss,
                                        progress=print_progress, metrics=args.metrics, sides=sides)

    done, status = attempt(work)
    if status is not None:
        return status
    run, sides, comparison = done
    meta, saved_to = load_meta(run, sides), str(result_dir(run, sides))
    if args.json:
        out = {**comparison.to_json_dict(), "seconds": meta.get("seconds", {}),
               "max_new_tokens": meta.get("max_new_tokens"), "batch_size": meta.get("batch_size"),
               "lower_is_better": [m for m in LOWER_IS_BETTER if m in comparison.base_metrics],
               "sides": meta.get("sides"), "labels": meta.get("labels"),
               "reward_accuracy": meta.get("reward_accuracy"), "saved_to": saved_to}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(render_text(comparison, meta, saved_to))
    return 0


def against_sides(run, against: str | None) -> tuple[str, str] | None:
    """The pair `--against` asks for, the run being side B: "base", "parent" (InputError without one) or
    another run's id; None (the run's default pair) when not given."""
    from finetune_core.inference.sides import BASE, RUN_PREFIX, run_key
    from finetune_core.runs.chain import parent_id
    from finetune_core.runs.store import get_run

    if not against:
        return None
    if against == BASE:
        return BASE, run_key(run)
    if against == "parent":
        parent = parent_id(run)
        if not parent:
            raise InputError(f"--against parent: run {run.id} has no parent run (it started from the base model).")
        return RUN_PREFIX + parent, run_key(run)
    return run_key(get_run(against.removeprefix(RUN_PREFIX))), run_key(run)


def _extra_metric_names() -> list[str]:
    from evaluation.metric_registry import DEFAULT_METRICS, available_metrics

    defaults = {name for names in DEFAULT_METRICS.values() for name in names}
    return [name for name in available_metrics() if name not in defaults]


def attempt(work: Callable[[], T]) -> tuple[T | None, int | None]:
    """A check command's work, run: (its result, None), or (None, the exit status) after one line on
    stderr. A StudioError (not a run, no adapter, unusable data) is "error: ..." and 2, an interruption
    "interrupted: nothing was saved" and 130; a bug keeps its traceback."""
    try:
        return work(), None
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, USER_ERROR_EXIT
    except (InterruptedError, KeyboardInterrupt):
        print("interrupted: nothing was saved", file=sys.stderr)
        return None, INTERRUPTED_EXIT


def print_progress(text: str, fraction: float) -> None:
    """A command's progress on stderr ("[ 42.0%] ..."), so stdout holds only the result."""
    print(f"[{fraction * 100:5.1f}%] {text}", file=sys.stderr, flush=True)


# -- readable output -----------------------------------------------------------

def render_text(comparison, meta: dict, saved_to: str) -> str:
    """Summary table, win/tie/loss and the biggest wins and losses, as plain text."""
    seconds = meta.get("seconds", {})
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    labels = meta.get("labels") or {}
    a, b = (("base", "tuned") if not labels or (meta.get("sides") or {}).get("a") == "base"
            else (labels["a"], labels["b"]))
    lines = [f"{comparison.task}: {comparison.rows} rows" + (f" ({timing})" if timing else ""), ""]
    if (a, b) != ("base", "tuned"):
        lines[1:1] = [f"side A (base columns): {a}", f"side B (tuned columns): {b}", ""]
    lines += _summary_table(comparison.summary)
    for side in ("a", "b"):
        said = ((meta.get("reward_accuracy") or {}).get(side) or {}).get("sentence")
        lines += [said] if said else []
    sentence = headline_sentence(comparison)
    if sentence:
        lines += ["", sentence]
    if comparison.task != "language_modeling":
        lines += ["", f"per example, {b} vs {a}: {comparison.wins} wins, {comparison.ties} ties, "
                      f"{comparison.losses} losses"]
        lines += _example_lines("Biggest wins", comparison.biggest_wins(EXAMPLES_SHOWN))
        lines += _example_lines("Biggest losses", comparison.biggest_losses(EXAMPLES_SHOWN))
    lines += ["", f"saved to {saved_to}"]
    return "\n".join(lines)


def headline_sentence(comparison) -> str | None:
    """The plain sentence for the task's headline metric (rougeL, accuracy; eval_loss for text rows), e.g.
    "rougeL: not distinguishable from no change on 45 rows (...)"; None without one."""
    from evaluation.intervals import headline_sentence as sentence
    from evaluation.report_checks import headline_entry

    return sentence(headline_entry(comparison.summary, comparison.task))


def _summary_table(summary: list[dict]) -> list[str]:
    width = max([len(e["metric"]) for e in summary] + [6])
    out = [f"{'metric':<{width}}  {'base':>12}  {'tuned':>12}  {'delta':>12}  {'95% CI':>17}"]
    for e in summary:
        # Say it in the table: a negative delta is an improvement for these.
        note = "  (lower is better)" if e.get("higher_is_better") is False else ""
        out.append(f"{e['metric']:<{width}}  {_num(e['base']):>12}  {_num(e['tuned']):>12}  "
                   f"{_num(e['delta'], signed=True):>12}  {ci_text(e.get('interval'), 'n/a'):>17}{note}")
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


# -- export and report -----------------------------------------------------------------
def add_export_arguments(e: argparse.ArgumentParser) -> None:
    """The `export` command's flags: the run and exactly one target."""
    from finetune_core.export.gguf import QTYPES

    e.add_argument("--run", required=True, help="Run directory (runs/<id>).")
    target = e.add_mutually_exclusive_group(required=True)
    target.add_argument("--adapter-zip", metavar="OUT.zip", help="Zip of the adapter, tokenizer and run.yaml.")
    target.add_argument("--merged", metavar="OUT_DIR", help="Folder for the merged standalone model.")
    target.add_argument("--gguf", metavar="OUT.gguf", help="GGUF file of the merged model (Llama models).")
    e.add_argument("--qtype", choices=QTYPES, default="f16", help="GGUF tensor type (default f16).")
    e.add_argument("--parity-prompts", type=int, default=PARITY_PROMPTS, metavar="N",
                   help=f"after a merged model or GGUF file, check it answers N held-out prompts as the app's model "
                        f"does (default {PARITY_PROMPTS}; 0 skips the check)")


def run_export(args: argparse.Namespace) -> int:
    """Write the adapter zip (with its model card), the merged model or the GGUF file (with its Ollama
    Modelfile beside it); a merged model or GGUF file ends with its parity verdict."""
    from evaluation.model_card import card_files
    from finetune_core.export.artifacts import adapter_zip, export_gguf, merge
    from finetune_core.export.parity import check_export
    from finetune_core.export.serving import write_modelfile

    if args.parity_prompts < 0:
        print("error: --parity-prompts takes 0 (skip the check) or more", file=sys.stderr)
        return USER_ERROR_EXIT

    def checked(run, path, target: str) -> None:
        result = check_export(run, path, target, n=args.parity_prompts,
                              progress=lambda fraction, text: print_progress(text, fraction))
        print(result.verdict())

    def export(run):
        if args.adapter_zip:
            print(f"wrote {adapter_zip(run, args.adapter_zip, card_files=card_files(run, 'adapter', curve=False))}")
        elif args.merged:
            path = merge(run, args.merged)
            print(f"wrote {path}")
            checked(run, path, "merged")
        else:
            path = export_gguf(run, args.gguf, args.qtype)
            print(f"wrote {path}\nwrote {write_modelfile(run, path)} (ollama create NAME -f it)")
            checked(run, path, f"gguf-{args.qtype}")

    return _with_run(export, args.run)


def add_report_arguments(r: argparse.ArgumentParser) -> None:
    """The `report` command's flags."""
    r.add_argument("--run", required=True, help="Run directory (runs/<id>).")
    r.add_argument("--out", help="Output folder (default: RUN_DIR/report).")
    r.add_argument("--compare", nargs="+", metavar="RUN_ID", default=[],
                   help="add a section comparing the run with these runs (ids or run directories, up to 7)")


def run_report(args: argparse.Namespace) -> int:
    """Write the stakeholder report (HTML + Markdown) of a run, with other runs beside it when --compare names them."""
    from evaluation.report import report

    def write(run):
        others = [open_run_arg(item) for item in args.compare]
        html_path, md_path = report(run, args.out or run.path / "report", compare_with=others)
        print(f"report: {html_path}\nmarkdown: {md_path}")

    return _with_run(write, args.run)


# -- compare -------------------------------------------------------------------------------------
def open_run_arg(item: str):
    """A run named on the command line: a run id (under the runs root) or a run directory."""
    from finetune_core.runs.store import RUN_ID_RE, get_run, run_from_dir

    return get_run(item) if RUN_ID_RE.match(item.strip()) else run_from_dir(item)


def add_compare_arguments(c: argparse.ArgumentParser) -> None:
    """The `compare` command's flags."""
    c.add_argument("runs", nargs="+", metavar="RUN", help="2 to 8 run ids (or run directories)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _records(frame) -> list[dict]:
    """A table as JSON records (a missing number becomes null)."""
    return json.loads(frame.to_json(orient="records"))


def run_compare(args: argparse.Namespace) -> int:
    """Print the runs' metrics table (one column per run, the best named) and the settings that differ."""
    from evaluation.run_compare import check_runs, config_diff, metrics_table

    def work() -> int:
        runs = check_runs([open_run_arg(item) for item in args.runs])
        metrics, diff = metrics_table(runs), config_diff(runs)
        if args.json:
            print(json.dumps({"runs": [{"id": r.id, "name": r.name} for r in runs], "metrics": _records(metrics),
                              "config_diff": _records(diff)}, ensure_ascii=False))
        else:
            print(metrics.to_string(index=False, na_rep="—"))
            print("\nsettings that differ:" if not diff.empty else "\nthe runs have the same settings")
            if not diff.empty:
                print(diff.to_string(index=False))
        return 0

    return run_cli(work)


def _with_run(work, run_dir: str) -> int:
    """Open the run and do `work(run)`; a StudioError (not a run, no adapter, export refused) is one
    line on stderr and exit status 2, a bug keeps its traceback."""
    from finetune_core.runs.store import run_from_dir

    return run_cli(lambda: work(run_from_dir(run_dir)) or 0)


EVAL = Command("eval", "Compare a run with its base, its parent or another run on held-out rows.",
               add_eval_arguments, run_eval)
COMMANDS: tuple[Command, ...] = (
    EVAL,
    Command("export", "Adapter zip, merged model or GGUF file of a run.", add_export_arguments, run_export),
    Command("report", "Stakeholder report (HTML + Markdown) of a run.", add_report_arguments, run_report),
    Command("compare", "Several runs side by side: metrics and the settings that differ.", add_compare_arguments,
            run_compare),
)
