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
import re
import threading
import time
import traceback
from dataclasses import dataclass, field

from finetune_core.config import RunConfig
from finetune_core.errors import StudioError
from finetune_core.training.in_calls import train_in_calls  # imported with the app: its GPU call is made then
from finetune_core.training.launcher import clear_stop, watch_stop_file
from finetune_core.runs.store import Run, _pid_alive, create_run, mark_interrupted

LOGGERS = ("transformers", "trl", "peft", "accelerate")
DISK_FULL_TEXTS = ("no space left on device", "storagefull", "disk quota exceeded")
log = logging.getLogger(__name__)


class Busy(StudioError):
    """A training job is already running in this process."""


def _format_event(event: dict) -> str:
    if event.get("event") == "log":
        return event["message"]
    if event.get("event") == "metrics":
        parts = [f"step {event['step']}"]
        for key, fmt in (("loss", "loss {:.4f}"), ("eval_loss", "eval_loss {:.4f}"), ("learning_rate", "lr {:.2e}"),
                         ("grad_norm", "grad_norm {:.3f}"), ("mean_token_accuracy", "token_acc {:.3f}"),
                         ("rewards/margins", "margin {:.3f}"), ("rewards/accuracies", "reward_acc {:.2f}"),
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


def disk_full_reason(exc: BaseException) -> str | None:
    """"disk full: ..." when `exc` (or what caused it) is a write refused for lack of space
    or quota; libraries that write in native code (safetensors) only say so in their text."""
    from finetune_core.training.train import disk_full_words

    advice = ("free space, then resume the run (it continues from its last complete checkpoint; "
              "the previous adapter is kept).")
    seen, hops = exc, 0
    while seen is not None and hops < 10:  # the cause chain, bounded against cycles
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            # a temporary name (.status.json.<pid>.tmp) is named by the file it was to become
            name = re.sub(r"^\.(.+?)(\.\d+)?\.tmp$", r"\1", os.path.basename(str(seen.filename or "")))
            return f"{disk_full_words(seen)}: could not write {name or 'a file'}; {advice}"
        if any(t in str(seen).lower() for t in DISK_FULL_TEXTS):
            return f"disk full: a file could not be saved; {advice}"
        seen, hops = seen.__cause__ or seen.__context__, hops + 1
    return None


def failure_reason(exc: BaseException) -> str:
    """Readable reason (with advice) for the ways a run fails."""
    text = str(exc) or type(exc).__name__
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in text.lower():
        return ("Out of memory. Lower the batch size or max length, use LoRA instead of a full fine-tune, "
                "or QLoRA on a GPU.")
    if isinstance(exc, StudioError):  # written for the user (TrainingError, ModelError, ConfigError, ...)
        return text
    return disk_full_reason(exc) or f"{name}: {text.splitlines()[0][:300]}"


def run_job(run: Run, stop_event: threading.Event, emit=None, resume: bool = False,
            extra_callbacks: list | None = None, policy=None) -> dict:
    """Execute a run and always leave a final status; never raises. ``policy`` is the
    run's training policy when the caller has worked it out already (see ``execute``)."""
    from finetune_core.training.train import execute, is_main_process

    if not is_main_process():  # other ranks of a multi-process run train but never write the run dir
        watch_stop_file(run, stop_event, threading.Event())  # ranks agree on a stop each step (events.py)
        try:
            return execute(run, stop_event, lambda _e: None, resume=resume, extra_callbacks=extra_callbacks,
                           policy=policy)
        except BaseException as exc:  # noqa: BLE001
            if not isinstance(exc, StudioError):  # this rank writes no run log: the process log keeps it
                log.exception("run %s failed on rank %s", run.id, os.environ.get("RANK", "?"))
            return {"state": "failed", "reason": failure_reason(exc)}

    def _emit(event: dict) -> None:
        run.log(_format_event(event))
        if emit:
            emit(event)

    handler = _RunLogHandler(run)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    done = threading.Event()
    watch_stop_file(run, stop_event, done)  # a Stop from the app when this run trains in its own process
    try:
        run.set_status(**start_fields(run, resume))
        result = execute(run, stop_event, _emit, resume=resume, extra_callbacks=extra_callbacks, policy=policy)
    except BaseException as exc:  # noqa: BLE001 - every failure must end in a status
        reason = failure_reason(exc)
        log_failure(run, exc)  # before the reason: the log's last lines say why it failed
        log_quietly(run, "FAILED: " + reason)
        result = {"state": "failed", "reason": reason}
    finally:
        done.set()
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    clear_stop(run)
    if result["state"] == "failed":
        from finetune_core.training.train import remove_partial_writes

        remove_partial_writes(run)
    status = finish(run, result)
    log_quietly(run, f"Run {status['state']}: {status.get('reason', '')}")
    return status


def start_fields(run: Run, resume: bool) -> dict:
    """Status fields as a job starts. A resume keeps the first `started` time (the report
    shows the whole run) and records when it resumed, in `resumed` and the `resumes` list."""
    fields = {"state": "running", "pid": os.getpid(), "reason": ""}
    if resume:
        now = time.time()
        fields.update(resumed=now, resumes=[*run.status().get("resumes", []), now])
    return fields


def log_failure(run: Run, exc: BaseException) -> None:
    """Keep what a developer needs about a failed run. A StudioError's message (already
    logged as the reason) is all there is to it; anything else is a bug or a crash, so
    its whole traceback goes into the run's log.txt (the innermost frames are where
    it broke) and into the app's log."""
    if isinstance(exc, StudioError):
        return
    log_quietly(run, "".join(traceback.format_exception(exc)).rstrip())
    log.error("run %s failed", run.id, exc_info=exc)


def log_quietly(run: Run, message: str) -> None:
    """Log after a failure: with the disk full, writing the log may fail too, and that
    must not keep the run from ending in a status."""
    try:
        run.log(message)
    except OSError:
        log.warning("run %s: could not write to log.txt: %s", run.id, message[:200])


def finish(run: Run, result: dict) -> dict:
    """Write the final status. When the write fails (disk full), remove the run's partial
    and temporary files and try once more; when that fails too, the status is returned
    marked "unsaved" and the training slot writes it once it can (`TrainingSlot.settle`)."""
    from finetune_core.training.train import remove_partial_writes

    fields = {**result, "finished": time.time()}
    try:
        return run.set_status(**fields)
    except OSError:
        remove_partial_writes(run)
    try:
        return run.set_status(**fields)
    except OSError as exc:
        log.error("run %s: the final status could not be written (%s); kept in memory", run.id, exc)
        return {**run.status(), **fields, "unsaved": True}


@dataclass
class Job:
    """One training job: its run, the stop event, the live event queue, the worker thread, and the final
    status once it ends (marked "unsaved" while it could not be written)."""

    run: Run
    stop_event: threading.Event
    events: "queue.Queue[dict]"
    thread: threading.Thread | None = None
    final: dict | None = None
    started: float = field(default_factory=time.time)

    def alive(self) -> bool:
        """Whether the job's thread is still running."""
        return self.thread is not None and self.thread.is_alive()


def on_accelerator(run: Run) -> bool:
    """Whether `run` trains on an accelerator (chat, evaluation and export wait for it); True when it
    cannot be told."""
    try:
        device = run.run_yaml().get("resolved_device")
        if not device:
            from finetune_core.models.sources import device_policy

            device = device_policy(run.config().device).device
    except (OSError, ValueError):
        device = "unknown"  # cannot tell: assume the accelerator is taken
    return device != "cpu"


class TrainingSlot:
    """At most one training job in this process; start/stop/inspect it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._final_lock = threading.Lock()  # one writer of a pending final status at a time
        self._job: Job | None = None
        try:
            mark_interrupted()
        except OSError as exc:  # a full disk must not keep the app from starting; settle() retries
            log.error("could not mark interrupted runs: %s", exc)

    def active(self) -> Job | None:
        """The running job, or None. A finished job whose final status could not be
        written (disk full) gets it written here, as soon as the disk takes it."""
        job = self._job
        if job is None:
            return None
        if job.alive():
            return job
        self._write_final(job)
        return None

    def _write_final(self, job: Job) -> dict | None:
        with self._final_lock:
            if job.final is None or not job.final.get("unsaved"):
                return job.final
            fields = {k: v for k, v in job.final.items() if k not in ("unsaved", "updated")}
            try:
                job.final = job.run.set_status(**fields)
                log_quietly(job.run, f"Run {job.final['state']}: {job.final.get('reason', '')}")
            except OSError:
                pass  # still full: the next call tries again
            return job.final

    def settle(self, run: Run) -> dict:
        """The run's status, made true before acting on it (resume): a run that says
        "running" or "queued" while no job trains it (its thread ended and the disk
        refused the final status, or its process is gone) gets its real final status,
        or "interrupted"."""
        job = self.active()
        status = run.status()
        if status.get("state") not in ("running", "queued") or (job is not None and job.run.path == run.path):
            return status
        mine = self._job if self._job is not None and self._job.run.path == run.path else None
        if mine is not None and mine.final is not None:
            mine.final = {**mine.final, "unsaved": True}  # the file disagrees with how the job ended
            return self._write_final(mine)
        pid = int(status.get("pid") or 0)
        if pid and pid != os.getpid() and _pid_alive(pid):
            return status  # another live process (the CLI) trains it
        fields = {"state": "interrupted", "reason": f"its training stopped at step {status.get('step', 0)}"}
        try:
            return run.set_status(**fields)
        except OSError:
            return {**status, **fields}

    def gpu_run(self) -> Run | None:
        """The running job's run when it trains on an accelerator (chat, evaluation and
        export must wait for it); None when idle or training on the CPU, where they
        share the cores and only get slower."""
        job = self.active()
        return job.run if job is not None and on_accelerator(job.run) else None

    def busy_message(self) -> str:
        """Why a new job cannot start (which run, at which step), or "" when the slot is free."""
        job = self.active()
        if job is None:
            return ""
        st = job.run.status()
        return (f"A training job is already running: {job.run.id} at step {st.get('step', 0)}/"
                f"{st.get('total_steps') or '?'}. Wait for it or stop it first.")

    def start(self, cfg: RunConfig | None = None, resume_run: Run | None = None,
              extra_callbacks: list | None = None, label: str = "", owner: dict | None = None,
              name: str = "", queued_run: Run | None = None) -> Run:
        """Start a new run from `cfg` (owned by `owner`, see ownership.py; human `name`, see
        runs/store.py), or train `queued_run` (made by the run queue), or resume `resume_run`.
        Raises Busy when occupied."""
        with self._lock:
            if self.active() is not None:
                raise Busy(self.busy_message())
            policy = None  # a resumed run's is worked out by execute, from its run.yaml
            if queued_run is not None:
                from finetune_core.models.sources import training_policy

                run = queued_run
                cfg = run.config()
                policy = training_policy(cfg.device, cfg.precision, cfg.method)
                run.record_facts(resolved_device=policy.device, resolved_dtype=policy.dtype)
            elif resume_run is None:
                from finetune_core.models.sources import training_policy

                # worked out once for the run: recorded in run.yaml and handed to execute
                policy = training_policy(cfg.device, cfg.precision, cfg.method)
                run = create_run(cfg, label=label, owner=owner, name=name,
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
                from finetune_core.zerogpu import on_zerogpu

                train = run_job
                if on_zerogpu():  # a GPU lent per call: the run trains in calls of a few steps each
                    train = train_in_calls
                try:
                    job.final = train(run, job.stop_event, emit, resume=resume_run is not None,
                                        extra_callbacks=extra_callbacks, policy=policy)
                except BaseException as exc:  # noqa: BLE001 - run_job should not raise; if it does,
                    # the slot still knows how the job ended and settle() writes it
                    job.final = {"state": "failed", "reason": failure_reason(exc), "unsaved": True}

            job.thread = threading.Thread(target=work, name=f"train-{run.id}", daemon=True)
            self._job = job
            job.thread.start()
            return run

    def stop(self) -> bool:
        """Ask the running job to stop after its current step, saving a checkpoint; False when nothing runs.
        Returns at once: use `wait` to know when it ended."""
        job = self.active()
        if job is None:
            return False
        job.stop_event.set()
        job.run.log("Stop requested: finishing the current step and saving.")
        return True

    def wait(self, timeout: float | None = None) -> dict | None:
        """Block until the last started job's thread ends or `timeout` seconds pass; its final status,
        or None when no job was started or it is still running."""
        job = self._job
        if job is None or job.thread is None:
            return None
        job.thread.join(timeout)
        return job.final
