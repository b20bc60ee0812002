"""ZeroGPU: training, chat and evaluation in the time-limited GPU calls of a ZeroGPU Space.

On ZeroGPU hardware (a Space sets ``SPACES_ZERO_GPU=true``) no GPU is held by the
app: a GPU is lent for each call of a function decorated with
``spaces.GPU(duration=...)``, which the `spaces` package runs in a forked worker
process, aborting it ("GPU task aborted") when it outlives its duration. A
training run of minutes or hours does not fit one call, so here it runs as a
chain of calls: each call resumes the run from its last checkpoint, trains
until its time (or step) budget is nearly spent, saves a checkpoint and ends;
the next call continues, until the run completes. The optimizer, the learning
rate schedule and the data order come back from the checkpoint, so the run is
the same run as one uninterrupted job. What cannot work that way is refused
with the hardware to choose instead (`plan_training`).

    python -c "from finetune_core.zerogpu import detect, plan_training; print(detect().describe())"

`gpu_call(fn, duration)` is fn decorated with ``spaces.GPU`` on ZeroGPU and fn
itself elsewhere (nothing changes off ZeroGPU); tests pass `StandInGPU`, which
records each call and raises like the real decorator when a call runs over.
Arguments and results of a decorated call cross a process boundary on
ZeroGPU: they must pickle (the stand-in checks that too).
The training loop itself is finetune_core/training/in_calls.py. This module never imports gradio.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import pickle
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from finetune_core.errors import StudioError

ZERO_ENV = "SPACES_ZERO_GPU"  # set to "true" by the Space on ZeroGPU hardware (read by `spaces` too)
CALL_ENV = "STUDIO_ZEROGPU_CALL_S"  # seconds one training call may hold the GPU
DEFAULT_CALL_S = 60  # spaces' own default duration; every visitor tier may ask for it
ZEROGPU_MEMORY_GB = 70  # the default ("large") ZeroGPU slice: half an H200
DISK_GB_PER_S = 1.0  # assumed read/write speed of model files and checkpoints on a Space
LOAD_SHARE = 0.5  # the most of a call that loading and saving may take; the rest trains
CALL_SAFETY = 0.75  # a call stops training at this share of its duration: the save must fit after
# bytes per parameter, by method: in GPU memory while training / read and written in each call
MEMORY_BYTES = {"lora": 2.6, "full": 16.0}
MOVED_BYTES = {"lora": 2.0, "full": 24.0}  # full: fp32 weights and Adam's two moments, read then written


def on_zerogpu(environ=None) -> bool:
    """Whether this process runs on ZeroGPU hardware: ``SPACES_ZERO_GPU`` is 1/t/true, as `spaces` reads it."""
    value = (environ if environ is not None else os.environ).get(ZERO_ENV)
    return value is not None and value.strip().lower() in ("1", "t", "true")


def call_seconds(environ=None) -> int:
    """The duration one training call asks for: ``STUDIO_ZEROGPU_CALL_S`` (whole seconds > 0), else 60."""
    raw = (environ if environ is not None else os.environ).get(CALL_ENV, "").strip()
    try:
        value = int(float(raw)) if raw else DEFAULT_CALL_S
    except ValueError:
        return DEFAULT_CALL_S
    return value if value > 0 else DEFAULT_CALL_S


class HardwareError(StudioError):
    """This hardware cannot train the run; the message says what to choose instead."""


@dataclass(frozen=True)
class Hardware:
    """What the app found: ZeroGPU or not, whether the `spaces` package is installed, the call length."""

    zerogpu: bool
    spaces_installed: bool
    call_s: int

    def describe(self) -> str:
        """One line for the Settings tab and the log."""
        if not self.zerogpu:
            return "No ZeroGPU: training runs as one background job on this machine's CPU or GPU."
        if not self.spaces_installed:
            return ("ZeroGPU hardware, but the `spaces` package is missing: add `spaces` to requirements.txt, "
                    "or no GPU is lent and everything runs on the CPU.")
        return (f"ZeroGPU: a GPU is lent per call; training runs in calls of up to {self.call_s} s "
                f"(setting {CALL_ENV}), resuming from a checkpoint between calls; chat and evaluation "
                "each run in a call.")


def detect(environ=None) -> Hardware:
    """The hardware this process runs on (read from the environment at each call)."""
    return Hardware(zerogpu=on_zerogpu(environ), spaces_installed=importlib.util.find_spec("spaces") is not None,
                    call_s=call_seconds(environ))


@dataclass(frozen=True)
class TrainingPlan:
    """How a run will train: "direct" (one background job, off ZeroGPU), "chunked" (GPU calls with a
    checkpoint between them) or "refused"; `reason` says why in words a Space owner can act on."""

    mode: str
    reason: str
    call_s: int = 0

    @property
    def refused(self) -> bool:
        """Whether the run may not train on this hardware (`reason` says what to choose)."""
        return self.mode == "refused"


HARDWARE_ADVICE = ("choose dedicated GPU hardware for the Space instead of ZeroGPU (Settings → Space hardware: "
                   "an Nvidia L4, A10G or A100), where a run holds its GPU from start to end")


def plan_training(method: str, params_b: float | None, hardware: Hardware | None = None) -> TrainingPlan:
    """Decide how a run of `method` ("lora", "qlora", "full"; DoRA is LoRA here) on a model of `params_b`
    billion parameters (None: unknown) trains on `hardware` (default: `detect()`).

    On ZeroGPU each call loads the model (and, for a full fine-tune, the optimizer state) and saves a
    checkpoint before it ends: that must take at most half a call at ~1 GB/s, and the training must fit
    the 70 GB slice. QLoRA is refused: its 4-bit weights are made on the GPU while the model loads,
    which ZeroGPU's worker does not support between calls."""
    hw = hardware or detect()
    if not hw.zerogpu:
        return TrainingPlan("direct", hw.describe())
    call_s = hw.call_s
    if method == "qlora":
        return TrainingPlan("refused", "QLoRA cannot train on ZeroGPU: its 4-bit weights are made on the GPU as "
                                       "the model loads, and ZeroGPU lends the GPU only inside each short call. "
                                       f"Choose LoRA (it fits the 70 GB ZeroGPU slice), or {HARDWARE_ADVICE}.", call_s)
    kind = "full" if method == "full" else "lora"
    if params_b is None:
        return TrainingPlan("chunked", f"Training runs in ZeroGPU calls of up to {call_s} s with a checkpoint "
                                       "between calls (model size unknown: a call that cannot fit one step fails "
                                       "with a message).", call_s)
    memory_gb = params_b * MEMORY_BYTES[kind]
    if memory_gb > ZEROGPU_MEMORY_GB:
        what = "A full fine-tune" if kind == "full" else "LoRA"
        return TrainingPlan("refused", f"{what} of a {params_b:g}B model needs about {memory_gb:.0f} GB of GPU "
                                       f"memory, more than ZeroGPU's {ZEROGPU_MEMORY_GB} GB. "
                                       f"{'Choose LoRA, or ' if kind == 'full' else 'Pick a smaller model, or '}"
                                       f"{HARDWARE_ADVICE}.", call_s)
    moved_s = params_b * MOVED_BYTES[kind] / DISK_GB_PER_S
    if moved_s > call_s * LOAD_SHARE:
        what = ("A full fine-tune reads and writes the whole model and its optimizer state"
                if kind == "full" else "LoRA reads the whole base model")
        return TrainingPlan("refused", f"{what} in every ZeroGPU call: about {moved_s:.0f} s for a {params_b:g}B "
                                       f"model, too much of a {call_s} s call to leave time to train. "
                                       f"{'Choose LoRA, or ' if kind == 'full' else ''}{HARDWARE_ADVICE}"
                                       f"{'' if kind == 'full' else f' (or a longer call: {CALL_ENV})'}.", call_s)
    return TrainingPlan("chunked", f"Training runs in ZeroGPU calls of up to {call_s} s, each resuming from the "
                                   f"checkpoint the previous one saved, until the run completes.", call_s)


