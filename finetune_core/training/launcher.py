"""Runs as processes: the command that starts a run in its own process(es), and the stop request.

A run whose ``launcher`` is not "thread" trains in a child process that the app starts in its own
process group, so closing or restarting the app does not stop it. The run directory is the interface
between them: the child writes status.json, metrics.jsonl and log.txt as a thread would; the app asks
it to stop by writing `STOP_FILE` into the run directory, which `watch_stop_file` (in every rank of the
child) turns into the same stop event the Stop button sets for a thread.

The command line is built from the config's choices and the server-made run path only: nothing a
visitor types becomes an argument.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from finetune_core.config import RunConfig
from finetune_core.errors import StudioError
from finetune_core.runs.store import Run, _pid_alive, runs_root

STOP_FILE = "stop-requested"
PROCESS_LOG = "process.log"  # the child's stdout and stderr (library output, a crash's traceback)
REPO = Path(__file__).resolve().parents[2]


class LaunchError(StudioError):
    """The launcher cannot start this run on this machine; the message names the field."""


def check_launch(cfg: RunConfig) -> None:
    """Refuse, before a run is made, a launch this machine cannot do: a process of its own on ZeroGPU,
    several accelerate processes without GPUs (accelerate launch runs one process on a CPU), or more
    processes than GPUs."""
    from finetune_core.zerogpu import on_zerogpu

    if cfg.launcher != "thread" and on_zerogpu():
        raise LaunchError(f"launcher: on ZeroGPU hardware a GPU is lent to the app's own calls only; "
                          f"choose 'thread' (the run trains in GPU calls), not {cfg.launcher!r}.")
    if cfg.launcher not in ("torchrun", "accelerate") or cfg.num_processes == 1:
        return
    import torch

    gpus = torch.cuda.device_count() if cfg.device in ("auto", "cuda") else 0
    if gpus == 0 and cfg.launcher == "accelerate":
        raise LaunchError(f"num_processes: accelerate launch starts one process on a CPU, not "
                          f"{cfg.num_processes}; choose launcher torchrun for several CPU processes.")
    cores = os.cpu_count() or 1
    if not gpus and cfg.num_processes > cores:  # each process holds a copy of the model and its own threads
        raise LaunchError(f"num_processes: {cfg.num_processes} CPU processes, but this machine has {cores} "
                          "cores; use at most one process per core.")
    if gpus and cfg.num_processes > gpus:
        raise LaunchError(f"num_processes: {cfg.num_processes} processes, but this machine has {gpus} GPU(s); "
                          "one process per GPU.")


def command(run: Run, cfg: RunConfig, resume: bool = False) -> list[str]:
    """The argument list that trains `run` with its launcher: one Python process, torchrun with
    `num_processes` workers (a free rendezvous port each time: ``--standalone``), or accelerate launch.

    >>> from pathlib import Path
    >>> cmd = command(Run(Path("/r/x")), RunConfig(launcher="torchrun", num_processes=2))
    >>> cmd[1:6], cmd[-5:]
    (['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2'], ['finetune_core', 'train', '--run-dir', '/r/x', '--quiet'])
    """
    train = ["-m", "finetune_core", "train", "--resume" if resume else "--run-dir", str(run.path), "--quiet"]
    if cfg.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(cfg.num_processes), *train]
    if cfg.launcher == "accelerate":
        # the choices accelerate would otherwise ask about in its config file are given here
        on_cpu = cfg.device == "cpu"
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(cfg.num_processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                *(["--cpu"] if on_cpu else []), *(["--multi_gpu"] if cfg.num_processes > 1 and not on_cpu else []),
                *train]
    return [sys.executable, *train]


def child_env() -> dict[str, str]:
    """The child's environment: the app's, with the runs folder made explicit (a relative ./runs would
    move with the working directory) and the project importable."""
    env = dict(os.environ)
    env["STUDIO_RUNS_DIR"] = str(runs_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(run: Run, cfg: RunConfig, resume: bool = False) -> subprocess.Popen:
    """Start the run's process(es) in their own process group (a Ctrl-C or a signal to the app's group
    does not reach them), output appended to process.log. Not a session of their own: Linux's
    scheduler shares the CPU between sessions (autogroups), and a run alone in one got a tenth of
    the cores while the app's session was busy (measured on 2 cores, bench/bench_queue.py).
    A multi-process run gets its data split made here first, so every rank finds the same split."""
    if cfg.launcher in ("torchrun", "accelerate"):
        from finetune_core.training.train import prepare_split

        prepare_split(cfg, run)
    clear_stop(run)
    log = open(run.path / PROCESS_LOG, "ab")
    try:
        return subprocess.Popen(command(run, cfg, resume), cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, process_group=0)
    finally:
        log.close()  # the child has its own copy of the descriptor


def request_stop(run: Run) -> None:
    """Ask a run's process to stop after its current step (it saves a checkpoint, as Stop does for a thread)."""
    (run.path / STOP_FILE).write_text("stop\n", encoding="utf-8")


def clear_stop(run: Run) -> None:
    """Forget an old stop request, before the run (re)starts."""
    (run.path / STOP_FILE).unlink(missing_ok=True)


def watch_stop_file(run: Run, stop_event: threading.Event, done: threading.Event, every: float = 0.5) -> threading.Thread:
    """A daemon thread that sets `stop_event` once `STOP_FILE` appears in the run, until `done` is set."""
    path = run.path / STOP_FILE

    def watch() -> None:
        while not done.wait(every):
            if path.exists():
                stop_event.set()
                return

    thread = threading.Thread(target=watch, name=f"stop-watch-{run.id}", daemon=True)
    thread.start()
    return thread


# -- which process: pids are reused, (pid, start time) pairs are not ---------------------------
def process_started(pid: int) -> str:
    """The start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field 22); "" where
    there is no /proc. Together with the pid it names one process: pids are reused, start times not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else ""


def process_alive(pid: int) -> bool:
    """Whether the process `pid` still runs. A child of this process that ended is reaped here: until
    then it is a zombie, which a signal-0 probe still finds."""
    if pid <= 0:
        return False
    try:
        ended, _ = os.waitpid(pid, os.WNOHANG)
        return ended != pid
    except ChildProcessError:  # not our child (a run started before an app restart): probe it
        return _pid_alive(pid)


def this_process() -> dict:
    """This process, as the queue file records who trains or evaluates: {"pid", "started"}."""
    return {"pid": os.getpid(), "started": process_started(os.getpid())}


def entry_alive(entry: dict) -> bool:
    """Whether the process an entry names still runs: the same pid and, where known, the same start time."""
    pid = int(entry.get("pid") or 0)
    if pid == os.getpid():
        return entry.get("started", "") in ("", this_process()["started"])
    if not process_alive(pid):
        return False
    started = entry.get("started", "")
    return not started or process_started(pid) in ("", started)
