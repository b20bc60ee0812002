"""One training run, start to finish, in the calling thread: setup -> train -> save.

`execute(run, stop_event, emit)` prepares the data split, loads the model the run starts from (the
base, or its parent run's merged), builds TRL's SFTTrainer (or, for a preference objective, the trainer
of preference.py) from the RunConfig and trains; the runner calls it in a background thread and the CLI
calls it directly. Failures become a `failed` status with a readable reason in the runner, not here.
"""
from __future__ import annotations

import errno
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from finetune_core.errors import StudioError
from finetune_core.models import device_plan
from finetune_core.models.device_plan import use_gradient_checkpointing
from finetune_core.config import RunConfig
from finetune_core.data.dataset import is_text_rows
from finetune_core.training import checkpoint_choice, tracking
from finetune_core.training.events import StudioCallback
from finetune_core.models.sources import DevicePolicy, load_model, load_tokenizer, model_config, training_policy
from finetune_core.runs.store import Run

Emit = Callable[[dict], None]
CHECKPOINT_FILES_COMMON = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


class TrainingError(StudioError):
    """A run cannot start or continue; the message is for the user."""


def check_method(cfg: RunConfig, policy: DevicePolicy) -> None:
    """Raise TrainingError when this machine cannot train with the chosen method (QLoRA needs CUDA
    and bitsandbytes)."""
    if cfg.method == "qlora":
        if policy.device != "cuda":
            raise TrainingError(
                "QLoRA needs a CUDA GPU with bitsandbytes (4-bit kernels); this machine has none. "
                "Choose LoRA: on a small model it needs little memory."
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise TrainingError("QLoRA needs the bitsandbytes package: pip install bitsandbytes.") from exc


def prepare_split(cfg: RunConfig, run: Run) -> tuple[list[dict], list[dict], dict]:
    """Load, validate and split the data; save the split in the run so evaluation
    later uses exactly the held-out rows. Rows the objective cannot train on are refused."""
    from finetune_core.data.dataset import read_jsonl
    from finetune_core.training import preference

    train_file, held_file = run.data_dir / "train.jsonl", run.data_dir / "heldout.jsonl"
    report_file = run.data_dir / "report.json"  # written last: without it the split is unfinished
    if train_file.exists() and held_file.exists() and report_file.exists():  # resume: reuse the saved split
        import json

        report = json.loads(report_file.read_text(encoding="utf-8"))
        train, held = read_jsonl(train_file), read_jsonl(held_file)
        preference.check_rows(cfg, train, held)
        return train, held, report
    from finetune_core.data.dataset import prepare_data, train_and_held, write_jsonl

    mapping = cfg.data
    report = prepare_data(mapping)
    if not report.usable:
        first = "; ".join(i.text() for i in report.issues[:3])
        raise TrainingError(f"The data file is not usable ({len(report.issues)} issue(s)): {first}")
    held_rows = None
    if mapping.eval_path:
        held_report = prepare_data(mapping.for_file(mapping.eval_path))
        if not held_report.usable:
            raise TrainingError("The evaluation file is not usable: " + "; ".join(i.text() for i in held_report.issues[:3]))
        held_rows = held_report.rows
    train, held = train_and_held(mapping, report.rows, held_rows)
    if not train:
        raise TrainingError("No training rows are left after the held-out split.")
    preference.check_rows(cfg, train, held)
    write_jsonl(train_file, train)
    write_jsonl(held_file, held)
    summary = {**report.summary(), "train_rows": len(train), "heldout_rows": len(held)}
    summary["issues"] = summary.get("issues", [])[:200]
    from finetune_core.runs.store import write_json_atomic

    write_json_atomic(report_file, summary)
    return train, held, summary


def training_rows(rows: list[dict], say: Callable[[str], None] | None = None) -> list[dict]:
    """Only the fields SFTTrainer reads; labels and other metadata stay in the saved split. Preference
    pairs train on their chosen answers (said through `say`)."""
    from finetune_core.training.preference import sft_rows

    rows = sft_rows(rows, say)
    if is_text_rows(rows):
        return [{"text": r["text"]} for r in rows]
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]


