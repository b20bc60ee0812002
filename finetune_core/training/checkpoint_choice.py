"""Early stopping on held-out loss and the best checkpoint as the final adapter.

Both settings (``early_stopping_patience`` > 0, ``keep_best``) need the held-out loss measured while
the run trains, so `align_checkpoints` sets ``eval_steps`` (a tenth of the run when it is 0) and
``save_steps`` (a checkpoint at each evaluation for keep_best: transformers can only go back to a
step it saved, and it requires save_steps to be a multiple of eval_steps) and says what it set. The
CLI and the Train tab call it before a run is created; `train.execute` calls it again for a run.yaml
written by hand.

During training `trainer_extras` gives the TrainingArguments (``load_best_model_at_end`` for
keep_best, ``metric_for_best_model`` eval_loss, lower is better) and `early_stopping` transformers'
EarlyStoppingCallback. After training `final_adapter` says which checkpoint became the adapter and
whether early stopping ended the run: the log's sentences, run.yaml's ``final_adapter`` fact and
(`outcome`) the status fields.

Resuming keeps the best checkpoint (transformers stores it in trainer_state.json) but starts the
patience count again: restoring callback state would also restore a stopped run's "stop" flag.
"""
from __future__ import annotations

import math

from transformers import EarlyStoppingCallback

from finetune_core.config import ConfigError, RunConfig

METRIC = "eval_loss"
GUESSED_STEPS = 500  # the run's length when neither max_steps nor a row cap tells it


def evaluations(n: int) -> str:
    """"1 evaluation", "3 evaluations": how patience is counted, in words."""
    return f"{n} evaluation" + ("" if n == 1 else "s")


def wanted(cfg: RunConfig) -> bool:
    """Whether the run stops early or keeps its best checkpoint (both need held-out evaluation)."""
    return cfg.early_stopping_patience > 0 or cfg.keep_best


def _field(cfg: RunConfig) -> str:
    return "early_stopping_patience" if cfg.early_stopping_patience > 0 else "keep_best"


def check_heldout(cfg: RunConfig) -> None:
    """Refuse early stopping or keep_best on a run that holds no rows out (ConfigError naming the field).

    >>> check_heldout(RunConfig.from_dict({"keep_best": True, "eval_fraction": 0}))
    Traceback (most recent call last):
    ...
    finetune_core.config.ConfigError: keep_best: choosing the best checkpoint needs held-out rows, and this run holds none out (eval_fraction is 0 and there is no evaluation file); set eval_fraction above 0 or choose an evaluation file.
    """
    if wanted(cfg) and cfg.data.eval_fraction <= 0 and not cfg.data.eval_path:
        what = "early stopping" if cfg.early_stopping_patience > 0 else "choosing the best checkpoint"
        raise ConfigError(f"{_field(cfg)}: {what} needs held-out rows, and this run holds none out (eval_fraction "
                          "is 0 and there is no evaluation file); set eval_fraction above 0 or choose an evaluation "
                          "file.")


def planned_steps(cfg: RunConfig) -> tuple[int, bool]:
    """(optimizer steps the run will take, whether that is exact): max_steps, else an estimate from
    the row cap and the epochs, else GUESSED_STEPS."""
    if cfg.max_steps > 0:
        return cfg.max_steps, True
    rows = cfg.data.max_train_rows
    if rows:
        per_step = cfg.batch_size * cfg.grad_accum
        return max(1, math.ceil(cfg.num_epochs * math.ceil(rows / per_step))), False
    return GUESSED_STEPS, False


