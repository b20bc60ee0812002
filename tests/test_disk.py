"""Disk safety of a long-running public deployment (issue #16): retention of uploads,
exports and Gradio's cache (never runs), downloads written once, a full disk while
training, and the first start time kept across resumes.

    .venv/bin/python -m pytest -q -m "" tests/test_disk.py
"""
from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from finetune_core.retention import Area, Policy, Sweeper, gradio_cache_dir, sweep

MB = 1024 * 1024
HOUR = 3600.0


def _file(path: Path, size: int = 10, stamp: float | None = None) -> Path:
    """A file of `size` bytes whose mtime is `stamp` (its age stamp when later than its ctime)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if stamp is not None:
        os.utime(path, (stamp, stamp))
    return path


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    """Private uploads, exports, runs and Gradio cache folders."""
    dirs = {name: tmp_path / name for name in ("uploads", "gradio", "runs")}
    monkeypatch.setenv("STUDIO_UPLOADS_DIR", str(dirs["uploads"]))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(dirs["gradio"]))
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(dirs["runs"]))
    monkeypatch.delenv("STUDIO_EXPORTS_DIR", raising=False)
    monkeypatch.delenv("STUDIO_REQUIRE_LOGIN", raising=False)
    monkeypatch.delenv("APP_AUTH", raising=False)
    return dirs


# -- retention -------------------------------------------------------------------------------------
def test_gradio_cache_dir_is_gradios_own(monkeypatch, tmp_path):
    from gradio.utils import get_upload_folder

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    assert gradio_cache_dir() == Path(get_upload_folder()).resolve()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "g"))
    assert gradio_cache_dir() == Path(get_upload_folder()).resolve()


def test_sweep_removes_old_then_oldest_until_under_cap_but_never_fresh(tmp_path):
    now = time.time() + 100 * HOUR  # ages are set with future mtimes: a test cannot backdate ctime
    folder = tmp_path / "exports"
    _file(folder / "a" / "old.zip", 100, now - 30 * HOUR)  # past the age limit
    _file(folder / "b" / "big.zip", 3 * MB, now - 10 * HOUR)
    _file(folder / "c" / "big.zip", 3 * MB, now - 5 * HOUR)
    _file(folder / "d" / "writing.zip", 3 * MB, now - 60)  # younger than the grace period
    _file(folder / "e.jsonl", 10, now - 2 * HOUR)
    policy = Policy(max_age_s=24 * HOUR, max_bytes=5 * MB, grace_s=600)
    report = sweep(Area("exports", folder, policy), now=now)
    # a (age), then oldest first until the folder fits: b, c; d is fresh, so it stays even over the cap
    assert report.removed == ["a", "b", "c"]
    assert sorted(p.name for p in folder.iterdir()) == ["d", "e.jsonl"]
    assert report.freed_bytes == 100 + 6 * MB and report.kept_bytes == 3 * MB + 10


def test_sweep_never_removes_runs_or_files_in_use(tmp_path, monkeypatch):
    now = time.time() + 100 * HOUR
    folder = tmp_path / "gradio"
    runs = folder / "runs"  # a deployment that put its runs inside a swept folder
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(runs))
    _file(runs / "20260101-000000-x-abcdef" / "adapter" / "w.safetensors", 2 * MB, now - 90 * HOUR)
    in_use = _file(folder / "h1" / "train.jsonl", 2 * MB, now - 90 * HOUR)
    _file(folder / "h2" / "old.csv", 10, now - 90 * HOUR)
    report = sweep(Area("gradio-cache", folder, Policy(max_age_s=HOUR, max_bytes=1, grace_s=0)),
                   protected=[in_use], now=now)
    assert report.removed == ["h2"]
    assert (runs / "20260101-000000-x-abcdef" / "adapter" / "w.safetensors").is_file() and in_use.is_file()


def test_policy_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("STUDIO_RETENTION_HOURS", "6")
    monkeypatch.setenv("STUDIO_RETENTION_MB", "100")
    monkeypatch.setenv("STUDIO_RETENTION_EXPORTS_MB", "2000")
    monkeypatch.setenv("STUDIO_RETENTION_GRACE_MINUTES", "bogus")  # unreadable: the default
    assert Policy.from_env("uploads") == Policy(max_age_s=6 * HOUR, max_bytes=100 * MB, grace_s=600)
    assert Policy.from_env("exports").max_bytes == 2000 * MB


def test_app_sweeper_cleans_uploads_exports_and_gradio_cache(scratch, monkeypatch):
    """The app's sweeper thread sweeps all three folders (fresh files: see the test above)."""
    from ui.context import AppContext

    monkeypatch.setenv("STUDIO_RETENTION_HOURS", str(1 / HOUR))  # one second
    monkeypatch.setenv("STUDIO_RETENTION_GRACE_MINUTES", "0")
    monkeypatch.setenv("STUDIO_SWEEP_MINUTES", "60")
    ctx = AppContext()
    assert ctx.settings.exports_dir.is_relative_to(gradio_cache_dir())
    old = [_file(scratch["uploads"] / "20260101-000000-abc.jsonl"),
           _file(ctx.settings.exports_dir / "tok1" / "run-adapter.zip"),
           _file(scratch["gradio"] / "hash1" / "upload.csv"),
           _file(scratch["gradio"] / "studio-votes-x" / "preferences.jsonl")]
    run_file = _file(scratch["runs"] / "20260101-000000-x-abcdef" / "status.json")
    time.sleep(1.2)
    sweeper = ctx.start_sweeper()
    try:
        assert ctx.start_sweeper() is sweeper and sweeper._thread.is_alive()
        deadline = time.time() + 10
        while any(p.exists() for p in old) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(p.exists() for p in old)
        assert run_file.is_file() and ctx.settings.exports_dir.is_dir()
    finally:
        sweeper.stop()