def peft_config(cfg: RunConfig):
    """The LoraConfig for the run's adapter (target_modules "all-linear" or a comma-separated list),
    or None for full fine-tuning."""
    if cfg.method == "full":
        return None
    from peft import LoraConfig

    targets = cfg.target_modules.strip() or "all-linear"
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
        use_dora=cfg.use_dora, use_rslora=cfg.use_rslora, task_type="CAUSAL_LM", bias="none",
    )


def trainer_arguments(cfg: RunConfig, run: Run, policy: DevicePolicy, grad_ckpt: bool, has_eval: bool) -> dict:
    """The TrainingArguments every objective shares (SFT, DPO, KTO, ORPO): checkpoints in the run
    folder, precision from `policy`, the schedule, held-out loss only when `has_eval`, logging, early
    stopping / keep_best (`cfg` has been through `align_checkpoints`) and the tracker's run name."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return dict(
        output_dir=str(run.checkpoints_dir),
        num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        gradient_checkpointing=grad_ckpt,
        # dtype by device: TRL's bf16 autocast is 16x slower on CPUs without bf16 instructions
        # (DESIGN.md); where a CPU has them, the weights are loaded in bf16 and nothing is autocast.
        bf16=policy.dtype == "bfloat16" and policy.device != "cpu", fp16=policy.dtype == "float16",
        use_cpu=policy.device == "cpu",
        eval_strategy="steps" if (has_eval and cfg.eval_steps > 0) else "no",
        eval_steps=cfg.eval_steps if cfg.eval_steps > 0 else None,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=cfg.save_total_limit, logging_steps=cfg.logging_steps, logging_first_step=True,
        seed=cfg.data.seed, data_seed=cfg.data.seed, disable_tqdm=True,
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        save_only_model=False, logging_nan_inf_filter=False,  # we must see a NaN loss to fail the run
        ddp_find_unused_parameters=False if world > 1 else None,
        **checkpoint_choice.trainer_extras(cfg, has_eval), **tracking.tracker_arguments(cfg, run),
    )


def sft_config(cfg: RunConfig, run: Run, policy: DevicePolicy, lm_rows: bool, grad_ckpt: bool, has_eval: bool,
               padding_free: bool = False):
    """TRL's SFTConfig for this run: `trainer_arguments`, plus packing and padding-free batches, and the
    completion-only setting left to TRL for plain-text rows (`lm_rows`)."""
    from trl import SFTConfig

    return SFTConfig(
        **trainer_arguments(cfg, run, policy, grad_ckpt, has_eval),
        max_length=cfg.max_length, packing=cfg.packing, padding_free=padding_free,
        completion_only_loss=None if lm_rows else cfg.completion_only_loss,
        train_sampling_strategy="group_by_length" if cfg.group_by_length and not cfg.packing else "random",
    )


def checkpoints(run: Run) -> list[Path]:
    """The run's checkpoint folders, newest first."""
    found = [p for p in run.checkpoints_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def latest_checkpoint(run: Run) -> Path | None:
    """The run's newest checkpoint folder, or None when it has none (complete or not: see `missing_files`)."""
    found = checkpoints(run)
    return found[0] if found else None


def missing_files(path: Path, method: str) -> list[str]:
    """What a checkpoint folder lacks to be resumed from (files, or an unreadable trainer_state.json);
    empty when complete. `method` decides whether full-model or adapter weights are expected."""
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    missing = [name for name in (*CHECKPOINT_FILES_COMMON, weights) if not (path / name).is_file()]
    if "trainer_state.json" not in missing:  # the Trainer writes it last: cut short, the save was too
        import json

        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            missing.append("a readable trainer_state.json")
    return missing


def check_checkpoint(path: Path, method: str) -> None:
    """Refuse a checkpoint with a missing file before the Trainer trips over it."""
    missing = missing_files(path, method)
    if missing:
        raise TrainingError(f"Checkpoint {path.name} is incomplete (missing {', '.join(missing)}); it cannot be resumed.")


def resume_point(run: Run, method: str, emit: Emit) -> Path | None:
    """The newest complete checkpoint. A process killed while saving leaves the newest
    one half written: skip it (and say so) when an older complete one exists."""
    found = checkpoints(run)
    for path in found:
        missing = missing_files(path, method)
        if not missing:
            return path
        emit({"event": "log", "message": f"Skipping {path.name}: incomplete (missing {', '.join(missing)})."})
    if found:
        check_checkpoint(found[0], method)  # none is complete: refuse, naming the newest
    return None


def _step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def drop_torn_checkpoints(run: Run, method: str, after_step: int = 0) -> list[str]:
    """Remove the incomplete checkpoints past `after_step` (where this job started): a save
    cut short by a full disk or an error. Older checkpoints are left as they were."""
    torn = [p for p in checkpoints(run) if _step(p) > after_step and missing_files(p, method)]
    for path in torn:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in torn]