def align_checkpoints(cfg: RunConfig) -> tuple[RunConfig, str]:
    """The config with eval_steps and save_steps set for early stopping / keep_best, and a sentence
    saying what changed ("" when nothing did, or when neither is on). ConfigError when the run has no
    held-out rows.

    >>> cfg, said = align_checkpoints(RunConfig(max_steps=60, keep_best=True))
    >>> cfg.eval_steps, cfg.save_steps
    (6, 6)
    >>> print(said)
    keep_best needs the held-out loss during training: eval_steps set to 6 (about a tenth of the 60 steps), save_steps set to 6 (a checkpoint at every evaluation, so the best one can be kept).
    >>> align_checkpoints(RunConfig(max_steps=60))[1]
    ''
    """
    if not wanted(cfg):
        return cfg, ""
    check_heldout(cfg)
    changes, said = {}, []
    eval_steps = cfg.eval_steps
    if eval_steps == 0:
        steps, exact = planned_steps(cfg)
        eval_steps = max(1, round(steps / 10))
        changes["eval_steps"] = eval_steps
        said.append(f"eval_steps set to {eval_steps} (about a tenth of the {steps} steps)" if exact else
                    f"eval_steps set to {eval_steps} (about a tenth of the run's estimated {steps} steps; set it "
                    "yourself if that is far off)")
    save = cfg.save_steps
    if cfg.keep_best and save != eval_steps:
        changes["save_steps"] = eval_steps
        said.append(f"save_steps set to {eval_steps} (a checkpoint at every evaluation, so the best one can be kept)")
    elif not cfg.keep_best and (save == 0 or save % eval_steps):
        changes["save_steps"] = eval_steps
        said.append(f"save_steps set to {eval_steps} (a multiple of eval_steps, so the run can be resumed from "
                    "where it stopped)")
    if not changes:
        return cfg, ""
    names = [n for n, on in (("Early stopping", cfg.early_stopping_patience > 0), ("keep_best", cfg.keep_best)) if on]
    verb = "need" if len(names) > 1 else "needs"
    return cfg.with_overrides(changes), f"{' and '.join(names)} {verb} the held-out loss during training: " \
                                         + ", ".join(said) + "."


def aligned_config(cfg: RunConfig, emit) -> RunConfig:
    """`cfg` through `align_checkpoints` as a run starts, the sentence logged when it changed anything (a
    run.yaml the CLI or the Train tab did not align)."""
    cfg, said = align_checkpoints(cfg)
    if said:
        emit({"event": "log", "message": said})
    return cfg


def trainer_extras(cfg: RunConfig, has_eval: bool) -> dict:
    """TrainingArguments for early stopping / keep_best ({} when neither is on). TrainingError when the
    split left no held-out rows: transformers would otherwise fail on a missing eval_loss mid-run."""
    if not wanted(cfg):
        return {}
    if not has_eval:
        from finetune_core.training.train import TrainingError

        raise TrainingError(f"{_field(cfg)}: the data split left no held-out rows to measure the loss on; raise "
                            "eval_fraction or choose an evaluation file.")
    if cfg.eval_steps <= 0 or (cfg.save_steps <= 0 and cfg.keep_best):
        raise ValueError("align_checkpoints must run before trainer_extras")  # a bug, not user input
    # the best checkpoint and eval_loss are tracked whenever metric_for_best_model is set; loading it
    # back at the end is keep_best's part
    return dict(load_best_model_at_end=cfg.keep_best, metric_for_best_model=METRIC, greater_is_better=False)


def early_stopping(cfg: RunConfig) -> list:
    """[the early-stopping callback] when patience > 0, else []."""
    if cfg.early_stopping_patience <= 0:
        return []
    return [HeldOutEarlyStopping(cfg.early_stopping_patience)]


class HeldOutEarlyStopping(EarlyStoppingCallback):
    """transformers' EarlyStoppingCallback (patience counted in evaluations without a lower held-out
    loss), remembering the step at which it ended the run (``stopped_at``, None when it did not)."""

    def __init__(self, patience: int):
        super().__init__(early_stopping_patience=patience)
        self.stopped_at: int | None = None

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        """Count this evaluation toward the patience; note the step when it ends the run."""
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if self.early_stopping_patience_counter >= self.early_stopping_patience and state.global_step < state.max_steps:
            self.stopped_at = state.global_step