def test_sweeper_thread_sweeps_again_and_stops(tmp_path):
    folder = tmp_path / "u"
    sweeper = Sweeper([Area("uploads", folder, Policy(max_age_s=0, max_bytes=5, grace_s=0))], interval_s=0.05)
    assert sweeper.start() and not sweeper.start()  # one thread only
    try:
        _file(folder / "late.bin", 10)  # arrives after the first sweep
        deadline = time.time() + 10
        while (folder / "late.bin").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert not (folder / "late.bin").exists()
    finally:
        sweeper.stop()
    assert not sweeper._thread.is_alive()


# -- downloads written once ------------------------------------------------------------------------
def _files_under(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file())


def test_an_export_is_on_disk_once_and_its_size_is_shown(scratch, trained_run, tmp_path, monkeypatch):
    """What Gradio does with a handler's returned path (postprocess, then move to its cache)
    leaves one file: the export itself, served from where it was written."""
    import gradio as gr
    from gradio import processing_utils

    from ui import export_tab
    from ui.context import AppContext

    monkeypatch.chdir(tmp_path)  # the old default exports dir was ./exports
    shutil.copytree(trained_run.path, scratch["runs"] / trained_run.id)
    ctx = AppContext()
    paths = export_tab.download_adapter(ctx, trained_run.id)
    block = gr.File(file_count="multiple")  # made after GRADIO_TEMP_DIR is set: Gradio reads it per block
    served = processing_utils.move_files_to_cache(block.postprocess(paths), block, postprocess=True)
    assert [f["path"] for f in served] == paths
    assert _files_under(scratch["gradio"], tmp_path / "exports") == [Path(paths[0])]
    size = Path(paths[0]).stat().st_size
    assert export_tab.files_note(paths) == (f"Ready to download: `{trained_run.id}-adapter.zip` "
                                            f"({export_tab.size_text(size)}).")
    assert export_tab.size_text(494 * MB) == "494.0 MB" and export_tab.size_text(999) == "999 B"


def test_export_buttons_write_the_sizes_into_the_status_line(scratch):
    import gradio as gr

    from ui import export_tab
    from ui.context import AppContext
    from ui_support import shared_for

    ctx = AppContext()
    with gr.Blocks() as demo:
        export_tab.build(ctx, shared_for(demo))
    status = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "export-status")
    for fn in demo.fns.values():
        if fn.api_name in ("export_adapter", "export_merged", "export_gguf", "export_report"):
            assert status in fn.outputs, fn.api_name


