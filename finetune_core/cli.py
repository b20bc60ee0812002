"""Command line over the same functions the UI calls.

    python -m finetune_core inspect FILE [--map prompt=COL ...] [--json]
    python -m finetune_core train --config run.yaml [--preset NAME] [--set key=value ...] [--force]
    python -m finetune_core train --resume RUN_DIR
    python -m finetune_core chat --run RUN_DIR --prompt "..." [--max-new-tokens N]
    python -m finetune_core runs

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
from pathlib import Path

from finetune_core.config import PRESETS, RunConfig
from finetune_core.errors import run_cli


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _launch_file() -> Path:
    from finetune_core.runs.store import runs_root

    token = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("MASTER_PORT", "0")
    return runs_root() / f".launch-{token}"


def _shared_run(cfg: RunConfig):
    """Rank 0 creates the run (and its split); other ranks wait for its id."""
    from finetune_core.runs.store import create_run, get_run
    from finetune_core.training.train import prepare_split

    if _world() == 1:
        return create_run(cfg)
    marker = _launch_file()
    if _rank() == 0:
        run = create_run(cfg, extra={"world_size": _world()})
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


def cmd_train(args) -> int:
    from finetune_core.training.runner import run_job
    from finetune_core.runs.store import run_from_dir

    if args.resume:
        run = run_from_dir(args.resume)
        resume = True
    else:
        try:  # a ConfigError (a StudioError) is reported by main
            cfg = RunConfig.load(args.config) if args.config else RunConfig()
        except OSError as exc:  # the run.yaml named on the command line cannot be read
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.preset:
            cfg = cfg.with_overrides(PRESETS[args.preset])
        cfg = cfg.with_sets(args.set or [])
        if _world() == 1 and not memory_allows(cfg, args.force):
            return 2
        run = _shared_run(cfg)
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


def cmd_chat(args) -> int:
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
    print(f"base:  {base.strip()}\ntuned: {tuned.strip()}")
    return 0


def cmd_runs(args) -> int:
    from finetune_core.runs.store import list_runs

    for run in list_runs():
        s = run.summary()
        print(f"{s['id']}  {s['state']:<11} step {s['step']}/{s['total_steps']}  {s['model']}  {s['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune_core", description="Fine-tuning studio command line.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("inspect", help="Check a data file (see `inspect --help`).", add_help=False)
    t = sub.add_parser("train", help="Train a run from a run.yaml.")
    t.add_argument("--config", help="run.yaml to start from (default: built-in defaults).")
    t.add_argument("--preset", choices=list(PRESETS), help="Apply a preset before --set overrides.")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="Override one config field (repeatable).")
    t.add_argument("--resume", metavar="RUN_DIR", help="Resume a stopped, failed or interrupted run.")
    t.add_argument("--quiet", action="store_true", help="Do not print events as JSON lines.")
    t.add_argument("--force", action="store_true",
                   help="Train even when the memory estimate says the run will not fit (it is approximate).")
    c = sub.add_parser("chat", help="Ask base and tuned the same question.")
    c.add_argument("--run", required=True, help="Run directory with an adapter.")
    c.add_argument("--prompt", required=True)
    c.add_argument("--system", default="")
    c.add_argument("--max-new-tokens", type=int, default=128)
    sub.add_parser("runs", help="List runs and their states.")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; a StudioError is ``error: <message>`` and exit status 2, a bug keeps its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(lambda: _dispatch(argv))


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "inspect":
        from finetune_core.data.dataset import inspect_main

        return inspect_main(argv[1:])
    if argv and argv[0] in ("export", "report"):
        from finetune_core.export import artifacts as export

        return export.main(argv)
    args = build_parser().parse_args(argv)
    return {"train": cmd_train, "chat": cmd_chat, "runs": cmd_runs}[args.command](args)


def command_line(cfg: RunConfig, config_path: str = "run.yaml") -> dict[str, str]:
    """The commands that reproduce a UI run: single process, several GPUs, CPU DDP."""
    return {
        "single": f"python -m finetune_core train --config {config_path}",
        "multi_gpu": ("accelerate launch --config_file accelerate_fsdp.yaml --num_processes 8 "
                      f"-m finetune_core train --config {config_path}"),
        "cpu_ddp": f"torchrun --nproc_per_node 2 -m finetune_core train --config {config_path}",
    }
