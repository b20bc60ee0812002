"""The run queue: runs wait their turn for the device, in a file that outlives the app.

    runs/queue.json   {"waiting": [{"run", "owner", "queued", "resume"}], "active": {"run", "pid", "launcher"} | null,
                       "evaluate": [run ids that completed and still owe their evaluation]}

Every Train press (and every run of a sweep) is enqueued: its run directory is made at once, in
state "waiting", and the dispatcher starts the first waiting run whenever the device is free, one
run at a time: in the app's training slot (launcher "thread") or as its own process(es)
(training/launcher.py). The queue file is read and written under a file lock, so the CLI (`queue`,
`sweep`) and the app can share it. After an app restart the queue carries on where it was: a
process run still training is re-attached (the app watches its run directory again), a thread run
the restart interrupted goes back to the head of the queue and resumes from its last checkpoint.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from finetune_core.config import RunConfig
from finetune_core.errors import StudioError
from finetune_core.limits import limits
from finetune_core.training.launcher import LaunchError, check_launch, request_stop, spawn
from finetune_core.runs.ownership import AccessError, Policy, Visitor, require_change
from finetune_core.runs.store import (FINAL_STATES, Run, RunError, _pid_alive, create_run, get_run, runs_root,
                                      write_json_atomic)
from finetune_core.training.checkpoint_choice import align_checkpoints
from finetune_core.training.runner import TrainingSlot, on_accelerator
from finetune_core.training.tracking import check_tracker
from finetune_core.zerogpu import check_training

QUEUE_FILE = "queue.json"
log = logging.getLogger(__name__)


class QueueError(StudioError):
    """A run cannot be queued or taken off the queue; the message is for the user."""


def check_launcher(cfg: RunConfig, who: Visitor, policy: Policy | None = None) -> None:
    """On a public deployment only admins may start runs as their own processes: a process outlives
    the app's own limits (and torchrun/accelerate can take every device)."""
    policy = policy or Policy.from_env()
    if cfg.launcher != "thread" and policy.public and not who.admin:
        raise AccessError(f"launcher: {cfg.launcher!r} runs are for admins on this public Space; "
                          "choose 'thread' (the run trains inside the app).")


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


def _empty() -> dict:
    return {"schema_version": 1, "waiting": [], "active": None, "evaluate": []}