def test_vote_files_are_written_into_gradios_cache(scratch):
    """Served as they are, and swept with the cache (they used to pile up in the system temp dir)."""
    from finetune_core.inference.chat import ChatSession
    from ui import chat_tab

    session = ChatSession()
    session.votes.append({"winner": "tuned", "prompt_tuned": [{"role": "user", "content": "hi"}],
                          "tuned": "hello", "base": "meh"})
    path = Path(chat_tab.export_votes(session))
    assert path.is_file() and path.is_relative_to(gradio_cache_dir())
    assert path.parent.parent == gradio_cache_dir() and path.parent.name.startswith("studio-votes-")


# -- a full disk while training --------------------------------------------------------------------
def _no_space(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.fixture()
def toy_data(tmp_path) -> Path:
    from conftest import toy_rows
    from finetune_core.data.dataset import write_jsonl

    path = tmp_path / "toy.jsonl"
    write_jsonl(path, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(48)])
    return path


def _cfg(model_dir, data, **kw):
    from finetune_core.config import RunConfig

    base = dict(model=str(model_dir), data_path=str(data), max_steps=3, batch_size=4, learning_rate=1e-3,
                lora_r=4, lora_alpha=8, logging_steps=1, save_steps=1, precision="float32")
    return RunConfig.from_dict({**base, **kw})


def _leftovers(run) -> list[str]:
    """Temporary files, half-written adapters and incomplete checkpoints left in a run."""
    from finetune_core.training.train import checkpoints, missing_files

    hidden = [str(p.relative_to(run.path)) for p in run.path.rglob(".*")]
    torn = [p.name for p in checkpoints(run) if missing_files(p, "lora")]
    return hidden + torn


class _AtStep:
    """A Trainer callback calling `action()` once, at the end of step `step` (before ours)."""

    def __new__(cls, step, action):
        from transformers import TrainerCallback

        class AtStep(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    action()

        return AtStep()


def test_disk_full_in_a_checkpoint_fails_cleanly_and_resume_keeps_the_start_time(
        tiny_model_dir, toy_data, scratch, monkeypatch):
    from transformers import Trainer

    from evaluation.report_facts import gather
    from finetune_core.training.runner import TrainingSlot
    from finetune_core.training.train import checkpoints
    from ui.context import AppContext
    from ui.train_tab import resume_training

    original = Trainer._save_optimizer_and_scheduler

    def fills_the_disk(self, output_dir):
        if self.state.global_step == 2:
            (Path(output_dir) / "optimizer.pt").write_bytes(b"half")  # what a cut-short write leaves
            raise _no_space(Path(output_dir) / "optimizer.pt")
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fills_the_disk)
    ctx = AppContext(slot=TrainingSlot())
    run = ctx.slot.start(_cfg(tiny_model_dir, toy_data))
    final = ctx.slot.wait(300)
    assert final["state"] == "failed" and final["reason"].startswith("disk full: could not write optimizer.pt;"), final
    assert run.status()["state"] == "failed" and ctx.slot.active() is None
    assert [p.name for p in checkpoints(run)] == ["checkpoint-1"] and _leftovers(run) == []
    first_start = run.status()["started"]

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", original)  # space freed
    time.sleep(1.1)  # a resume time that differs from the start
    assert resume_training(ctx, run.id) == run.id
    final = ctx.slot.wait(300)
    assert final["state"] == "completed" and final["step"] == 3, final
    assert "Resuming from checkpoint-1" in run.log_tail(80)
    status = run.status()
    assert status["started"] == first_start  # the report covers the whole run, not its resumed part
    assert len(status["resumes"]) == 1 and status["resumed"] == status["resumes"][0] > first_start
    facts = dict(gather(run, with_curve=False).training)
    assert facts["Started"] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first_start))
    assert facts["Resumed"] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["resumed"]))
    assert "Time from first start to finish (pauses included)" in facts and _leftovers(run) == []


