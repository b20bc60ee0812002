"""The run queue: runs wait their turn for the device, in a file that outlives the app.

    runs/queue.json   {"waiting": [{"run", "owner", "queued", "resume"}],
                       "active": {"run", "pid", "started", "launcher", "owner"} | null,
                       "evaluate": [run ids that completed and still owe their evaluation],
                       "evaluating": {"run", "pid", "started"} | null}

"pid" is the process that trains the run: the app itself for a thread run, the child for a process
run; "started" is that process's start time, so a pid the system handed to another process after a
restart is not taken for the run's.

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
from finetune_core.runs.ownership import AccessError, Visitor, require_change
from finetune_core.runs.store import FINAL_STATES, Run, RunError, create_run, get_run, runs_root, write_json_atomic
from finetune_core.training.launcher import LaunchError, entry_alive, process_started, request_stop, spawn, this_process
from finetune_core.training.queue_checks import QueueError, check_cap, check_entry, check_launcher
from finetune_core.training.runner import TrainingSlot, on_accelerator

QUEUE_FILE = "queue.json"
log = logging.getLogger(__name__)


def _empty() -> dict:
    return {"schema_version": 1, "waiting": [], "active": None, "evaluate": [], "evaluating": None}


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
            if not state["active"] and not state["evaluating"]:
                return
        with self._state() as state:
            busy = state["evaluating"]
            if busy and not entry_alive(busy):  # an evaluation the restart cut short: owed again
                state["evaluate"].insert(0, busy["run"])
                state["evaluating"] = None
            active = state["active"]
            if not active:
                return
            try:
                run = get_run(active["run"])
            except RunError:
                state["active"] = None
                return
            if not self._alive(active):  # a thread run of an earlier app, or a process that ended
                state["active"] = None
                if run.status().get("state") in ("interrupted", "running", "queued"):
                    self._settle_gone(run, active)
                    state["waiting"].insert(0, {"run": run.id, "owner": active.get("owner", ""), "queued": time.time(),
                                                "resume": True})
                    run.set_status(state="waiting", reason="waiting to resume after the app restarted")
                    run.log("The app restarted: the queue resumes this run first, from its last checkpoint.")
                else:
                    self._after(run, state)
            elif active.get("launcher") != "thread" and f"(pid {active['pid']})." not in run.log_tail(2000):
                run.log(f"The app restarted and re-attached to this run's process (pid {active['pid']}).")

    # -- enqueue, cancel, read --------------------------------------------------------------------
    def enqueue(self, cfg: RunConfig, owner: dict | None = None, name: str = "", label: str = "",
                sweep: dict | None = None, who: Visitor | None = None) -> tuple[Run, int]:
        """Make the run (state "waiting") and put it at the end of the queue; returns it and its 1-based
        position. On a shared deployment a visitor may have at most `queued_runs_per_user` waiting."""
        return self.enqueue_many([{"cfg": cfg, "name": name, "label": label, "sweep": sweep}], owner, who)[0]

    def enqueue_many(self, entries: list[dict], owner: dict | None = None,
                     who: Visitor | None = None) -> list[tuple[Run, int]]:
        """`enqueue` for several runs ({"cfg", "name", "label", "sweep"} each) at once, all or none: the
        per-visitor limit counts them together and no run starts before the last is queued."""
        who = who or Visitor()
        ready = []
        for entry in entries:
            ready.append((entry, *check_entry(entry["cfg"], who)))
        made: list[tuple[Run, int, str]] = []
        with self._state() as state:
            check_cap(state, who, len(ready))
            try:
                for entry, cfg, aligned in ready:
                    sweep = entry.get("sweep")
                    run = create_run(cfg, label=entry.get("label", ""), owner=owner, name=entry.get("name", ""),
                                     extra={"sweep": sweep} if sweep else None)
                    run.set_status(state="waiting", reason="waiting in the queue")
                    state["waiting"].append({"run": run.id, "owner": who.key, "queued": time.time(), "resume": False})
                    made.append((run, len(state["waiting"]), aligned))
            except BaseException:
                for run, _position, _aligned in made:  # none of them stays queued
                    run.set_status(state="cancelled", reason="its group could not be queued", finished=time.time())
                state["waiting"] = [i for i in state["waiting"] if i["run"] not in {r.id for r, _p, _a in made}]
                raise
        for run, position, aligned in made:
            if aligned:
                run.log(aligned)
            run.log(f"Queued at position {position}.")
        return [(run, position) for run, position, _aligned in made]

    def resume(self, run: Run, who: Visitor | None = None) -> int:
        """Put a stopped, failed or interrupted run back in the queue, to resume from its last checkpoint;
        returns its position. (The caller checks who may change it; the run's state is checked here,
        under the queue's lock, so two presses cannot queue it twice.)"""
        who = who or Visitor()
        with self._state() as state:
            if any(item["run"] == run.id for item in state["waiting"]) or \
                    (state["active"] or {}).get("run") == run.id:
                raise QueueError(f'Run "{run.name}" is already in the queue or training.')
            now = run.status().get("state")
            if now not in ("stopped", "failed", "interrupted"):
                raise QueueError(f'Run "{run.name}" is {now}; only stopped, failed or interrupted runs can be '
                                 "resumed.")
            check_cap(state, who, 1)
            state["waiting"].append({"run": run.id, "owner": who.key, "queued": time.time(), "resume": True})
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
        if active and self._alive(active):
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
        """Whether the active run is still training: in this app's slot, as this app's child, or in
        another live process (the CLI's `queue work`, or the app seen from the CLI)."""
        if active.get("launcher") == "thread" and int(active.get("pid") or 0) in (0, os.getpid()):
            job = self.slot.active()  # ours (pid 0: a queue file from before pids were kept)
            return job is not None and job.run.id == active["run"] and (not active.get("pid") or entry_alive(active))
        proc = self._procs.get(active["run"])
        if proc is not None:
            return proc.poll() is None  # our child: poll() also reaps it (a zombie still answers kill 0)
        return entry_alive(active)

    def _settle_gone(self, run: Run, active: dict) -> None:
        """A run whose process (or the app's thread) ended without a final status gets one."""
        proc = self._procs.pop(run.id, None)  # forgotten in every case: a finished child stays reaped
        status = run.status()
        if status.get("state") in FINAL_STATES:
            return
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
        the run started, or None. An owed evaluation runs without the queue's lock held: pages reading
        the queue and Train presses go on meanwhile, and nothing starts until it ends."""
        with self._lock:
            if self.slot.active() is not None:
                return None
            with self._state() as state:
                active = state["active"]
                if active and self._alive(active):
                    return None
                if active:  # it ended since the last look
                    state["active"] = None
                    try:
                        run = get_run(active["run"])
                        self._settle_gone(run, active)
                        self._after(run, state)
                    except RunError:
                        pass
                busy = state["evaluating"]
                if busy and entry_alive(busy):
                    return None  # an evaluation after training is under way: the next run waits for it
                state["evaluating"] = None
                if state["evaluate"] and not evaluate:
                    return None  # an evaluation is owed first: the dispatcher thread does it
                owed = state["evaluate"].pop(0) if state["evaluate"] else None
                if owed:
                    state["evaluating"] = {"run": owed, **this_process()}
            if not owed:
                return self._start_next()
        try:
            self._evaluate(owed)
        finally:
            with self._state() as state:
                if (state["evaluating"] or {}).get("run") == owed:
                    state["evaluating"] = None
        return None

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
        """Start the first waiting run; one that cannot start is marked failed (the reason said in its
        status and log) and the next is tried, so a bad run never blocks the queue."""
        with self._state() as state:
            while state["waiting"]:
                item = state["waiting"].pop(0)
                try:
                    run = get_run(item["run"])
                except RunError:
                    continue  # deleted while waiting
                if run.status().get("state") != "waiting":
                    continue
                try:
                    state["active"] = self._launch(run, item)
                except Exception as exc:  # noqa: BLE001 - said in the run; the queue goes on
                    log.exception("queued run %s could not start", run.id)
                    why = str(exc) if isinstance(exc, StudioError) else f"{type(exc).__name__}: {exc}"
                    run.set_status(state="failed", reason=f"could not start: {why}", finished=time.time())
                    run.log(f"Could not start: {why}")
                    continue
                return run
        return None

    def _launch(self, run: Run, item: dict) -> dict:
        """Start one waiting run (in the slot or as its own process); returns the queue's "active" entry."""
        cfg = run.config()
        if cfg.launcher == "thread":
            run.set_status(state="queued", reason="")
            self.slot.start(resume_run=run if item.get("resume") else None,
                            queued_run=None if item.get("resume") else run)
            return {"run": run.id, **this_process(), "launcher": "thread", "owner": item.get("owner", "")}
        proc = spawn(run, cfg, resume=bool(item.get("resume")))
        self._procs[run.id] = proc
        run.set_status(state="queued", reason="", pid=proc.pid)
        run.log(f"Started as its own process ({cfg.launcher}, pid {proc.pid}); output in process.log.")
        return {"run": run.id, "pid": proc.pid, "started": process_started(proc.pid), "launcher": cfg.launcher,
                "owner": item.get("owner", "")}

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
                pending = state["waiting"] or state["active"] or state["evaluate"] or state["evaluating"]
            if not pending and self.slot.active() is None:
                return True
            time.sleep(min(self.poll, 0.5))
        return False


__all__ = ["RunQueue", "QueueError", "LaunchError", "check_launcher", "AccessError"]