class RunQueue:
    """The runs waiting for the device, persisted in runs/queue.json, and the dispatcher that starts them."""

    def __init__(self, slot: TrainingSlot, on_finished: Callable[[Run], None] | None = None, poll: float = 1.0):
        self.slot = slot
        self.on_finished = on_finished  # called for a completed run that asked for evaluate_after
        self.poll = poll
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}  # runs this app started as processes: reaped with poll()
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._recover()

    # -- the file ------------------------------------------------------------------------------
    @contextmanager
    def _state(self, write: bool = True) -> Iterator[dict]:
        """The queue file's contents under the file lock (shared with other processes); written back after."""
        root = runs_root()
        if not write and not (root / QUEUE_FILE).exists():
            yield _empty()  # nothing was ever queued here: nothing to lock or create
            return
        root.mkdir(parents=True, exist_ok=True)
        with self._lock, open(root / ".queue.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    state = {**_empty(), **json.loads((root / QUEUE_FILE).read_text(encoding="utf-8"))}
                except (OSError, ValueError):
                    state = _empty()  # no queue yet (or a damaged file: the runs' own status still tells)
                yield state
                if write:
                    write_json_atomic(root / QUEUE_FILE, state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _recover(self) -> None:
        """After a restart: a thread run the restart cut short goes back to the head of the queue (it
        resumes from its last checkpoint); a process run whose process is gone is settled."""
        with self._state(write=False) as state:
            if not state["active"]:
                return
        with self._state() as state:
            active = state["active"]
            if not active:
                return
            try:
                run = get_run(active["run"])
            except RunError:
                state["active"] = None
                return
            if active.get("launcher") == "thread" or not process_alive(int(active.get("pid") or 0)):
                state["active"] = None
                if run.status().get("state") in ("interrupted", "running", "queued"):
                    self._settle_gone(run, active)
                    state["waiting"].insert(0, {"run": run.id, "owner": active.get("owner", ""), "queued": time.time(),
                                                "resume": True})
                    run.set_status(state="waiting", reason="waiting to resume after the app restarted")
                    run.log("The app restarted: the queue resumes this run first, from its last checkpoint.")
                else:
                    self._after(run, state)
            else:
                run.log(f"The app restarted and re-attached to this run's process (pid {active['pid']}).")

    # -- enqueue, cancel, read --------------------------------------------------------------------
    def enqueue(self, cfg: RunConfig, owner: dict | None = None, name: str = "", label: str = "",
                sweep: dict | None = None, who: Visitor | None = None) -> tuple[Run, int]:
        """Make the run (state "waiting") and put it at the end of the queue; returns it and its 1-based
        position. On a shared deployment a visitor may have at most `queued_runs_per_user` waiting."""
        who = who or Visitor()
        check_launcher(cfg, who)
        check_launch(cfg)
        check_tracker(cfg.report_to)  # a tracker whose package is missing: refused with the pip line
        check_training(cfg)  # on ZeroGPU: what cannot train in GPU calls is refused, naming the hardware
        cfg, aligned = align_checkpoints(cfg)  # early stopping / keep_best: eval and save steps that agree
        with self._state() as state:
            mine = sum(1 for item in state["waiting"] if item.get("owner") == who.key)
            cap = limits().queued_runs_per_user
            if not Policy.from_env().local and not who.admin and mine >= cap:
                raise QueueError(f"You already have {mine} runs waiting, this server's limit (setting "
                                 f"{limits().setting('queued_runs_per_user')}); cancel one or wait for it to start.")
            run = create_run(cfg, label=label, owner=owner, name=name, extra={"sweep": sweep} if sweep else None)
            run.set_status(state="waiting", reason="waiting in the queue")
            state["waiting"].append({"run": run.id, "owner": who.key, "queued": time.time(), "resume": False})
            position = len(state["waiting"])
        if aligned:
            run.log(aligned)
        run.log(f"Queued at position {position}.")
        return run, position

    def resume(self, run: Run) -> int:
        """Put a stopped, failed or interrupted run back in the queue, to resume from its last checkpoint;
        returns its position. (The caller checks who may.)"""
        with self._state() as state:
            if any(item["run"] == run.id for item in state["waiting"]):
                raise QueueError(f'Run "{run.name}" is already waiting in the queue.')
            state["waiting"].append({"run": run.id, "owner": "", "queued": time.time(), "resume": True})
            position = len(state["waiting"])
            run.set_status(state="waiting", reason="waiting in the queue to resume")
        return position

    def gpu_run(self) -> Run | None:
        """The running run when it trains on an accelerator (chat, evaluation and export wait for it)."""
        run = self.slot.gpu_run()
        if run is not None or self.slot.active() is not None:
            return run
        run = self.running()
        return run if run is not None and on_accelerator(run) else None

    def cancel(self, run_id: str, who: Visitor | None = None) -> Run:
        """Take a waiting run off the queue (its owner or an admin); it stays listed as "cancelled"."""
        run = get_run(run_id)
        require_change(run.path, who or Visitor(), "cancel")
        with self._state() as state:
            kept = [item for item in state["waiting"] if item["run"] != run.id]
            if len(kept) == len(state["waiting"]):
                raise QueueError(f'Run "{run.name}" is not waiting in the queue (it is {run.status().get("state")}).')
            state["waiting"] = kept
            run.set_status(state="cancelled", reason="cancelled before it started", finished=time.time())
        run.log("Cancelled: taken off the queue before it started.")
        return run

    def items(self) -> list[dict]:
        """The waiting runs in order: {"run", "position", "owner", "queued", "resume"}."""
        with self._state(write=False) as state:
            return [{**item, "position": n} for n, item in enumerate(state["waiting"], 1)]

    def position(self, run_id: str) -> int | None:
        """A waiting run's 1-based place in the queue, or None."""
        return next((item["position"] for item in self.items() if item["run"] == run_id), None)

    def running(self) -> Run | None:
        """The run training now: the slot's thread job, or a process run (this app's or re-attached)."""
        job = self.slot.active()
        if job is not None:
            return job.run
        with self._state(write=False) as state:
            active = state["active"]
        if active and active.get("launcher") != "thread" and self._alive(active):
            try:
                return get_run(active["run"])
            except RunError:
                return None
        return None

    def stop_running(self, who: Visitor | None = None) -> Run | None:
        """Ask the running run to stop after its current step (its owner or an admin); None when none runs."""
        run = self.running()
        if run is None:
            return None
        require_change(run.path, who or Visitor(), "stop")
        if self.slot.active() is not None:
            self.slot.stop()
        else:
            request_stop(run)
            run.log("Stop requested: finishing the current step and saving.")
        return run

    # -- dispatch -----------------------------------------------------------------------------------
    def _alive(self, active: dict) -> bool:
        proc = self._procs.get(active["run"])
        if proc is not None:
            return proc.poll() is None  # our child: poll() also reaps it (a zombie still answers kill 0)
        return process_alive(int(active.get("pid") or 0))

    def _settle_gone(self, run: Run, active: dict) -> None:
        """A run whose process (or the app's thread) ended without a final status gets one."""
        status = run.status()
        if status.get("state") in FINAL_STATES:
            return
        proc = self._procs.pop(run.id, None)
        code = proc.returncode if proc is not None else None
        why = f"its process exited with code {code}" if code is not None else "its process is gone"
        run.set_status(state="interrupted", reason=f"{why} at step {status.get('step', 0)}; see process.log",
                       finished=time.time())

    def _after(self, run: Run, state: dict) -> None:
        """Bookkeeping once the active run ended: a completed run that asked for it owes an evaluation."""
        try:
            wants = run.config().evaluate_after
        except (OSError, ValueError):
            wants = False
        if wants and run.status().get("state") == "completed" and self.on_finished is not None:
            state["evaluate"].append(run.id)

    def dispatch_once(self, evaluate: bool = True) -> Run | None:
        """Start the first waiting run when the device is free (after any evaluation a finished run owes;
        with `evaluate` False, as in a button's handler, that is left to the dispatcher thread); returns
        the run started, or None."""
        with self._lock:
            if self.slot.active() is not None:
                return None
            with self._state() as state:
                active = state["active"]
                if active and active.get("launcher") != "thread" and self._alive(active):
                    return None
                if active:  # it ended since the last look
                    state["active"] = None
                    try:
                        run = get_run(active["run"])
                        self._settle_gone(run, active)
                        self._after(run, state)
                    except RunError:
                        pass
                if state["evaluate"] and not evaluate:
                    return None  # an evaluation is owed first: the dispatcher thread does it
                owed = state["evaluate"].pop(0) if state["evaluate"] else None
            if owed:
                self._evaluate(owed)
                return None
            return self._start_next()

    def _evaluate(self, run_id: str) -> None:
        try:
            run = get_run(run_id)
            run.log("Evaluating on the held-out rows (evaluate_after).")
            self.on_finished(run)
            run.log("Evaluation finished.")
        except Exception as exc:  # noqa: BLE001 - a failed evaluation must not stop the queue
            log.exception("evaluation of %s after training failed", run_id)
            try:
                get_run(run_id).log(f"Evaluation after training failed: {exc}")
            except (RunError, OSError):
                pass

    def _start_next(self) -> Run | None:
        with self._state() as state:
            while state["waiting"]:
                item = state["waiting"].pop(0)
                try:
                    run = get_run(item["run"])
                except RunError:
                    continue  # deleted while waiting
                if run.status().get("state") != "waiting":
                    continue
                cfg = run.config()
                if cfg.launcher == "thread":
                    run.set_status(state="queued", reason="")
                    self.slot.start(resume_run=run if item.get("resume") else None,
                                    queued_run=None if item.get("resume") else run)
                    state["active"] = {"run": run.id, "pid": 0, "launcher": "thread", "owner": item.get("owner", "")}
                else:
                    proc = spawn(run, cfg, resume=bool(item.get("resume")))
                    self._procs[run.id] = proc
                    run.set_status(state="queued", reason="", pid=proc.pid)
                    run.log(f"Started as its own process ({cfg.launcher}, pid {proc.pid}); output in process.log.")
                    state["active"] = {"run": run.id, "pid": proc.pid, "launcher": cfg.launcher,
                                       "owner": item.get("owner", "")}
                return run
        return None

    # -- the dispatcher thread ---------------------------------------------------------------------
    def start(self) -> None:
        """Run `dispatch_once` every `poll` seconds in a daemon thread (the app's; tests call dispatch_once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._halt.clear()

        def loop() -> None:
            while not self._halt.wait(self.poll):
                try:
                    self.dispatch_once()
                except Exception:  # noqa: BLE001 - the dispatcher must outlive one bad run
                    log.exception("the run queue could not start the next run")

        self._thread = threading.Thread(target=loop, name="run-queue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the dispatcher thread (runs already started go on)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(5)

    def wait_idle(self, timeout: float) -> bool:
        """Dispatch until nothing is waiting, running or owed an evaluation, or `timeout` seconds pass;
        True when idle (the CLI's `queue work`, tests)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.dispatch_once()
            with self._state(write=False) as state:
                pending = state["waiting"] or state["active"] or state["evaluate"]
            if not pending and self.slot.active() is None:
                return True
            time.sleep(min(self.poll, 0.5))
        return False


__all__ = ["RunQueue", "QueueError", "LaunchError", "check_launcher", "AccessError"]
