"""ZeroGPU: the hardware decision, and a run trained in GPU calls through the stand-in decorator."""
from __future__ import annotations

import threading

import pytest

from conftest import toy_rows
from finetune_core import zerogpu
from finetune_core.training import in_calls
from finetune_core.config import RunConfig
from finetune_core.data.dataset import write_jsonl
from finetune_core.runs.store import create_run

ZERO = zerogpu.Hardware(zerogpu=True, spaces_installed=True, call_s=60)
PLAIN = zerogpu.Hardware(zerogpu=False, spaces_installed=False, call_s=60)


@pytest.mark.parametrize("value, expected", [("true", True), ("True", True), ("1", True), ("t", True),
                                             ("false", False), ("", False), (None, False)])
def test_detects_zerogpu_as_spaces_does(value, expected):
    env = {} if value is None else {"SPACES_ZERO_GPU": value}
    assert zerogpu.on_zerogpu(env) is expected
    assert zerogpu.detect(env).zerogpu is expected


def test_call_length_setting():
    assert zerogpu.call_seconds({}) == 60
    assert zerogpu.call_seconds({"STUDIO_ZEROGPU_CALL_S": "120"}) == 120
    assert zerogpu.call_seconds({"STUDIO_ZEROGPU_CALL_S": "soon"}) == 60


@pytest.mark.parametrize("method, params_b, mode, words", [
    ("lora", 0.135, "chunked", "calls of up to 60 s"),
    ("lora", 7, "chunked", "until the run completes"),
    ("dora", 1.7, "chunked", "checkpoint"),
    ("lora", None, "chunked", "model size unknown"),
    ("full", 0.135, "chunked", "calls"),
    ("full", 1.7, "refused", "optimizer state"),   # 41 s of 60 reading and writing: no time left to train
    ("full", 8, "refused", "GB of GPU memory"),
    ("lora", 40, "refused", "GB of GPU memory"),
    ("qlora", 0.5, "refused", "QLoRA cannot train on ZeroGPU"),
])
def test_plan_on_zerogpu(method, params_b, mode, words):
    plan = zerogpu.plan_training(method, params_b, ZERO)
    assert plan.mode == mode and words in plan.reason, plan
    if mode == "refused":
        assert "dedicated GPU hardware" in plan.reason or "Choose LoRA" in plan.reason


def test_longer_calls_allow_a_bigger_full_fine_tune():
    longer = zerogpu.Hardware(zerogpu=True, spaces_installed=True, call_s=300)
    assert zerogpu.plan_training("full", 1.7, longer).mode == "chunked"


def test_off_zerogpu_everything_trains_directly():
    for method in ("lora", "qlora", "full"):
        assert zerogpu.plan_training(method, 70, PLAIN).mode == "direct"


def test_check_training_refuses_with_the_hardware_to_choose(tiny_model_dir):
    cfg = RunConfig.from_dict({"model": str(tiny_model_dir), "data_path": "x.jsonl", "method": "qlora"})
    with pytest.raises(zerogpu.HardwareError, match="dedicated GPU hardware"):
        zerogpu.check_training(cfg, ZERO)
    assert zerogpu.check_training(cfg, PLAIN).mode == "direct"


def test_gpu_call_is_fn_itself_off_zerogpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def answer():
        return 42
    assert zerogpu.gpu_call(answer, 30) is answer


def test_stand_in_records_calls_and_aborts_overlong_ones():
    now = [0.0]
    gpu = zerogpu.StandInGPU(clock=lambda: now[0])

    def quick(x):
        now[0] += 5
        return x * 2

    def slow(x):
        now[0] += 61
        return x

    def tokens(n):
        for i in range(n):
            now[0] += 20
            yield i

    assert zerogpu.gpu_call(quick, 60, gpu)(4) == 8
    with pytest.raises(zerogpu.GPUTaskAborted, match="GPU task aborted"):
        zerogpu.gpu_call(slow, 60, gpu)(1)
    stream = zerogpu.gpu_call(tokens, 50, gpu)(5)
    assert next(stream) == 0 and next(stream) == 1
    with pytest.raises(zerogpu.GPUTaskAborted):
        next(stream)
    assert [(c["name"], c["aborted"]) for c in gpu.calls] == [("quick", False), ("slow", True), ("tokens", True)]
    with pytest.raises(Exception):  # a lock cannot cross to ZeroGPU's worker process
        zerogpu.gpu_call(quick, 60, gpu)(threading.Lock())


def test_call_failures_say_what_happened_and_what_to_do():
    aborted = in_calls.call_failure(RuntimeError("GPU task aborted"), 3, 60, 4)
    assert "GPU call 3 ran past its 60 s limit" in aborted and "checkpoint at step 4" in aborted
    quota = in_calls.call_failure(RuntimeError("You have exceeded your ZeroGPU quota (60s requested vs. 10s left)"),
                                 2, 60, 2)
    assert "quota" in quota and "Resume" in quota
    illegal = in_calls.call_failure(RuntimeError("The requested GPU duration (900s) is larger than the maximum "
                                                "allowed"), 1, 900, 0)
    assert "STUDIO_ZEROGPU_CALL_S" in illegal


