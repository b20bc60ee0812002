"""The training slot: one background training job per process.

`TrainingSlot` is an explicit object (the app makes one and hands it to the
tabs) holding a lock and at most one running job. `run_job` wraps
`train.execute` so that every way a run can end (completed, stopped, an
exception, out of memory, disk full, NaN loss) leaves a final status with a
readable reason; the CLI calls it directly, the slot calls it in a thread.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field

from .config import RunConfig
from .runs import Run, create_run, mark_interrupted

LOGGERS = ("transformers", "trl", "peft", "accelerate")


class Busy(Exception):
    """A training job is already running in this process."""


def _format_event(event: dict) -> str:
    if event.get("event") == "log":
        return event["message"]
    if event.get("event") == "metrics":
        parts = [f"step {event['step']}"]
        for key, fmt in (("loss", "loss {:.4f}"), ("eval_loss", "eval_loss {:.4f}"), ("learning_rate", "lr {:.2e}"),
                         ("grad_norm", "grad_norm {:.3f}"), ("mean_token_accuracy", "token_acc {:.3f}"),
                         ("tokens_per_s", "{:.0f} tok/s"), ("eta_s", "ETA {:.0f}s")):
            if event.get(key) is not None:
                parts.append(fmt.format(event[key]))
        return "  ".join(parts)
    if event.get("event") == "eval":
        return f"held-out loss at step {event['step']}: {event.get('eval_loss')}"
    if event.get("event") == "start":
        return f"Training started: {event['total_steps']} steps."
    return str(event)


class _RunLogHandler(logging.Handler):
    """Copies library warnings into the run's log.txt while it trains."""

    def __init__(self, run: Run):
        super().__init__(level=logging.WARNING)
        self.run = run

    def emit(self, record):
        try:
            self.run.log(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never break training
            pass


def failure_reason(exc: BaseException) -> str:
    """Readable reason (with advice) for the ways a run fails."""
    text = str(exc) or type(exc).__name__
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in text.lower():
        return ("Out of memory. Lower the batch size or max length, use LoRA instead of a full fine-tune, "
                "or QLoRA on a GPU.")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "The disk is full; free space and resume the run. The previous adapter is kept."
    from .models import ModelError
    from .train import TrainingError

    if isinstance(exc, (TrainingError, ModelError)):
        return text
    return f"{name}: {text.splitlines()[0][:300]}"


def run_job(run: Run, stop_event: threading.Event, emit=None, resume: bool = False,
            extra_callbacks: list | None = None) -> dict:
    """Execute a run and always leave a final status; never raises."""
    from .train import execute, is_main_process

    if not is_main_process():  # other ranks of a multi-process run train but never write the run dir
        try:
            return execute(run, stop_event, lambda _e: None, resume=resume, extra_callbacks=extra_callbacks)
        except BaseException as exc:  # noqa: BLE001
            return {"state": "failed", "reason": failure_reason(exc)}

    def _emit(event: dict) -> None:
        run.log(_format_event(event))
        if emit:
            emit(event)

    handler = _RunLogHandler(run)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    run.set_status(state="running", pid=os.getpid(), reason="", resumed=resume)
    try:
        result = execute(run, stop_event, _emit, resume=resume, extra_callbacks=extra_callbacks)
    except BaseException as exc:  # noqa: BLE001 - every failure must end in a status
        reason = failure_reason(exc)
        run.log("FAILED: " + reason)
        run.log(traceback.format_exc(limit=8))
        result = {"state": "failed", "reason": reason}
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    status = run.set_status(**result, finished=time.time())
    run.log(f"Run {status['state']}: {status.get('reason', '')}")
    return status


@dataclass
class Job:
    run: Run
    stop_event: threading.Event
    events: "queue.Queue[dict]"
    thread: threading.Thread | None = None
    final: dict | None = None
    started: float = field(default_factory=time.time)

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class TrainingSlot:
    """At most one training job in this process; start/stop/inspect it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._job: Job | None = None
        mark_interrupted()

    def active(self) -> Job | None:
        job = self._job
        return job if job is not None and job.alive() else None

    def gpu_run(self) -> Run | None:
        """The running job's run when it trains on an accelerator (chat, evaluation and
        export must wait for it); None when idle or training on the CPU, where they
        share the cores and only get slower."""
        job = self.active()
        if job is None:
            return None
        try:
            device = job.run.run_yaml().get("resolved_device")
            if not device:
                from .models import device_policy

                device = device_policy(job.run.config().device).device
        except (OSError, ValueError):
            device = "unknown"  # cannot tell: assume the accelerator is taken
        return None if device == "cpu" else job.run

    def busy_message(self) -> str:
        job = self.active()
        if job is None:
            return ""
        st = job.run.status()
        return (f"A training job is already running: {job.run.id} at step {st.get('step', 0)}/"
                f"{st.get('total_steps') or '?'}. Wait for it or stop it first.")

    def start(self, cfg: RunConfig | None = None, resume_run: Run | None = None,
              extra_callbacks: list | None = None, label: str = "", owner: dict | None = None) -> Run:
        """Start a new run from `cfg` (owned by `owner`, see ownership.py), or resume
        `resume_run`. Raises Busy when occupied."""
        with self._lock:
            if self.active() is not None:
                raise Busy(self.busy_message())
            if resume_run is None:
                from .models import training_policy

                policy = training_policy(cfg.device, cfg.precision, cfg.method)
                run = create_run(cfg, label=label, owner=owner,
                                 extra={"resolved_device": policy.device, "resolved_dtype": policy.dtype})
            else:
                run = resume_run
            job = Job(run, threading.Event(), queue.Queue(maxsize=10_000))

            def emit(event: dict) -> None:
                try:
                    job.events.put_nowait(event)
                except queue.Full:
                    pass  # the files on disk hold everything; the queue is only a live feed

            def work() -> None:
                job.final = run_job(run, job.stop_event, emit, resume=resume_run is not None,
                                    extra_callbacks=extra_callbacks)

            job.thread = threading.Thread(target=work, name=f"train-{run.id}", daemon=True)
            self._job = job
            job.thread.start()
            return run

    def stop(self) -> bool:
        job = self.active()
        if job is None:
            return False
        job.stop_event.set()
        job.run.log("Stop requested: finishing the current step and saving.")
        return True

    def wait(self, timeout: float | None = None) -> dict | None:
        job = self._job
        if job is None or job.thread is None:
            return None
        job.thread.join(timeout)
        return job.final