def training_summary(hardware: Hardware | None = None) -> str:
    """What the app will do with training on this hardware, by method (the Settings tab's hardware line)."""
    hw = hardware or detect()
    if not hw.zerogpu:
        return hw.describe()
    full_b = hw.call_s * LOAD_SHARE * DISK_GB_PER_S / MOVED_BYTES["full"]
    lora_b = min(ZEROGPU_MEMORY_GB / MEMORY_BYTES["lora"], hw.call_s * LOAD_SHARE * DISK_GB_PER_S / MOVED_BYTES["lora"])
    return (f"{hw.describe()} LoRA and DoRA: in calls, models up to about {lora_b:.0f}B parameters; full fine-tune: "
            f"in calls, models up to about {full_b:.1f}B; QLoRA: refused (choose LoRA, or dedicated GPU hardware).")


def check_training(cfg, hardware: Hardware | None = None) -> TrainingPlan:
    """The plan for a RunConfig; raises HardwareError (the message says what hardware to choose) when refused."""
    hw = hardware or detect()
    params_b = None
    if hw.zerogpu:
        try:
            from finetune_core.models.sources import count_params_b

            params_b = count_params_b(cfg.model)
        except Exception:  # noqa: BLE001 - an unknown size is planned for, not a reason to refuse
            params_b = None
    plan = plan_training(cfg.method, params_b, hw)
    if plan.refused:
        raise HardwareError(plan.reason)
    return plan


# -- GPU calls ------------------------------------------------------------------------------------------------

class GPUTaskAborted(RuntimeError):
    """What `StandInGPU` raises when a call outlives its duration (the real decorator raises a gradio
    error with the same words)."""