def remove_partial_writes(run: Run) -> list[str]:
    """Clear what failed writes can leave in a run (after a failure, before the final
    status): temporary files of atomic writes (``.status.json.<pid>.tmp``, the split's
    ``.train.jsonl.*``) and the adapter being saved. An adapter swap cut between its two
    renames gets the previous adapter back. Returns the names removed."""
    removed = []
    partial = run.path / ".adapter-tmp"
    if partial.exists():
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial.name)
    old = run.path / ".adapter-old"
    if old.exists() and not run.adapter_dir.exists():
        old.rename(run.adapter_dir)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old.name)
    temps = [*run.path.glob(".*.tmp"), *run.data_dir.glob(".*")]
    for path in temps:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def save_final(trainer, tokenizer, run: Run) -> None:
    """Write the adapter to a temporary folder, then swap it in: a failed save
    (disk full...) removes the temporary folder and leaves the previous adapter untouched."""
    tmp = run.path / ".adapter-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TrainingError(f"{disk_full_words(exc)}: the adapter could not be saved; the previous adapter "
                                "is kept. Free space, then resume the run.") from exc
        raise
    old = run.path / ".adapter-old"
    shutil.rmtree(old, ignore_errors=True)
    if run.adapter_dir.exists():
        run.adapter_dir.rename(old)
    tmp.rename(run.adapter_dir)
    shutil.rmtree(old, ignore_errors=True)


def disk_full_words(exc: OSError) -> str:
    """How a failed write is named to the user: "disk full" (ENOSPC) or "disk quota exceeded"."""
    return "disk quota exceeded" if exc.errno == errno.EDQUOT else "disk full"


def is_main_process() -> bool:
    """Whether this is rank 0 of a multi-process run (or a single process): only it writes the run folder."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class StartModel:
    """What every objective's trainer is built from: the tokenizer, the model the run starts from (the
    base, or the parent run's model merged), the accelerator plan and whether activations are recomputed."""

    tokenizer: object
    model: object
    accel: device_plan.DevicePlan
    grad_ckpt: bool


def load_start(cfg: RunConfig, run: Run, policy: DevicePolicy, say: Callable[[str], None]) -> StartModel:
    """Load the tokenizer and the model a run starts from (models/chain.py: the parent's adapter merged in
    memory when ``parent_run`` is set), with the device plan's load arguments and, for QLoRA, PEFT's
    4-bit preparation."""
    from finetune_core.models.chain import load_start_model

    tokenizer = load_tokenizer(cfg.model, progress=say)
    accel = device_plan.plan(cfg, policy, model_config(cfg.model) if policy.device == "cuda" else None)
    kwargs = device_plan.load_kwargs(cfg, policy, accel)
    # without a parent the base loads from the config alone (a benchmark's run folder has no run.yaml)
    model = (load_start_model(run, policy, progress=say, **kwargs) if cfg.parent_run
             else load_model(cfg.model, policy, progress=say, **kwargs))
    model.config.use_cache = False  # the KV cache is useless (and wasteful) while training
    n_params = sum(p.numel() for p in model.parameters())
    grad_ckpt = use_gradient_checkpointing(cfg, policy, n_params)
    if accel.quantized:  # PEFT's recipe for a 4-bit base: norms in float32, input gradients for checkpointing
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=grad_ckpt)
    return StartModel(tokenizer, model, accel, grad_ckpt)


def finish_setup(trainer, cfg: RunConfig, run: Run, policy: DevicePolicy, start: StartModel, emit: Emit,
                 withhold: dict[str, str] | None = None):
    """The steps after any trainer is made: our callback alone prints, the CPU speed-ups
    `speedups.apply_training` finds safe go on, less those in `withhold` (``trainer.speedups`` says
    which; the log and run.yaml record them) and the log says where the run trains."""
    from transformers.trainer_callback import PrinterCallback

    from finetune_core.speedups import apply_training

    trainer.remove_callback(PrinterCallback)  # our callback logs; don't print raw dicts to stdout
    trainer.speedups = apply_training(trainer.model, policy.device, policy.dtype, cfg.max_length, cfg.speedups,
                                      withhold)
    emit({"event": "log", "message": trainer.speedups.summary()})
    run.record_facts(**trainer.speedups.as_dict())
    emit({"event": "log", "message": f"Training on {policy.describe()} ({start.accel.describe()}), gradient "
                                     f"checkpointing {'on' if start.grad_ckpt else 'off'}."})
    return trainer


