"""Training across processes: the CLI, a SIGKILL mid-run, and two-process DDP with torchrun."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, toy_rows
from finetune_core.config import RunConfig
from finetune_core.data.dataset import write_jsonl
from finetune_core.training.runner import TrainingSlot, run_job
from finetune_core.runs.store import list_runs


def _write_config(tmp_path: Path, model_dir: Path, **kw) -> Path:
    data = tmp_path / "toy.jsonl"
    write_jsonl(data, [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]}
                       for r in toy_rows(48)])
    cfg = RunConfig.from_dict(dict(model=str(model_dir), data_path=str(data), batch_size=4, lora_r=4, lora_alpha=8,
                    learning_rate=1e-3, logging_steps=1, **kw))
    path = tmp_path / "run.yaml"
    cfg.save(path)
    return path


def _env(runs_root: Path) -> dict:
    env = {**os.environ, "STUDIO_RUNS_DIR": str(runs_root), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return env


def test_cli_train_writes_a_completed_run(tmp_path, tiny_model_dir, runs_root):
    config = _write_config(tmp_path, tiny_model_dir, max_steps=2)
    out = subprocess.run([sys.executable, "-m", "finetune_core", "train", "--config", str(config), "--set", "max_steps=3"],
                         cwd=REPO, env=_env(runs_root), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = list_runs()
    assert run.status()["state"] == "completed" and run.status()["step"] == 3
    assert "completed" in out.stdout.splitlines()[-1]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [e["step"] for e in events if e.get("event") == "metrics" and "loss" in e] == [1, 2, 3]


def test_sigkill_mid_training_is_found_interrupted_and_resumes(tmp_path, tiny_model_dir, runs_root):
    config = _write_config(tmp_path, tiny_model_dir, max_steps=400, save_steps=2, save_total_limit=100)
    proc = subprocess.Popen([sys.executable, "-m", "finetune_core", "train", "--config", str(config), "--quiet"],
                            cwd=REPO, env=_env(runs_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            runs = list_runs()
            if runs and (runs[0].checkpoints_dir / "checkpoint-4" / "trainer_state.json").is_file():
                break  # checkpoint-4 is complete (the Trainer writes its state last)
            time.sleep(0.3)
        else:
            pytest.fail("the training process never reached a checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    (run,) = list_runs()
    assert run.status()["state"] == "running"  # what the killed process left behind
    TrainingSlot()  # a new app start looks for orphaned runs
    status = run.status()
    assert status["state"] == "interrupted"
    # Make the resume continue from checkpoint-4 whatever the kill left after it.
    cfg = run.config()
    run_yaml = run.path / "run.yaml"
    text = run_yaml.read_text().replace("max_steps: 400", "max_steps: 8")
    run_yaml.write_text(text)
    for ckpt in run.checkpoints_dir.glob("checkpoint-*"):
        if int(ckpt.name.split("-")[1]) > 4:
            shutil.rmtree(ckpt)
    final = run_job(run, threading.Event(), resume=True)
    assert final["state"] == "completed" and final["step"] == 8, final
    assert cfg.max_steps == 400
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert 5 in steps and steps[-1] == 8


@pytest.mark.slow
def test_two_process_ddp_with_torchrun_writes_one_run(tmp_path, tiny_model_dir, runs_root):
    torchrun = Path(sys.executable).with_name("torchrun")
    config = _write_config(tmp_path, tiny_model_dir, max_steps=3)
    out = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "finetune_core",
                          "train", "--config", str(config), "--quiet"],
                         cwd=REPO, env=_env(runs_root), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    runs = list_runs()
    assert len(runs) == 1, [r.id for r in runs]
    run = runs[0]
    assert run.status()["state"] == "completed" and run.status()["step"] == 3
    assert run.run_yaml()["world_size"] == 2
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == [1, 2, 3]  # rank 0 alone wrote metrics
    assert run.has_adapter()
    assert not list(Path(runs_root).glob(".launch-*"))