@dataclass
class StandInGPU:
    """A stand-in for ``spaces.GPU`` (tests, and trying the chunked loop off ZeroGPU): `decorate(fn, duration)`
    returns fn wrapped so that each call is recorded in `calls` ({"name", "duration", "elapsed", "aborted"}),
    its arguments and result must pickle (they cross a process boundary on ZeroGPU), and a call that ran
    past its duration raises GPUTaskAborted("GPU task aborted") — after the fact: a thread cannot be killed,
    so its result is discarded instead. `duration` may be a callable of the call's arguments, as in spaces."""

    check_pickle: bool = True
    clock: Callable[[], float] = time.monotonic
    calls: list = field(default_factory=list)

    def decorate(self, fn: Callable, duration=None) -> Callable:
        """fn as a recorded, time-limited call (a generator function stays one), like spaces.GPU(fn, duration)."""
        def limit_of(args, kwargs) -> float:
            value = duration(*args, **kwargs) if callable(duration) else duration
            return float(value or DEFAULT_CALL_S)

        def begin(args, kwargs) -> dict:
            if self.check_pickle:
                pickle.dumps((args, kwargs))
            record = {"name": fn.__name__, "duration": limit_of(args, kwargs), "aborted": False,
                      "started": self.clock()}
            self.calls.append(record)
            return record

        def check(record: dict, value=None):
            record["elapsed"] = self.clock() - record["started"]
            if record["elapsed"] > record["duration"]:
                record["aborted"] = True
                raise GPUTaskAborted("GPU task aborted")
            if self.check_pickle:
                pickle.dumps(value)
            return value

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def stream(*args, **kwargs):
                record = begin(args, kwargs)
                for item in fn(*args, **kwargs):
                    yield check(record, item)
                check(record)
            return stream

        @functools.wraps(fn)
        def call(*args, **kwargs):
            record = begin(args, kwargs)
            return check(record, fn(*args, **kwargs))
        return call


def gpu_decorator() -> Callable | None:
    """``spaces.GPU`` on ZeroGPU with the package installed, else None (no decorator)."""
    if not on_zerogpu() or importlib.util.find_spec("spaces") is None:
        return None
    import spaces

    return lambda fn, duration=None: spaces.GPU(fn, duration=duration)


def gpu_call(fn: Callable, duration=DEFAULT_CALL_S, decorator=None) -> Callable:
    """fn run in a GPU call of at most `duration` seconds (a number, or a callable of fn's arguments):
    decorated with `decorator` (a StandInGPU or its `decorate`) when given, else with ``spaces.GPU`` on
    ZeroGPU, else fn itself. Call it when the app is built: spaces looks for decorated functions at startup."""
    if isinstance(decorator, StandInGPU):
        decorator = decorator.decorate
    decorator = decorator or gpu_decorator()
    return fn if decorator is None else decorator(fn, duration)


def call_duration(*_args, **_kwargs) -> float:
    """The duration a chat turn or an evaluation asks for: the call length setting, read at each call."""
    return call_seconds()


@functools.cache
def worker_models():
    """The models of ZeroGPU's worker process (a forked worker cannot reach the app's cache: it loads its own
    copy, kept while the worker lives). Off ZeroGPU nothing calls it."""
    from finetune_core.inference.model_cache import ModelCache

    return ModelCache()


def stream_pair_call(key: str, base_messages, tuned_messages, settings):
    """One chat turn's generation in a GPU call: the model by its cache key, the two prompts and the
    GenSettings in (plain values), (base_text, tuned_text) snapshots out."""
    yield from worker_models().get(key).stream_pair(base_messages, tuned_messages, settings, None)


class GPUCallModel:
    """Stands for an InferenceModel in a chat turn on ZeroGPU: what is read before generating (has_tuned,
    the token counter) comes from the app's copy; `stream_pair` runs in a GPU call that gets plain values.
    A Stop ends the turn here at once; the call ends with the answer it was generating."""

    def __init__(self, model, key: str, stream: Callable):
        self.model, self.key, self.stream = model, key, stream

    def __getattr__(self, name):
        return getattr(self.model, name)  # has_tuned, counter, ...: the app's copy answers

    def stream_pair(self, base_messages, tuned_messages, settings=None, cancel: threading.Event | None = None):
        """(base_text, tuned_text) snapshots from the GPU call, as InferenceModel.stream_pair yields them."""
        for pair in self.stream(self.key, base_messages, tuned_messages, settings):
            yield pair
            if cancel is not None and cancel.is_set():
                return


def in_gpu_calls(model, key: str, stream: Callable | None = None):
    """`model` itself off ZeroGPU; on ZeroGPU (or with `stream`, a decorated `stream_pair_call`) the
    stand-in whose generation runs in GPU calls."""
    if stream is None:
        if not on_zerogpu():
            return model
        stream = STREAM_PAIR_CALL
    return GPUCallModel(model, key, stream)


# decorated once, at import (the app imports this module when it is built): spaces looks for its
# decorated functions at startup
STREAM_PAIR_CALL = gpu_call(stream_pair_call, call_duration)