# -- a run trained in GPU calls ------------------------------------------------------------------------------------

def _run(model_dir, **kw):
    cfg = RunConfig.from_dict(dict(model=str(model_dir), data_path="toy.jsonl", max_steps=6, batch_size=4,
                                   learning_rate=5e-3, lora_r=4, lora_alpha=8, lora_dropout=0.0, logging_steps=1,
                                   save_steps=0, precision="float32", eval_steps=0, **kw))
    run = create_run(cfg)
    rows = toy_rows(24)
    write_jsonl(run.data_dir / "train.jsonl", rows[:20])
    write_jsonl(run.data_dir / "heldout.jsonl", rows[20:])
    from finetune_core.runs.store import write_json_atomic
    write_json_atomic(run.data_dir / "report.json", {"format": "prompt_completion", "rows": 24})
    return run


def test_six_steps_in_three_calls_of_two(tiny_model_dir, runs_root):
    gpu = zerogpu.StandInGPU()
    run = _run(tiny_model_dir)
    status = in_calls.train_in_calls(run, threading.Event(), decorator=gpu, call_s=600, steps_per_call=2)
    assert status["state"] == "completed" and status["step"] == 6, status
    assert status["reason"] == "completed 6 steps in 3 GPU calls"
    assert len(gpu.calls) == 3 and not any(c["aborted"] for c in gpu.calls)
    log = run.log_path.read_text()
    for line in ("GPU call 1: steps 1–2", "GPU call 2: steps 3–4", "GPU call 3: steps 5–6"):
        assert line in log
    losses = [m for m in run.metrics() if "loss" in m]
    assert [m["step"] for m in losses] == [1, 2, 3, 4, 5, 6]  # each step once: no gap, no repeat
    # the schedule is the whole run's (linear decay over 6 steps, restored by each resume), not one per call
    rates = [m["learning_rate"] for m in losses]
    steps = [a - b for a, b in zip(rates, rates[1:])]
    assert all(d > 0 for d in steps) and steps == pytest.approx([steps[0]] * 5), rates
    assert run.has_adapter() and not (run.path / in_calls.STOP_FILE).exists()
    _chat_and_evaluate_in_calls(run)


def _chat_and_evaluate_in_calls(run):
    """The trained run answers in chat and is evaluated through decorated calls whose arguments and
    results pickle (they cross to ZeroGPU's worker process)."""
    from evaluation.run_eval import evaluate_in_call, evaluate_on_gpu
    from finetune_core.inference import chat
    from finetune_core.inference.generation import GenSettings
    from finetune_core.inference.model_cache import ModelCache

    gpu = zerogpu.StandInGPU()
    key = f"run:{run.id}"
    model = zerogpu.in_gpu_calls(ModelCache().get(key), key, zerogpu.gpu_call(zerogpu.stream_pair_call, 60, gpu))
    session = chat.ChatSession()
    try:
        replies = list(chat.stream_chat(model, session, "Which colour?", GenSettings(max_new_tokens=3)))
    finally:
        zerogpu.worker_models.cache_clear()
    assert replies and [c["name"] for c in gpu.calls] == ["stream_pair_call"]
    assert len(session.base_history) == len(session.tuned_history) == 2  # the turn was recorded in the app
    comparison = zerogpu.gpu_call(evaluate_in_call, 60, gpu)(str(run.path), {"limit": 2, "max_new_tokens": 3})
    assert comparison.rows == 2 and (run.path / "eval").is_dir()
    assert [c["name"] for c in gpu.calls] == ["stream_pair_call", "evaluate_in_call"]
    assert evaluate_on_gpu(run, {"limit": 2}) is None  # off ZeroGPU the Evaluate tab evaluates as before


def test_a_call_over_its_budget_fails_the_run_clearly(tiny_model_dir, runs_root):
    now = [0.0]

    def clock():  # every reading advances 10 s: the first call outlives its 60 s
        now[0] += 10
        return now[0]

    gpu = zerogpu.StandInGPU(clock=clock)
    run = _run(tiny_model_dir)
    status = in_calls.train_in_calls(run, threading.Event(), decorator=gpu, call_s=5, steps_per_call=2)
    assert status["state"] == "failed"
    assert "GPU call 1 ran past its 5 s limit and ZeroGPU aborted it" in status["reason"]
    assert "Resume continues from it" in status["reason"]
    assert "FAILED: GPU call 1" in run.log_path.read_text()


def test_stop_between_calls_ends_stopped(tiny_model_dir, runs_root):
    gpu = zerogpu.StandInGPU()
    run = _run(tiny_model_dir)
    stop = threading.Event()
    real = in_calls.train_call

    def then_stop(*args, **kwargs):
        out = real(*args, **kwargs)
        stop.set()  # Stop pressed during the first call, seen once it ended
        return out

    import unittest.mock as mock
    with mock.patch.object(in_calls, "train_call", then_stop):
        status = in_calls.train_in_calls(run, stop, decorator=gpu, call_s=600, steps_per_call=2)
    assert status["state"] == "stopped" and status["step"] == 2 and len(gpu.calls) == 1