def test_disk_full_for_the_status_too_frees_the_slot_and_resume_works_once_space_is_back(
        tiny_model_dir, toy_data, scratch, monkeypatch):
    """Even the final status cannot be written: the slot still ends the job, keeps its final
    status and writes it when the disk takes it; resume does not refuse the run."""
    import builtins

    from finetune_core.runs import store as runs_module
    from finetune_core.training.runner import TrainingSlot
    from ui.context import AppContext
    from ui.train_tab import resume_training

    full = threading.Event()

    def run_dir_open(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)
        if full.is_set() and any(c in mode for c in "wax"):
            handle.close()  # created, then refused: like a write on a full disk
            raise _no_space(path)
        return handle

    monkeypatch.setattr(runs_module, "open", run_dir_open, raising=False)  # every status/metrics/log write
    ctx = AppContext(slot=TrainingSlot())
    run = ctx.slot.start(_cfg(tiny_model_dir, toy_data, save_steps=0), extra_callbacks=[_AtStep(2, full.set)])
    final = ctx.slot.wait(300)
    assert final["state"] == "failed" and final["reason"].startswith("disk full: could not write status.json;"), final
    assert final["unsaved"] and ctx.slot.active() is None  # the slot is free for the next job
    assert run.status()["state"] == "running"  # the file could not be changed...
    assert _leftovers(run) == []  # ...but no temporary file is left behind

    full.clear()  # space freed
    settled = ctx.slot.settle(run)
    assert settled["state"] == "failed" and run.status()["reason"] == final["reason"]
    assert resume_training(ctx, run.id) == run.id
    final = ctx.slot.wait(300)
    assert final["state"] == "completed" and final["step"] == 3, final


def test_a_run_left_running_by_a_dead_thread_can_be_resumed(tiny_model_dir, toy_data, scratch):
    from finetune_core.training.runner import TrainingSlot
    from finetune_core.runs.store import create_run

    slot = TrainingSlot()
    run = create_run(_cfg(tiny_model_dir, toy_data))
    run.set_status(state="running", step=1, pid=os.getpid())  # its thread is gone; the process is not
    assert slot.settle(run)["state"] == "interrupted" and run.status()["state"] == "interrupted"


def test_failed_writes_leave_no_temporary_files(tmp_path, monkeypatch):
    import builtins

    from finetune_core.runs import store as runs_module
    from finetune_core.runs.store import write_json_atomic

    target = tmp_path / "status.json"
    write_json_atomic(target, {"state": "running"})

    def full_open(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode:
            handle.close()
            raise _no_space(path)
        return handle

    monkeypatch.setattr(runs_module, "open", full_open, raising=False)
    with pytest.raises(OSError):
        write_json_atomic(target, {"state": "failed"})
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    assert "running" in target.read_text()


def test_disk_full_reasons():
    from finetune_core.training.runner import failure_reason

    assert failure_reason(_no_space("/x/runs/r/.status.json.77.tmp")).startswith("disk full: could not write status.json; free space")
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "/x/adapter_model.safetensors")
    assert failure_reason(quota).startswith("disk quota exceeded: could not write adapter_model.safetensors;")
    native = RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                          'message: "No space left on device" })')
    assert failure_reason(native).startswith("disk full: a file could not be saved;")
    try:
        try:
            raise _no_space("/x/optimizer.pt")
        except OSError as exc:
            raise RuntimeError("saving failed") from exc
    except RuntimeError as wrapped:
        assert failure_reason(wrapped).startswith("disk full: could not write optimizer.pt;")
    assert failure_reason(PermissionError(errno.EACCES, "Permission denied")).startswith("PermissionError")


def test_report_shows_first_start_and_resumes():
    from evaluation.report_facts import time_facts

    t0 = 1_700_000_000.0
    status = {"state": "completed", "started": t0, "resumes": [t0 + 600, t0 + 1200], "finished": t0 + 1500}
    facts = dict(time_facts(status))
    when = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))  # noqa: E731
    assert facts == {"Started": when(t0), "Resumed": f"{when(t0 + 600)}, {when(t0 + 1200)}",
                     "Finished": when(t0 + 1500), "Time from first start to finish (pauses included)": "1500 s"}
    assert dict(time_facts({"state": "completed", "started": t0, "finished": t0 + 42}))["Training time"] == "42 s"
    assert "Finished" not in dict(time_facts({**status, "state": "running"}))  # a stale finish is not shown
