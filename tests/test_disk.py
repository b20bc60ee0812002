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

    ctx = AppContext()
    with gr.Blocks() as demo:
        ctx.run_state = gr.State("")
        export_tab.build(ctx)
    status = next(c for c in demo.blocks.values() if getattr(c, "elem_id", None) == "export-status")
    for fn in demo.fns.values():
        if fn.api_name in ("export_adapter", "export_merged", "export_gguf", "export_report"):
            assert status in fn.outputs, fn.api_name


def test_vote_files_are_written_into_gradios_cache(scratch):
    """Served as they are, and swept with the cache (they used to pile up in the system temp dir)."""
    from finetune_core.chat import ChatSession
    from ui import chat_tab

    session = ChatSession()
    session.votes.append({"winner": "tuned", "prompt_tuned": [{"role": "user", "content": "hi"}],
                          "tuned": "hello", "base": "meh"})
    path = Path(chat_tab.export_votes(session))
    assert path.is_file() and path.is_relative_to(gradio_cache_dir())
    assert path.parent.parent == gradio_cache_dir() and path.parent.name.startswith("studio-votes-")
