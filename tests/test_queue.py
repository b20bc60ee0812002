"""The run queue: runs wait their turn in a file that outlives the app, start one at a time in order,
can be cancelled, resume after a restart, and can train as their own processes that the app re-attaches to."""
from __future__ import annotations

import json
import time

import pytest

from conftest import toy_rows
from finetune_core.config import RunConfig
from finetune_core.data.dataset import write_jsonl
from finetune_core.training.launcher import STOP_FILE
from finetune_core.runs.ownership import AccessError, Visitor
from finetune_core.training.queue import QueueError, RunQueue
from finetune_core.runs.store import get_run, list_runs
from finetune_core.training.runner import TrainingSlot


def _cfg(tmp_path, model_dir, **kw) -> RunConfig:
    data = tmp_path / "toy.jsonl"
    if not data.exists():
        write_jsonl(data, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                           for r in toy_rows(24)])
    base = dict(model=str(model_dir), data_path=str(data), batch_size=4, lora_r=4, lora_alpha=8, max_steps=2,
                learning_rate=1e-3, logging_steps=1, eval_fraction=0.2)
    return RunConfig.from_dict({**base, **kw})


def test_runs_wait_their_turn_and_finish_in_the_order_queued(tmp_path, tiny_model_dir, runs_root):
    queue = RunQueue(TrainingSlot())
    runs = [queue.enqueue(_cfg(tmp_path, tiny_model_dir), name=f"run {n}")[0] for n in range(3)]
    assert [i["run"] for i in queue.items()] == [r.id for r in runs] and queue.position(runs[2].id) == 3
    assert {r.status()["state"] for r in runs} == {"waiting"}
    assert queue.dispatch_once() == runs[0]
    assert queue.dispatch_once() is None or queue.running() is None  # one run at a time
    assert get_run(runs[1].id).status()["state"] == "waiting"
    assert queue.wait_idle(240)
    started = [r.status()["started"] for r in runs]
    assert [r.status()["state"] for r in runs] == ["completed"] * 3 and started == sorted(started)
    assert json.loads((runs_root / "queue.json").read_text())["waiting"] == []


def test_a_cancelled_run_never_starts_and_only_its_owner_may_cancel_it(tmp_path, tiny_model_dir, runs_root,
                                                                        monkeypatch):
    monkeypatch.setenv("STUDIO_REQUIRE_LOGIN", "1")
    queue = RunQueue(TrainingSlot())
    ann, bob = Visitor(user="ann"), Visitor(user="bob")
    run, position = queue.enqueue(_cfg(tmp_path, tiny_model_dir), owner=ann.owner_record(), who=ann)
    assert position == 1
    with pytest.raises(AccessError):
        queue.cancel(run.id, bob)
    queue.cancel(run.id, ann)
    assert run.status()["state"] == "cancelled" and queue.items() == []
    assert queue.dispatch_once() is None and run.status()["state"] == "cancelled"
    with pytest.raises(QueueError, match="not waiting"):
        queue.cancel(run.id, ann)


def test_on_a_public_space_queues_are_capped_per_visitor_processes_and_online_trackers_are_for_admins(
        tmp_path, tiny_model_dir, runs_root, monkeypatch):
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    monkeypatch.setenv("STUDIO_LIMIT_QUEUED_RUNS_PER_USER", "2")
    queue, who = RunQueue(TrainingSlot()), Visitor(browser="b" * 64)
    for _ in range(2):
        queue.enqueue(_cfg(tmp_path, tiny_model_dir), owner=who.owner_record(), who=who)
    with pytest.raises(QueueError, match="2 runs waiting.*STUDIO_LIMIT_QUEUED_RUNS_PER_USER"):
        queue.enqueue(_cfg(tmp_path, tiny_model_dir), owner=who.owner_record(), who=who)
    queue.enqueue(_cfg(tmp_path, tiny_model_dir), who=Visitor(browser="c" * 64))  # another visitor still can
    with pytest.raises(AccessError, match="launcher: 'process' runs are for admins"):
        queue.enqueue(_cfg(tmp_path, tiny_model_dir, launcher="process"), who=Visitor(browser="c" * 64))
    monkeypatch.setenv("WANDB_API_KEY", "the-owners-key")  # a visitor's run must not land in the owner's account
    with pytest.raises(AccessError, match="report_to: wandb would send the run to this server's own online acc"):
        queue.enqueue(_cfg(tmp_path, tiny_model_dir, report_to="wandb"), who=Visitor(browser="c" * 64))
    monkeypatch.setenv("TRACKIO_SPACE_ID", "owner/trackio")
    with pytest.raises(AccessError, match="report_to: trackio would send"):
        queue.enqueue(_cfg(tmp_path, tiny_model_dir, report_to="trackio"), who=Visitor(browser="c" * 64))
    monkeypatch.setenv("STUDIO_ADMINS", "root")
    queue.enqueue(_cfg(tmp_path, tiny_model_dir, launcher="process"), who=Visitor(user="root"))
    assert len(queue.items()) == 4


