"""StudioCallback: the Trainer's window to the outside.

Turns Trainer log steps into events (step, epoch, loss, learning rate, grad
norm, eval loss, mean token accuracy, a preference run's rewards, tokens/s, ETA), appends them to the run's
metrics.jsonl, keeps status.json current, and implements the cooperative stop:
when the stop event is set, the Trainer saves a checkpoint at the step it just
finished and ends. A non-finite loss stops the run and marks it as a failure.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable

from transformers import TrainerCallback

from finetune_core.runs.store import Run

KEYS = {
    "loss": "loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm", "eval_loss": "eval_loss",
    "mean_token_accuracy": "mean_token_accuracy", "eval_mean_token_accuracy": "eval_mean_token_accuracy",
}
# what TRL's preference trainers log beside the loss, kept under TRL's own names (KTO also logs "kl")
REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
KEYS.update({key: key for key in (*REWARD_KEYS, *(f"eval_{k}" for k in REWARD_KEYS), "kl")})


def _agreed(stop: bool, device) -> bool:
    """Whether any rank of a multi-process run was asked to stop (the stop file reaches each rank's
    watcher at a different step; ranks that disagree would wait for each other forever). One process:
    `stop` itself."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stop
    import torch

    flag = torch.tensor([1 if stop else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class StudioCallback(TrainerCallback):
    """Trainer callback that logs each step to the run's metrics.jsonl and status.json and forwards events
    to `emit`; when `stop_event` is set it saves a checkpoint and stops after the current step; a
    non-finite loss stops the run unsaved, with the reason in `failure`. Only rank 0 writes or emits."""

    def __init__(self, run: Run, stop_event: threading.Event, emit: Callable[[dict], None]):
        self.run = run
        self.stop_event = stop_event
        self.emit = emit
        self.failure: str | None = None
        self.total_steps = 0
        self._t0 = None
        self._start_step = 0
        self._last = None  # (time, tokens) at the previous log

    def on_train_begin(self, args, state, control, **kwargs):
        self.total_steps = state.max_steps
        self._t0 = time.perf_counter()
        self._start_step = state.global_step
        self._last = (self._t0, state.num_input_tokens_seen or 0)
        if state.is_world_process_zero:
            fields = {"state": "running", "total_steps": state.max_steps, "step": state.global_step}
            if not self.run.status().get("started"):  # a resume keeps the first start (see runner.start_fields)
                fields["started"] = time.time()
            self.run.set_status(**fields)
            self.emit({"event": "start", "step": state.global_step, "total_steps": state.max_steps})

    def _eta(self, step: int) -> float | None:
        done = step - self._start_step
        if done <= 0 or self._t0 is None:
            return None
        per_step = (time.perf_counter() - self._t0) / done
        return max(0.0, (self.total_steps - step) * per_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        event = {"event": "metrics", "step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": time.time()}
        for key, name in KEYS.items():
            if key in logs and logs[key] is not None:
                event[name] = float(logs[key])
        if len(event) == 4:
            return  # the Trainer's end-of-training summary: nothing to plot
        now, tokens = time.perf_counter(), state.num_input_tokens_seen or 0
        if "loss" in event:
            if self._last and now > self._last[0] and tokens > self._last[1]:
                event["tokens_per_s"] = round((tokens - self._last[1]) / (now - self._last[0]), 1)
            self._last = (now, tokens)
        eta = self._eta(state.global_step)
        if eta is not None:
            event["eta_s"] = round(eta, 1)
        loss = event.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.failure = f"The training loss became {loss} at step {state.global_step}: lower the learning rate. No adapter was saved."
            control.should_training_stop = True
            control.should_save = False
        if state.is_world_process_zero:
            self.run.append_metric(event)
            self.emit(event)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.run.set_status(step=state.global_step, total_steps=state.max_steps, eta_s=self._eta(state.global_step))
        if self.failure:
            control.should_training_stop = True
            control.should_save = False
        elif _agreed(self.stop_event.is_set(), args.device):
            # Save a checkpoint at this step so "Resume" continues exactly from here.
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.emit({"event": "log", "message": f"Checkpoint saved at step {state.global_step}."})
