"""Command line over the same functions the UI calls: the core's commands.

    python -m finetune_core inspect FILE [--map prompt=COL ...] [--json]
    python -m finetune_core inspect --hub OWNER/NAME [--hub-config C] [--split S] [--limit N]
    python -m finetune_core train --config run.yaml [--preset NAME] [--set key=value ...] [--force]
    python -m finetune_core train --resume RUN_DIR
    python -m finetune_core train --preset "Quick demo DPO (CPU)" --set parent_run=RUN_ID --set data_path=FILE
    python -m finetune_core train --config run.yaml --queue        (or --set launcher=process [--detach])
    python -m finetune_core queue list | cancel RUN_ID | work
    python -m finetune_core runs
    python -m finetune_core sweep --config run.yaml --axis learning_rate=1e-4,2e-4 --axis lora_r=8,16 [--mode list]
    python -m finetune_core chat --run RUN_DIR --prompt "..." [--max-new-tokens N]
    python -m finetune_core sync [--restore] [--repo OWNER/NAME]

Each layer declares its commands where their code lives, as `Command`
records: those here (COMMANDS: inspect, train, runs, queue, chat, sync, sweep), `eval`, `export`, `report`, ... in
evaluation/commands.py (they need the evaluation layer: metrics, the report,
the model card). finetune_core/__main__.py, the program entry, joins both
lists into one parser; this library module never imports evaluation. Exit
status: 0 success, 1 a run that did not complete, 2 bad input, 130 interrupted.

Several processes (torchrun / accelerate launch) run one training together:
rank 0 creates the run directory and the split, the other ranks find it
through a launch file named after the launcher's run id, and only rank 0
writes to the run directory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from finetune_core.config import PRESETS, RunConfig, config_from_args
from finetune_core.errors import run_cli


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, its one-line help, how it adds its flags to its
    parser, and what runs it (parsed arguments in, exit status out)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _launch_file() -> Path:
    from finetune_core.runs.store import runs_root

    token = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("MASTER_PORT", "0")
    return runs_root() / f".launch-{token}"


def _shared_run(cfg: RunConfig, name: str = ""):
    """Rank 0 creates the run (named `name`, else dataset · time) and its split; other ranks wait for its id."""
    from finetune_core.runs.store import create_run, get_run
    from finetune_core.training.train import prepare_split

    if _world() == 1:
        return create_run(cfg, name=name)
    marker = _launch_file()
    if _rank() == 0:
        run = create_run(cfg, extra={"world_size": _world()}, name=name)
        prepare_split(cfg, run)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(run.id, encoding="utf-8")
        os.replace(tmp, marker)
        return run
    deadline = time.time() + 300
    while not marker.exists():
        if time.time() > deadline:
            raise SystemExit("rank 0 did not create the run within 5 minutes")
        time.sleep(0.2)
    return get_run(marker.read_text(encoding="utf-8").strip())


def add_train_arguments(t: argparse.ArgumentParser) -> None:
    """The `train` command's flags."""
    t.add_argument("--config", help="run.yaml to start from (default: built-in defaults).")
    t.add_argument("--preset", choices=list(PRESETS), help="Apply a preset before --set overrides.")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="Override one config field (repeatable).")
    t.add_argument("--name", help="The run's human name (default: data file · day and time).")
    t.add_argument("--resume", metavar="RUN_DIR", help="Resume a stopped, failed or interrupted run.")
    t.add_argument("--run-dir", metavar="RUN_DIR", help="Train a run the queue made (the app's process launcher).")
    t.add_argument("--queue", action="store_true",
                   help="Put the run in the run queue (runs/queue.json) instead of training now; a running app "
                        "or `queue work` starts it.")
    t.add_argument("--detach", action="store_true",
                   help="With launcher process/torchrun/accelerate: start the run's process and return at once.")
    t.add_argument("--quiet", action="store_true", help="Do not print events as JSON lines.")
    t.add_argument("--force", action="store_true",
                   help="Train even when the memory estimate says the run will not fit (it is approximate).")