def test_the_queue_survives_a_restart_and_resumes_the_run_the_restart_cut_short(tmp_path, tiny_model_dir,
                                                                                runs_root):
    queue = RunQueue(TrainingSlot())
    cut, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir), name="cut short")
    later, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir), name="later")
    # what an app killed mid-run leaves: the run "running" under a pid that is gone, recorded as active
    with queue._state() as state:
        state["waiting"] = [item for item in state["waiting"] if item["run"] != cut.id]
        state["active"] = {"run": cut.id, "pid": 0, "launcher": "thread", "owner": "local"}
    cut.set_status(state="running", pid=2 ** 22 + 7, step=1)
    restarted = RunQueue(TrainingSlot())  # TrainingSlot() marks the orphan interrupted, as at app start
    assert [(i["run"], i["resume"]) for i in restarted.items()] == [(cut.id, True), (later.id, False)]
    assert "after the app restarted" in cut.status()["reason"]
    assert restarted.wait_idle(240)
    assert cut.status()["state"] == "completed" and later.status()["state"] == "completed"
    assert later.status()["started"] > cut.status()["resumed"]


def test_a_completed_run_that_asked_for_it_is_evaluated_before_the_next_starts(tmp_path, tiny_model_dir, runs_root):
    seen = []
    queue = RunQueue(TrainingSlot(), on_finished=lambda run: seen.append((run.id, run.status()["state"],
                                                                          queue.running())))
    first, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir, evaluate_after=True))
    second, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir))
    assert queue.wait_idle(240)
    assert seen == [(first.id, "completed", None)]  # evaluated once, while nothing else trained
    assert second.status()["started"] > first.status()["finished"]
    assert "Evaluation finished." in first.log_tail()


def test_a_process_run_outlives_the_app_is_reattached_and_stops_on_request(tmp_path, tiny_model_dir, runs_root):
    queue = RunQueue(TrainingSlot(), poll=0.2)
    run, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir, launcher="process", max_steps=400, save_steps=5,
                                save_total_limit=3))
    assert queue.dispatch_once() == run
    deadline = time.time() + 180
    while run.status().get("step", 0) < 2 and time.time() < deadline:
        time.sleep(0.3)
    assert run.status()["state"] == "running", run.path.joinpath("process.log").read_text()[-2000:]
    pid = run.status()["pid"]
    del queue  # "the app closes": its process is not the run's
    restarted = RunQueue(TrainingSlot(), poll=0.2)
    assert restarted.running() == run and run.status()["state"] == "running" and run.status()["pid"] == pid
    assert "re-attached" in run.log_tail()
    restarted.stop_running(Visitor())
    assert restarted.wait_idle(120)
    status = run.status()
    assert status["state"] == "stopped" and 2 <= status["step"] < 400
    assert (run.checkpoints_dir / f"checkpoint-{status['step']}").is_dir()  # resumable from where it stopped
    assert not (run.path / STOP_FILE).exists()
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == list(range(1, status["step"] + 1))


@pytest.mark.slow
def test_two_cpu_processes_under_torchrun_train_one_queued_run(tmp_path, tiny_model_dir, runs_root):
    queue = RunQueue(TrainingSlot(), poll=0.3)
    run, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir, launcher="torchrun", num_processes=2, max_steps=3,
                                device="cpu"))
    assert queue.wait_idle(420), (run.path / "process.log").read_text()[-3000:]
    assert run.status()["state"] == "completed", (run.path / "process.log").read_text()[-3000:]
    assert run.run_yaml()["world_size"] == 2
    assert [m["step"] for m in run.metrics() if "loss" in m] == [1, 2, 3]  # rank 0 alone writes
    assert run.has_adapter()


def test_a_launch_this_machine_cannot_do_is_refused_before_a_run_exists(tmp_path, tiny_model_dir, runs_root,
                                                                       monkeypatch):
    from finetune_core.training.launcher import LaunchError

    queue = RunQueue(TrainingSlot())
    with pytest.raises(LaunchError, match="num_processes: accelerate launch starts one process on a CPU"):
        queue.enqueue(_cfg(tmp_path, tiny_model_dir, launcher="accelerate", num_processes=2, device="cpu"))
    with pytest.raises(Exception, match="num_processes: 2 processes need launcher torchrun or accelerate"):
        _cfg(tmp_path, tiny_model_dir, launcher="process", num_processes=2)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with pytest.raises(LaunchError, match="launcher: on ZeroGPU hardware"):
        queue.enqueue(_cfg(tmp_path, tiny_model_dir, launcher="process"))
    assert not runs_root.exists() or not any(runs_root.glob("2*"))
    monkeypatch.delenv("SPACES_ZERO_GPU")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(LaunchError, match="num_processes: 3 CPU processes, but this machine has 2 cores"):
        queue.enqueue(_cfg(tmp_path, tiny_model_dir, launcher="torchrun", num_processes=3, device="cpu"))
    assert not runs_root.exists() or not any(runs_root.glob("2*"))


