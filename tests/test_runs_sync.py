"""Runs that survive a rebuild: where runs live (storage.py) and their sync with a Hub repo (sync.py),
against a fake Hub on loopback (tests/fake_hub.py). No network, no model: runs are fabricated with
store.create_run and a small adapter file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_hub import FakeHub
from finetune_core.config import RunConfig
from finetune_core.runs import storage, store, sync
from finetune_core.runs.store import create_run, get_run, list_runs
from finetune_core.runs.sync import SyncTarget, plan_restore, restore_runs, sync_runs

REPO = "owner/studio-runs"


@pytest.fixture()
def hub(monkeypatch):
    import huggingface_hub.constants

    # conftest switches the Hub client offline for every test; this one talks to loopback only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as server:
        yield server


@pytest.fixture()
def target(hub) -> SyncTarget:
    return SyncTarget(REPO, token="hf_test", endpoint=hub.url)


def fake_run(name: str, state: str = "completed"):
    """A run as training leaves it: config, status, metrics, log, split, adapter, a checkpoint, a temp file."""
    run = create_run(RunConfig(model="bundled"), name=name)
    run.append_metric({"step": 1, "loss": 2.5})
    run.log("trained")
    (run.data_dir / "heldout.jsonl").write_text('{"prompt": "hi", "completion": "hello"}\n', encoding="utf-8")
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text('{"r": 4}', encoding="utf-8")
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
    (run.checkpoints_dir / "checkpoint-1").mkdir()
    (run.checkpoints_dir / "checkpoint-1" / "optimizer.pt").write_bytes(b"\0" * 64)
    (run.path / ".status.json.999.tmp").write_text("{", encoding="utf-8")
    run.set_status(state=state, step=1, total_steps=1)
    return run


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_finished_runs_sync_and_come_back_after_a_rebuild(runs_root, hub, target, monkeypatch, tmp_path):
    first, second = fake_run("first"), fake_run("second", state="stopped")
    running = fake_run("still training", state="running")

    report = sync_runs(target)
    assert report.ok, report.summary()
    assert sorted(report.uploaded) == sorted([first.id, second.id])  # the running one waits until it ends
    files = hub.repo(REPO).files
    assert f"runs/{first.id}/adapter/adapter_model.safetensors" in files
    assert f"runs/{first.id}/data/heldout.jsonl" in files  # evaluation needs the held-out rows
    assert not [p for p in files if p.startswith(f"runs/{running.id}/")]
    assert not [p for p in files if "/checkpoints/" in p or "/." in p]  # no checkpoints, no temp files
    assert hub.repo(REPO).private

    commits = hub.commits()
    again = sync_runs(target)
    assert again.uploaded == [] and sorted(again.unchanged) == sorted([first.id, second.id])
    assert hub.commits() == commits  # nothing unchanged is sent twice

    (first.eval_dir).mkdir()
    (first.eval_dir / "summary.json").write_text('{"score": 1}', encoding="utf-8")
    assert sync_runs(target).uploaded == [first.id]
    assert f"runs/{first.id}/eval/summary.json" in files

    # a rebuild: a fresh app on an empty runs folder, sync set up as an owner does, restores from the repo
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "rebuilt"))
    monkeypatch.setenv("STUDIO_SYNC_REPO", REPO)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    commits = hub.commits()
    restored, synced = sync.Syncer().run_once()  # what the app's sync thread does first
    assert restored.ok and sorted(restored.restored) == sorted([first.id, second.id]), restored.summary()
    assert synced.ok and synced.uploaded == [] and hub.commits() == commits  # restored runs are not sent back
    assert [r.id for r in list_runs()] == sorted([first.id, second.id], reverse=True)
    back = get_run(first.id)
    assert back.name == "first" and back.status()["state"] == "completed" and back.has_adapter()
    assert back.metrics() == [{"step": 1, "loss": 2.5}] and "trained" in back.log_tail()
    assert tree(back.path / "adapter") == tree(first.path / "adapter")
    assert (back.eval_dir / "summary.json").is_file() and not back.checkpoints_dir.exists()
    assert not [p for p in store.runs_root().iterdir() if p.name.startswith(".restore-")]

    assert restore_runs(target).present == sorted([first.id, second.id])  # never overwritten


def test_a_run_deleted_here_is_deleted_from_the_repo_and_not_restored(runs_root, hub, target):
    import shutil

    kept, gone = fake_run("kept"), fake_run("gone")
    assert sync_runs(target).ok
    shutil.rmtree(gone.path)
    (kept.path / "log.txt").unlink()
    report = sync_runs(target)
    assert report.deleted == [gone.id] and report.uploaded == [kept.id]
    assert f"runs/{kept.id}/log.txt" not in hub.repo(REPO).files and f"runs/{kept.id}/run.yaml" in hub.repo(REPO).files
    assert not [p for p in hub.repo(REPO).files if p.startswith(f"runs/{gone.id}/")]
    assert restore_runs(target).restored == [] and not gone.path.exists()
    assert kept.path.is_dir()


def test_a_repo_with_odd_paths_is_refused(runs_root, hub, target):
    good = "20250101-000000-good-abcdef"
    hub.put_files(REPO, {
        f"runs/{good}/run.yaml": b"model: bundled\n",
        f"runs/{good}/status.json": b'{"state": "completed"}',
        "runs/not-a-run/run.yaml": b"model: bundled\n",
        "runs/20250101-000000-sneaky-abcdef/run.yaml": b"model: bundled\n",
        "runs/20250101-000000-sneaky-abcdef/.hidden/x": b"x",
        "runs/20250101-000000-ckpt-abcdef/run.yaml": b"model: bundled\n",
        "runs/20250101-000000-ckpt-abcdef/checkpoints/checkpoint-1/a.bin": b"x",
        "runs/20250101-000000-noyaml-abcdef/log.txt": b"x",
        "README.md": b"# runs",
    })
    report = restore_runs(target)
    assert report.restored == [good], report.summary()
    assert set(report.refused) == {"not-a-run", "20250101-000000-sneaky-abcdef", "20250101-000000-ckpt-abcdef",
                                   "20250101-000000-noyaml-abcdef"}
    assert sorted(p.name for p in runs_root.iterdir() if not p.name.startswith(".")) == [good]
    assert plan_restore(["runs/20250101-000000-a-abcdef/../../etc/passwd"])[1] == {
        "20250101-000000-a-abcdef": "'../../etc/passwd' has an odd part"}


def test_a_failing_hub_leaves_local_runs_alone_and_says_so(runs_root, hub, target):
    run = fake_run("done")
    before = tree(run.path)
    hub.fail_with = 500
    report = sync_runs(target)
    assert not report.ok and "500" in report.error and report.summary().startswith("sync failed:")
    assert tree(run.path) == before  # no marker either: the next sync sends it
    restored = restore_runs(target)
    assert not restored.ok and "500" in restored.error
    assert tree(run.path) == before
    status = sync.last_status()
    assert status["last_sync"]["ok"] is False and "500" in status["last_sync"]["summary"]

    hub.fail_with = None
    assert sync_runs(target).uploaded == [run.id]


def test_syncer_restores_then_syncs_and_sync_off_is_said(runs_root, hub, target, monkeypatch):
    run = fake_run("done")
    restored, synced = sync.Syncer(lambda: target).run_once()
    assert restored.ok and synced.uploaded == [run.id]
    monkeypatch.delenv("STUDIO_SYNC_REPO", raising=False)
    assert sync.Syncer().start() is False  # no repo named: no thread
    assert "STUDIO_SYNC_REPO" in sync.sync_now().error
    with pytest.raises(sync.SyncError, match="owner/name"):
        SyncTarget("not a repo")


def test_cli_sync_without_a_repo_is_refused(runs_root, monkeypatch, capsys):
    from finetune_core.__main__ import main

    monkeypatch.delenv("STUDIO_SYNC_REPO", raising=False)
    assert main(["sync"]) == 2
    assert "STUDIO_SYNC_REPO" in capsys.readouterr().err


# -- where runs live ----------------------------------------------------------------------------
@pytest.fixture()
def space(monkeypatch, tmp_path):
    monkeypatch.delenv("STUDIO_RUNS_DIR", raising=False)
    monkeypatch.delenv("STUDIO_SYNC_REPO", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPACE_ID", "owner/studio")
    return tmp_path


def test_space_with_persistent_storage_keeps_runs_there(space, monkeypatch):
    (space / "data").mkdir()
    monkeypatch.setenv(storage.PERSISTENT_ENV, str(space / "data"))
    assert store.runs_root() == (space / "data" / "runs").resolve()
    report = storage.storage_report()
    assert report.survives == "yes" and not report.warn and report.path == str(space / "data" / "runs")
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(space / "elsewhere"))  # the owner's choice still comes first
    assert store.runs_root() == (space / "elsewhere").resolve() and storage.storage_report().survives == "no"


def test_space_without_persistent_storage_warns(space, monkeypatch):
    monkeypatch.setenv(storage.PERSISTENT_ENV, str(space / "missing"))
    report = storage.storage_report()
    assert store.runs_root() == (space / "runs").resolve()
    assert report.survives == "no" and report.warn and "no persistent storage" in report.why
    from ui.storage_note import note_text

    assert "loses at every rebuild" in note_text(report, {}) and "persistent storage" in note_text(report, {})
    monkeypatch.setenv("STUDIO_SYNC_REPO", REPO)
    assert REPO in note_text(storage.storage_report(), {})


def test_local_machine_says_unknown_without_warning(space, monkeypatch):
    monkeypatch.delenv("SPACE_ID")
    report = storage.storage_report()
    assert report.survives == "unknown" and not report.warn and report.path == str(space / "runs")
    assert json.loads(json.dumps(report.as_dict()))["survives"] == "unknown"