def cmd_train(args) -> int:
    """Train (or resume) a run; 0 when it completes, 1 when it ends otherwise, 2 on bad input."""
    from finetune_core.training.runner import run_job
    from finetune_core.runs.store import run_from_dir

    if args.resume or args.run_dir:
        run = run_from_dir(args.resume or args.run_dir)
        resume = bool(args.resume)
        if _world() > 1 and _rank() == 0:
            run.record_facts(world_size=_world())
    else:
        cfg = config_from_args(args.config, args.preset, args.set)
        if _rank() == 0:  # `--set hub_source=owner/name?split=train&rows=500`: its rows fetched into a file
            from dataclasses import replace

            from finetune_core.data.hub import fill_from_hub

            cfg = replace(cfg, data=fill_from_hub(cfg.data))
        from finetune_core.training.checkpoint_choice import align_checkpoints
        from finetune_core.training.preference import check_start
        from finetune_core.training.tracking import check_tracker

        # early stopping / keep_best need eval_steps and save_steps that agree: set them, and say so
        cfg, aligned = align_checkpoints(cfg)
        if aligned and _rank() == 0:
            print(aligned, file=sys.stderr)
        check_tracker(cfg.report_to)  # a tracker whose package is missing: refused with the pip line
        check_start(cfg)  # a bad parent run or a file the objective cannot use: refused before a run exists
        if _world() == 1 and not memory_allows(cfg, args.force):
            return 2
        if args.queue:
            from finetune_core.training.queue_cli import queue_run

            return queue_run(cfg, args.name or "")
        if cfg.launcher != "thread" and _world() == 1:
            from finetune_core.training.launcher import check_launch

            from finetune_core.training.queue_cli import launch_run

            check_launch(cfg)
            return launch_run(cfg, args.name or "", args.detach, args.quiet)
        run = _shared_run(cfg, args.name or "")
        if aligned and _rank() == 0:
            run.log(aligned)
        resume = False
    printer = None if (_rank() != 0 or args.quiet) else (lambda e: print(json.dumps(e), flush=True))
    status = run_job(run, threading.Event(), printer, resume=resume)
    if _rank() == 0:
        _launch_file().unlink(missing_ok=True)
        print(f"run {run.id}: {status['state']} ({status.get('reason', '')})  {run.path}")
    return 0 if status["state"] == "completed" else 1


def memory_allows(cfg: RunConfig, force: bool) -> bool:
    """The Train tab's check before a run is created: a Hub model that cannot be loaded here,
    or a run the memory estimate says will not fit (unless --force), is refused on stderr.
    (Multi-process launches are not estimated: the launcher decides what each rank gets.)"""
    from finetune_core.models.memory import WontFit, check_fits
    from finetune_core.models.sources import ModelError

    try:
        found = check_fits(cfg, force=force)
    except WontFit as exc:
        print(f"error: {exc} Pass --force to train anyway (the estimate is approximate).", file=sys.stderr)
        return False
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    if found.verdict == "will not fit":
        print(f"warning: {found.summary()}; training anyway (--force).", file=sys.stderr)
    return True


def add_chat_arguments(c: argparse.ArgumentParser) -> None:
    """The `chat` command's flags."""
    c.add_argument("--run", required=True, help="Run directory with an adapter.")
    c.add_argument("--prompt", required=True)
    c.add_argument("--system", default="")
    c.add_argument("--max-new-tokens", type=int, default=128)


def cmd_chat(args) -> int:
    """Ask the run and what it is compared with (its parent, else the base) the same question and print
    both answers."""
    from finetune_core.inference.chat import ChatSession, stream_chat
    from finetune_core.inference.generation import GenSettings, InferenceModel
    from finetune_core.runs.store import run_from_dir

    # a missing run, a run without adapter, a message over a limit: StudioErrors, reported by main
    run = run_from_dir(args.run)
    model = InferenceModel.from_run(run)
    # Through the chat session, so the same message/system/length limits apply as in the app.
    session = ChatSession(system_prompt=args.system or "")
    base = tuned = ""
    for base, tuned in stream_chat(model, session, args.prompt, GenSettings(max_new_tokens=args.max_new_tokens)):
        pass
    keys = model.side_keys or ("base", "")
    if keys[0] == "base":
        print(f"base:  {base.strip()}\ntuned: {tuned.strip()}")
    else:  # a run started from another run answers beside its parent
        print(f"{model.side_labels[False]}: {base.strip()}\n{model.side_labels[True]}: {tuned.strip()}")
    return 0


def cmd_runs(args) -> int:
    """List the runs under the runs root, newest first: id, name, state, steps, objective, model, the
    run it started from ("from <id>") and the reason it ended."""
    from finetune_core.runs.store import list_runs

    for run in list_runs():
        s = run.summary()
        parent = f"  from {s['parent']}" if s["parent"] else ""
        print(f"{s['id']}  {s['name']!r}  {s['state']:<11} step {s['step']}/{s['total_steps']}  {s['objective']}  "
              f"{s['model']}{parent}  {s['reason']}")
    return 0


def cmd_inspect(args) -> int:
    """Check a data file, or the first rows of a Hub dataset (--hub): 0 when usable, 2 when not."""
    from finetune_core.data.dataset import run_inspect
    from finetune_core.models.sources import load_tokenizer

    if args.hub:
        if args.file:
            print("error: give a data file or --hub ID, not both", file=sys.stderr)
            return 2
        args.file = str(_hub_file(args))
    elif not args.file:
        print("error: give a data file to check (or --hub ID for a Hub dataset)", file=sys.stderr)
        return 2
    return run_inspect(args, load_tokenizer)


