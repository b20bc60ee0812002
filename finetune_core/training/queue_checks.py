"""What the run queue refuses before a run is made: who may launch what, what this machine can launch,
and how many runs one visitor may have waiting (training/queue.py calls these under its lock)."""
from __future__ import annotations

import os

from finetune_core.config import RunConfig
from finetune_core.errors import StudioError
from finetune_core.limits import limits
from finetune_core.runs.ownership import AccessError, Policy, Visitor
from finetune_core.training.checkpoint_choice import align_checkpoints
from finetune_core.training.launcher import check_launch
from finetune_core.training.tracking import check_tracker, wandb_mode
from finetune_core.zerogpu import check_training


class QueueError(StudioError):
    """A run cannot be queued or taken off the queue; the message is for the user."""


def uploads_online(tracker: str) -> bool:
    """Whether a tracker would send the run to an online account this server holds the key of:
    W&B with an API key (and no offline mode), Trackio with a Space to sync to."""
    if tracker == "wandb":
        return wandb_mode() == "online"
    return tracker == "trackio" and bool(os.environ.get("TRACKIO_SPACE_ID"))


def check_launcher(cfg: RunConfig, who: Visitor, policy: Policy | None = None) -> None:
    """On a shared deployment (login or public) only admins may start runs as their own processes (a
    process outlives the app's own limits; torchrun/accelerate can take every device) or send runs to
    the owner's online tracker accounts."""
    policy = policy or Policy.from_env()
    if policy.local or who.admin:
        return
    where = "this public Space" if policy.public else "this shared server"
    if cfg.launcher != "thread":
        raise AccessError(f"launcher: {cfg.launcher!r} runs are for admins on {where}; "
                          "choose 'thread' (the run trains inside the app).")
    if uploads_online(cfg.report_to):
        raise AccessError(f"report_to: {cfg.report_to} would send the run to this server's own online account, "
                          f"which is for admins on {where}; choose tensorboard or none (the live plot needs "
                          "neither).")


def check_entry(cfg: RunConfig, who: Visitor) -> tuple[RunConfig, str]:
    """Everything to refuse before a run of `cfg` is queued for `who`; returns the config with its
    evaluation and save steps aligned for early stopping / keep_best, and what that changed ("" if nothing)."""
    check_launcher(cfg, who)
    check_launch(cfg)
    check_tracker(cfg.report_to)  # a tracker whose package is missing: refused with the pip line
    check_training(cfg)  # on ZeroGPU: what cannot train in GPU calls is refused, naming the hardware
    return align_checkpoints(cfg)


def check_cap(state: dict, who: Visitor, adding: int) -> None:
    """On a shared deployment a visitor may have at most `queued_runs_per_user` runs waiting
    (`state`: the queue file's contents, read under its lock)."""
    mine = sum(1 for item in state["waiting"] if item.get("owner") == who.key)
    cap = limits().queued_runs_per_user
    if not Policy.from_env().local and not who.admin and mine + adding > cap:
        have = f"You already have {mine} runs waiting" if mine else "You have no runs waiting"
        raise QueueError(f"{have}; {adding} more would pass this server's limit of {cap} (setting "
                         f"{limits().setting('queued_runs_per_user')}). Cancel one or wait for it to start.")