def test_a_run_that_cannot_start_fails_with_its_reason_and_the_next_one_starts(tmp_path, tiny_model_dir, runs_root,
                                                                               monkeypatch):
    from finetune_core.training import queue as queue_module
    from finetune_core.training.launcher import LaunchError

    def refuse(run, cfg, resume=False):
        raise LaunchError("torchrun: not found on this machine's PATH.")

    monkeypatch.setattr(queue_module, "spawn", refuse)
    queue = RunQueue(TrainingSlot())
    bad, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir, launcher="process"), name="bad")
    good, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir), name="good")
    assert queue.dispatch_once() == good  # the bad one is set aside, not retried for ever
    status = bad.status()
    assert status["state"] == "failed" and status["reason"] == "could not start: torchrun: not found on this " \
                                                               "machine's PATH."
    assert "Could not start: torchrun" in bad.log_tail()
    assert queue.wait_idle(240) and good.status()["state"] == "completed" and queue.items() == []


def test_pages_read_the_queue_while_a_finished_run_is_evaluated_and_nothing_starts_meanwhile(tmp_path,
                                                                                            tiny_model_dir, runs_root):
    import threading

    seen = {}

    def evaluate(run):
        reader = threading.Thread(target=lambda: seen.update(items=queue.items(), running=queue.running()))
        reader.start()
        reader.join(10)  # a page's timer: must not wait for the evaluation
        seen["answered"] = not reader.is_alive()
        seen["evaluating"] = json.loads((runs_root / "queue.json").read_text())["evaluating"]["run"]
        seen["started"] = queue.dispatch_once(evaluate=False)  # a Train press meanwhile starts nothing

    queue = RunQueue(TrainingSlot(), on_finished=evaluate)
    first, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir, evaluate_after=True))
    second, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir))
    assert queue.wait_idle(240)
    assert seen["answered"] and seen["evaluating"] == first.id and seen["started"] is None
    assert [i["run"] for i in seen["items"]] == [second.id] and seen["running"] is None
    assert second.status()["started"] > first.status()["finished"]


def test_a_thread_run_of_another_live_process_is_left_alone_and_a_reused_pid_is_not_taken_for_it(
        tmp_path, tiny_model_dir, runs_root):
    import subprocess
    import sys

    from finetune_core.training.launcher import process_started

    queue = RunQueue(TrainingSlot())
    other_apps_run, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir), name="the app's")
    waiting, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir), name="next")
    app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # the app, training
    try:
        entry = {"run": other_apps_run.id, "pid": app.pid, "started": process_started(app.pid), "launcher": "thread"}
        with queue._state() as state:
            state["waiting"] = [i for i in state["waiting"] if i["run"] != other_apps_run.id]
            state["active"] = entry
        other_apps_run.set_status(state="running", pid=app.pid, step=1)
        cli = RunQueue(TrainingSlot())  # e.g. `queue list` beside the app
        assert cli.running() == other_apps_run and other_apps_run.status()["state"] == "running"
        assert cli.dispatch_once() is None and waiting.status()["state"] == "waiting"
        # the same pid with another start time: a process the system gave the pid to after a restart
        with queue._state() as state:
            state["active"] = {**entry, "started": "1"}
        first = RunQueue(TrainingSlot()).items()[0]
        assert (first["run"], first["resume"]) == (other_apps_run.id, True)
    finally:
        app.kill()
        app.wait()


def test_resume_is_checked_under_the_lock_and_counts_against_the_visitors_limit(tmp_path, tiny_model_dir, runs_root,
                                                                                monkeypatch):
    queue = RunQueue(TrainingSlot())
    run, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir))
    queue.cancel(run.id)
    with pytest.raises(QueueError, match="is cancelled; only stopped, failed or interrupted runs can be resumed"):
        queue.resume(run)
    run.set_status(state="stopped")
    assert queue.resume(run) == 1
    with pytest.raises(QueueError, match="already in the queue or training"):
        queue.resume(run)  # a second press
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    monkeypatch.setenv("STUDIO_LIMIT_QUEUED_RUNS_PER_USER", "1")
    who = Visitor(browser="d" * 64)
    queue.enqueue(_cfg(tmp_path, tiny_model_dir), owner=who.owner_record(), who=who)
    eve = Visitor(browser="e" * 64)
    other, _ = queue.enqueue(_cfg(tmp_path, tiny_model_dir), owner=eve.owner_record(), who=eve)
    queue.cancel(other.id, eve)
    other.set_status(state="stopped")
    with pytest.raises(QueueError, match="You already have 1 runs waiting; 1 more would pass"):
        queue.resume(other, who)


def test_a_group_that_fails_midway_leaves_nothing_queued(tmp_path, tiny_model_dir, runs_root, monkeypatch):
    from finetune_core.training import queue as queue_module

    original, calls = queue_module.create_run, []

    def create(*args, **kwargs):  # the second run of the group cannot be made
        calls.append(1)
        if len(calls) > 1:
            raise OSError("No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(queue_module, "create_run", create)
    queue = RunQueue(TrainingSlot())
    entries = [{"cfg": _cfg(tmp_path, tiny_model_dir), "name": f"r{n}"} for n in range(2)]
    with pytest.raises(OSError, match="No space left"):
        queue.enqueue_many(entries)
    assert queue.items() == [] and [r.status()["state"] for r in list_runs()] == ["cancelled"]