def _loss(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _words(loss: float | None) -> str:
    return f"{loss:.4f}" if loss is not None else "not a number"


def final_adapter(cfg: RunConfig, state, callbacks: list) -> tuple[dict, list[str]]:
    """(the run.yaml fact, the log's sentences) about which weights became the adapter, from the
    TrainerState after training: the best checkpoint (keep_best), its step and held-out loss, and
    whether early stopping ended the run and where. ({}, []) when neither setting is on."""
    if not wanted(cfg):
        return {}, []
    stopper = next((c for c in callbacks if isinstance(c, HeldOutEarlyStopping)), None)
    best_step = state.best_global_step or None
    best_loss = _loss(state.best_metric)
    fact = {"chosen": "last", "step": state.global_step, "best_step": best_step, "best_eval_loss": best_loss,
            "early_stopped": bool(stopper and stopper.stopped_at), "patience": cfg.early_stopping_patience}
    said = []
    if stopper and stopper.stopped_at:
        fact["stopped_at_step"] = stopper.stopped_at
        said.append(f"Early stopping: held-out loss has not improved for {evaluations(cfg.early_stopping_patience)}; "
                    f"stopped at step {stopper.stopped_at}.")
    loaded = cfg.keep_best and bool(state.best_model_checkpoint) and best_step is not None
    if loaded:
        fact.update(chosen="best", step=best_step, checkpoint=f"checkpoint-{best_step}", eval_loss=best_loss)
        said.append(f"Final adapter: checkpoint-{best_step} (held-out loss {_words(best_loss)}), the best.")
    elif cfg.keep_best:
        said.append(f"Final adapter: the weights at step {state.global_step}; no held-out evaluation was saved as a "
                    "checkpoint before the run ended, so there was no best checkpoint to keep.")
    elif best_step is not None:
        said.append(f"Final adapter: the weights at step {state.global_step} (keep_best is off); the lowest held-out "
                    f"loss was {_words(best_loss)} at step {best_step}.")
    return fact, said


def settle_adapter(cfg: RunConfig, trainer, stoppers: list, evaluate: bool, emit) -> dict:
    """After training: the log says which weights become the adapter (`final_adapter`, whose run.yaml
    fact is returned), and when `evaluate` (held-out rows, a run not stopped by the user) their held-out
    loss is measured, unless they are the best checkpoint: its loss is known, and evaluating it again
    would plot it at the last step. TrainingError when that loss is not a number."""
    from finetune_core.training.train import TrainingError

    fact, said = final_adapter(cfg, trainer.state, stoppers)
    for message in said:
        emit({"event": "log", "message": message})
    if evaluate and fact.get("chosen") != "best":
        with trainer.speedups.scope():
            metrics = trainer.evaluate()
        loss = metrics.get("eval_loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingError("The held-out loss is not a number: the run diverged; no adapter was saved.")
        emit({"event": "eval", "step": trainer.state.global_step, "eval_loss": loss})
    return fact


def outcome(cfg: RunConfig, fact: dict, reason: str, max_steps: int) -> dict:
    """The final status fields this module adds, from the `final_adapter` fact: the reason (`reason`
    as training gave it, or how early stopping ended the run, and the checkpoint kept), and
    best_checkpoint, best_step, best_eval_loss, early_stopped, early_stopped_at. Only the reason for a
    run with neither setting."""
    if not fact:
        return {"reason": reason}
    if fact.get("early_stopped"):
        reason = (f"stopped early at step {fact['stopped_at_step']} of {max_steps}: the held-out loss did not "
                  f"improve for {evaluations(cfg.early_stopping_patience)}")
    if fact.get("chosen") == "best":
        reason += f"; the adapter is {fact['checkpoint']}, the best by held-out loss"
    return {"reason": reason, "best_checkpoint": fact.get("checkpoint") or "", "best_step": fact.get("best_step"),
            "best_eval_loss": fact.get("best_eval_loss"), "early_stopped": fact.get("early_stopped", False),
            "early_stopped_at": fact.get("stopped_at_step")}