def _hub_file(args) -> Path:
    """`inspect --hub`: stream the dataset's first rows into the uploads folder and say how to train on them
    (on stderr: --json keeps stdout one JSON object). The environment's token is used (HF_TOKEN)."""
    from finetune_core.data.hub import HubRequest, default_folder, describe, fetch_to_file

    request = HubRequest(args.hub, args.hub_config or "", args.split or "train", args.limit or 0)
    got = fetch_to_file(request, args.hub_out or default_folder(), local_root=args.hub_root or None,
                        max_file_mb=args.max_file_mb)
    for note in got.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{describe(got.source)}: {got.rows} rows saved as {got.path}\ntrain on them with: python -m "
          f"finetune_core train --set data_path={got.path} --set 'hub_source={got.source}'", file=sys.stderr)
    return got.path


def _add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    from finetune_core.data.dataset import add_inspect_arguments
    from finetune_core.data.hub import DEFAULT_ROWS

    add_inspect_arguments(parser)
    for action in parser._actions:  # FILE becomes optional: --hub names the data instead
        if action.dest == "file":
            action.nargs, action.default, action.help = "?", "", "the data file (or give --hub ID)"
    hub = parser.add_argument_group("a dataset on the Hugging Face Hub (its first rows, streamed)")
    hub.add_argument("--hub", metavar="ID", default="", help="dataset id 'owner/name' instead of a file")
    hub.add_argument("--hub-config", metavar="C", default="", help="config (subset); default: the dataset's default")
    hub.add_argument("--split", metavar="S", default="train", help="split (default: train)")
    hub.add_argument("--limit", metavar="N", type=int, default=0,
                     help=f"rows to read from the start of the split (default {DEFAULT_ROWS}; at most the "
                          "data_rows limit)")
    hub.add_argument("--hub-out", metavar="DIR", default="",
                     help="folder for the rows' file (default: the uploads folder, STUDIO_UPLOADS_DIR or ./uploads)")
    hub.add_argument("--hub-root", metavar="DIR", default="",
                     help="a local folder standing in for the Hub (ID = DIR/owner/name), e.g. offline")


COMMANDS: tuple[Command, ...] = (
    Command("inspect", "Check a data file: format, rows, issues, token statistics.", _add_inspect_arguments,
            cmd_inspect),
    Command("train", "Train a run from a run.yaml (or resume one with --resume).", add_train_arguments, cmd_train),
    Command("runs", "List runs and their states.", lambda parser: None, cmd_runs),  # no flags
    Command("queue", "The run queue: list, cancel, or work through it.",
            lambda parser: _queue_cli().add_queue_arguments(parser), lambda args: _queue_cli().cmd_queue(args)),
    Command("chat", "Ask base and tuned the same question.", add_chat_arguments, cmd_chat),
    Command("sync", "Back finished runs up to the Hub repo STUDIO_SYNC_REPO (--restore: bring them back).",
            lambda parser: _sync().add_sync_arguments(parser), lambda args: _sync().cmd_sync(args)),
    Command("sweep", "Queue a sweep: runs over up to three fields (grid or list).",
            lambda parser: _sweep().add_sweep_arguments(parser), lambda args: _sweep().cmd_sweep(args)),
)


def _queue_cli():
    from finetune_core.training import queue_cli  # loaded when used: the queue needs the training runner

    return queue_cli


def _sync():
    from finetune_core.runs import sync  # loaded when the command is used: it needs huggingface_hub

    return sync


def _sweep():
    from finetune_core.training import sweep_cli  # the sweep's flags and the command (queue, trainer checks)

    return sweep_cli


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """One parser with a subcommand per Command; `--help` lists them all with their help."""
    p = argparse.ArgumentParser(prog="python -m finetune_core", description="Fine-tuning studio command line.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        command.add_arguments(sub.add_parser(command.name, help=command.help, description=command.help))
    return p


def main(argv: list[str] | None = None, commands: Sequence[Command] = COMMANDS) -> int:
    """Parse `argv` and run its command; returns the exit status (argparse exits 2 on bad flags).

    `python -m finetune_core` passes the core's and evaluation's commands together."""
    args = build_parser(commands).parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        # a StudioError is "error: <message>" and exit status 2; a bug keeps its traceback
        return run_cli(lambda: {c.name: c for c in commands}[args.command].run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def command_line(cfg: RunConfig, config_path: str = "run.yaml") -> dict[str, str]:
    """The commands that reproduce a UI run: single process, several GPUs, CPU DDP."""
    return {
        "single": f"python -m finetune_core train --config {config_path}",
        "multi_gpu": ("accelerate launch --config_file accelerate_fsdp.yaml --num_processes 8 "
                      f"-m finetune_core train --config {config_path}"),
        "cpu_ddp": f"torchrun --nproc_per_node 2 -m finetune_core train --config {config_path}",
    }