def build_trainer(cfg: RunConfig, run: Run, train: list[dict], held: list[dict], policy: DevicePolicy,
                  callbacks: list, emit: Emit):
    """SFTTrainer for this config, with our speed choices (dtype by device, no
    gradient checkpointing for small models, length-grouped batches) and the
    speed-ups `speedups.apply_training` finds safe for this model (on CPU; the
    `speedups` setting switches them off). `trainer.speedups` says which."""
    from datasets import Dataset
    from trl import SFTTrainer

    say = lambda m: emit({"event": "log", "message": m})  # noqa: E731
    start = load_start(cfg, run, policy, say)
    rows = training_rows(train, say)
    args = sft_config(cfg, run, policy, is_text_rows(rows), start.grad_ckpt, bool(held),
                      padding_free=start.accel.padding_free)
    trainer = SFTTrainer(
        model=start.model, args=args, train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(training_rows(held)) if held else None,
        processing_class=start.tokenizer, peft_config=peft_config(cfg), callbacks=callbacks,
    )
    return finish_setup(trainer, cfg, run, policy, start, emit), start.tokenizer


def execute(run: Run, stop_event: threading.Event, emit: Emit, resume: bool = False,
            extra_callbacks: list | None = None, policy: DevicePolicy | None = None) -> dict:
    """Train the run described by run.yaml with its objective's trainer (SFT here, DPO/KTO/ORPO in
    preference.py). Returns the final status fields.

    ``policy`` (device and dtype) is the one the runner worked out when it created the
    run; without it (CLI, resume, other ranks) it is worked out here. Gradient
    checkpointing is decided once, when the trainer is built, from it."""
    from finetune_core.training import preference

    cfg = checkpoint_choice.aligned_config(run.config(), emit)
    policy = policy or training_policy(cfg.device, cfg.precision, cfg.method)
    check_method(cfg, policy)
    preference.check_objective(cfg)
    resume_from = resume_point(run, cfg.method, emit) if resume else None
    if resume_from is not None:
        emit({"event": "log", "message": f"Resuming from {resume_from.name}."})
    train, held, _report = prepare_split(cfg, run)
    emit({"event": "log", "message": f"Data: {len(train)} training rows, {len(held)} held out."})
    if cfg.data.max_eval_rows and len(held) > cfg.data.max_eval_rows:
        held = held[: cfg.data.max_eval_rows]  # the loss curve needs a sample, not all of a large split
    callback = StudioCallback(run, stop_event, emit)
    stoppers = checkpoint_choice.early_stopping(cfg)
    trackers = tracking.start(cfg, run, emit, is_main_process())  # refuses a missing package before the model loads
    builder = build_trainer if cfg.objective == "sft" else preference.build_preference_trainer
    hooks = [*(extra_callbacks or []), callback, *stoppers, *trackers]  # injected ones (tests...) act before ours
    trainer, tokenizer = builder(cfg, run, train, held, policy, hooks, emit)
    try:
        with trainer.speedups.scope():
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except BaseException:
        drop_torn_checkpoints(run, cfg.method, _step(resume_from) if resume_from else 0)
        raise
    finally:
        tracking.close_trackers(trackers)  # a tracker opens when training begins
    if callback.failure:
        raise TrainingError(callback.failure)
    step, stopped = trainer.state.global_step, stop_event.is_set()
    chosen = checkpoint_choice.settle_adapter(cfg, trainer, stoppers, bool(held) and not stopped, emit)
    if is_main_process():
        save_final(trainer, tokenizer, run)
        if chosen:
            run.record_facts(final_adapter=chosen)
    reason = f"stopped at step {step}" if stopped else f"completed {step} steps"
    return {"state": "stopped" if stopped else "completed", "step": step,
            **checkpoint_choice.outcome(cfg, chosen, reason, trainer.state.max_steps)}
