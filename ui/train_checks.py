"""The Train tab's checks before a run is created: the model id, the memory estimate, and what a
preference run needs (its parent run, a data file its objective can use). Each refusal is a gr.Error
that names the field, the setting or the file; nothing is created before they pass.
"""
from __future__ import annotations

import gradio as gr

from finetune_core.config import RunConfig
from finetune_core.errors import StudioError
from finetune_core.models import memory
from finetune_core.models.sources import BUNDLED, ModelError, check_model_size, resolve_model_source
from finetune_core.runs.ownership import Visitor, can_change
from finetune_core.runs.store import RunError, get_run
from finetune_core.training.preference import check_start

TRAIN_ANYWAY = "Train anyway (the estimate is approximate)"


def check_model(source: str) -> None:
    """Refuse bad model ids before a run is created (the bundled model converts in the job)."""
    if (source or BUNDLED).strip() in (BUNDLED, ""):
        return
    try:
        resolve_model_source(source)
        check_model_size(source)  # a public deployment's parameter ceiling, from the config alone
    except ModelError as exc:
        raise gr.Error(str(exc)) from exc


def check_memory(cfg: RunConfig, force: bool = False) -> None:
    """Refuse a run the memory estimate says will not fit (unless `force`), or whose Hub model
    cannot be loaded here; the reasons and the settings that would fit come from the core."""
    try:
        memory.check_fits(cfg, force=force)
    except memory.WontFit as exc:
        raise gr.Error(f"{exc} To start it regardless, tick '{TRAIN_ANYWAY}'.") from None
    except ModelError as exc:
        raise gr.Error(str(exc)) from None


def check_preference(cfg: RunConfig, who: Visitor | None = None) -> None:
    """Refuse, before a run is created, a parent run this visitor may not start from (the words of a
    missing run) and what preference.check_start refuses: a data file the objective cannot use, a
    parent without an adapter or on another model, a setting TRL would refuse mid-way."""
    if cfg.parent_run:
        try:
            allowed = can_change(get_run(cfg.parent_run).path, who or Visitor())
        except RunError:
            allowed = True  # check_start names the missing run
        if not allowed:
            raise gr.Error(f"parent_run: Run {cfg.parent_run} does not exist.")
    try:
        check_start(cfg)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
