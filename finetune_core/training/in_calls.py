"""A training run in ZeroGPU calls: each call resumes the run, trains its share, saves a checkpoint;
calls follow one another until the run completes (see finetune_core/zerogpu.py)."""
from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

from finetune_core.training.launcher import STOP_FILE  # the same stop request a process run reads
from finetune_core.zerogpu import CALL_ENV, CALL_SAFETY, HARDWARE_ADVICE, call_seconds, gpu_call


@functools.cache
def chunk_end_class():
    """The ChunkEnd TrainerCallback class (made on first use: transformers loads only when training)."""
    from transformers import TrainerCallback

    class ChunkEnd(TrainerCallback):
        """Ends one GPU call's share of a run: after `max_steps` steps, or when the next step would pass
        `CALL_SAFETY` of `call_s` (counted from `started`, so the model load counts), or on a Stop (the
        run's stop file). It sets the call's stop event; the StudioCallback after it saves the checkpoint."""

        def __init__(self, stop_event: threading.Event, call_s: float, started: float,
                     max_steps: int | None = None, stop_file: Path | None = None):
            self.stop_event, self.call_s, self.started = stop_event, call_s, started
            self.max_steps, self.stop_file = max_steps, stop_file
            self.first_step = self.last_step = 0
            self.user_stop = False
            self._t_first = time.monotonic()

        def on_train_begin(self, args, state, control, **kwargs):
            self.first_step = self.last_step = state.global_step
            self._t_first = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            self.last_step = state.global_step
            if state.global_step >= state.max_steps:
                return  # the run's last step: it completes (held-out loss, adapter) in this call
            if self.stop_file is not None and self.stop_file.exists():
                self.user_stop = True
                self.stop_event.set()
                return
            done = state.global_step - self.first_step
            per_step = (time.monotonic() - self._t_first) / max(done, 1)
            elapsed = time.monotonic() - self.started
            if (self.max_steps and done >= self.max_steps) or elapsed + per_step > self.call_s * CALL_SAFETY:
                self.stop_event.set()

    return ChunkEnd


def train_call(run_path: str, call_s: float, max_steps: int | None, resume: bool, extra_callbacks=None) -> dict:
    """One GPU call of a chunked run (runs in ZeroGPU's worker): resume the run, train its share, save.
    Plain arguments and result: they cross the process boundary."""
    from finetune_core.runs.store import Run
    from finetune_core.training.runner import run_job

    started = time.monotonic()
    run = Run(Path(run_path))
    stop = threading.Event()
    end = chunk_end_class()(stop, call_s, started, max_steps, run.path / STOP_FILE)
    status = run_job(run, stop, None, resume=resume, extra_callbacks=[*(extra_callbacks or []), end])
    return {"status": status, "first": end.first_step, "last": end.last_step, "user_stop": end.user_stop,
            "elapsed": round(time.monotonic() - started, 1)}


def _duration(run_path, call_s, *args, **kwargs) -> float:
    return call_s  # spaces asks each call's duration of a callable of its arguments


def _watch_stop(stop_event: threading.Event, done: threading.Event, stop_file: Path) -> None:
    """A Stop sets an event of this process; the call trains in a forked worker, which sees a file."""
    while not done.is_set():
        if stop_event.wait(0.5):
            stop_file.touch()
            return


def call_failure(exc: BaseException, k: int, call_s: float, step: int) -> str:
    """The reason a chunked run failed when GPU call `k` raised (ZeroGPU's errors are gradio errors with
    these words in their message), with what to do; the run keeps its checkpoint at `step`."""
    from finetune_core.training.runner import failure_reason

    text = str(exc)
    lower = text.lower()
    kept = f"The run keeps its checkpoint at step {step}: Resume continues from it."
    if "aborted" in lower:
        return (f"GPU call {k} ran past its {call_s:g} s limit and ZeroGPU aborted it (after step {step}). {kept} "
                f"Lower the batch size or max length, or {HARDWARE_ADVICE}.")
    if "illegal duration" in lower or "larger than the maximum allowed" in lower:
        return (f"ZeroGPU refused GPU call {k}: {text} Lower {CALL_ENV} (60 s is always allowed). {kept}")
    if "quota" in lower or "gpu limit" in lower:
        return f"ZeroGPU quota exhausted at GPU call {k}: {text} {kept} Resume once the quota has refilled."
    return f"GPU call {k} failed: {failure_reason(exc)} {kept}"


def train_in_calls(run, stop_event: threading.Event | None = None, emit=None, resume: bool = False,
                   extra_callbacks: list | None = None, policy=None, *, decorator=None,
                   call_s: float | None = None, steps_per_call: int | None = None, max_calls: int = 10_000) -> dict:
    """Train `run` to the end in GPU calls (same arguments and result as runner.run_job, so the training
    slot can run either): each call is `train_call` decorated by `gpu_call`; between calls the run is
    "running" with the calls so far in its reason; the log says "GPU call k: steps a–b". Ends completed,
    stopped (a Stop), or failed with `call_failure`'s reason. `policy` is worked out in each call."""
    from finetune_core.training.runner import finish, log_quietly

    stop_event = stop_event or threading.Event()
    call_s = call_s or call_seconds()
    call = gpu_call(train_call, _duration, decorator) if decorator is not None else TRAIN_CALL
    stop_file = run.path / STOP_FILE
    stop_file.unlink(missing_ok=True)
    done = threading.Event()
    threading.Thread(target=_watch_stop, args=(stop_event, done, stop_file), daemon=True).start()
    run.log(f"ZeroGPU: training in GPU calls of up to {call_s:g} s, with a checkpoint between calls.")
    step, status = int(run.status().get("step") or 0), {}
    try:
        for k in range(1, max_calls + 1):
            try:
                out = call(str(run.path), call_s, steps_per_call, resume or k > 1, extra_callbacks)
            except Exception as exc:  # noqa: BLE001 - every way a call ends becomes the run's status
                reason = call_failure(exc, k, call_s, int(run.status().get("step") or step))
                log_quietly(run, "FAILED: " + reason)
                return finish(run, {"state": "failed", "reason": reason})
            status = out["status"]
            line = f"GPU call {k}: steps {out['first'] + 1}–{out['last']} ({out['elapsed']:g} s of {call_s:g} s)."
            run.log(line)
            if emit:
                emit({"event": "log", "message": line})
            if status.get("state") == "completed":
                return run.set_status(reason=f"completed {out['last']} steps in {k} GPU call{'s' * (k > 1)}")
            if status.get("state") != "stopped" or out["user_stop"] or stop_event.is_set():
                return status  # failed (its reason is in the status), or stopped by the user
            if out["last"] <= out["first"]:
                reason = (f"GPU call {k} of {call_s:g} s could not train one step (loading the model takes most "
                          f"of it). Raise {CALL_ENV}, pick a smaller model, or {HARDWARE_ADVICE}.")
                return finish(run, {"state": "failed", "reason": reason})
            step = out["last"]
            run.set_status(state="running", reason=f"ZeroGPU: {k} GPU call{'s' * (k > 1)} done, "
                                                    f"at step {step}/{status.get('total_steps') or '?'}")
        return finish(run, {"state": "stopped", "reason": f"stopped after {max_calls} GPU calls at step {step}"})
    finally:
        done.set()
        stop_file.unlink(missing_ok=True)


# decorated once, at import (runner imports this module when the app is built): spaces looks for its
# decorated functions at startup
TRAIN_CALL = gpu_call(train_call, _duration)
