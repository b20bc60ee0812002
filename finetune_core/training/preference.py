"""Preference training (DPO, KTO, ORPO) with TRL's trainers, and the checks that refuse a run up front.

`build_preference_trainer` is `train.build_trainer`'s counterpart for ``objective`` dpo, kto and orpo:
the model the run starts from (the base, or its parent run's adapter merged: `train.load_start`), a new
LoRA adapter (or the full weights), TRL's DPOTrainer, KTOTrainer or ORPOTrainer (``trl.experimental.orpo``)
with the run's beta and loss type, and the callbacks, checkpoints and CPU speed-ups of an SFT run.

The reference ("reference: start") is the model the run starts from. With LoRA it is no second copy:
TRL scores it with the new adapter switched off, which is the merged parent (or the base). A full
fine-tune keeps a frozen copy, so the weights take twice the memory. "reference: none" is reference-free
DPO: TRL 1.16 has no flag for it any more (older TRLs had ``reference_free``), so the reference
log-probabilities are zeros, put where TRL's ``precompute_ref_log_probs`` puts computed ones.

Rows are the data layer's normalised rows (finetune_core/data/preference.py: rows_kind, unpair,
chosen_as_sft): pairs feed DPO and ORPO; KTO takes answers marked desirable or not, or pairs it unpairs;
SFT given pairs learns the chosen answers.
`check_start` refuses before a run is created what would fail later: a file the objective cannot use
(`data_problem`), a setting TRL would refuse (`config_problem`), a parent run that cannot be used.
"""
from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Callable

from finetune_core.config import RunConfig
from finetune_core.data import preference as data_preference
from finetune_core.training.train import Emit, TrainingError

PAIR_ONLY = ("dpo", "orpo")
KIND_WORDS = {"pairs": "chosen/rejected pairs", "unpaired": "answers marked desirable or not (thumbs up/down)",
              "text": "plain text", "sft": "prompt/answer demonstrations"}
TRAINERS = {"dpo": "DPOTrainer", "kto": "KTOTrainer", "orpo": "ORPOTrainer"}


# -- the rows ------------------------------------------------------------------
def rows_kind(rows: list[dict]) -> str:
    """"pairs", "unpaired", "text" or "sft": what normalised rows hold (the data layer's definition).

    >>> rows_kind([{"prompt": [], "chosen": [], "rejected": []}]), rows_kind([{"text": "hi"}])
    ('pairs', 'text')
    """
    return data_preference.rows_kind(rows)


def sft_rows(rows: list[dict], say: Callable[[str], None] | None = None) -> list[dict]:
    """Rows for SFT: pairs become their chosen answers (said through `say`), other rows stay as they are."""
    if not rows or rows_kind(rows) != "pairs":
        return rows
    if say:
        say(f"The data holds {len(rows)} preference pairs: SFT trains on the chosen answers (chosen_as_sft).")
    return data_preference.chosen_as_sft(rows)


def objective_rows(cfg: RunConfig, rows: list[dict], say: Callable[[str], None] | None = None) -> list[dict]:
    """The fields TRL's trainer for ``cfg.objective`` reads: prompt/chosen/rejected (DPO, ORPO), or
    prompt/completion/label (KTO; pairs are unpaired, and the rows shuffled once with the data seed
    because KTO reads them in order)."""
    if cfg.objective in PAIR_ONLY:
        return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    if rows and rows_kind(rows) == "pairs":
        if say:
            say(f"KTO: the {len(rows)} pairs are unpaired into {2 * len(rows)} answers, chosen ones marked "
                "desirable and rejected ones not.")
        rows = data_preference.unpair(rows)
    out = [{"prompt": r["prompt"], "completion": r["completion"], "label": bool(r["desirable"])} for r in rows]
    random.Random(cfg.data.seed).shuffle(out)
    return out


# -- what is refused before a run exists ---------------------------------------
def data_problem(cfg: RunConfig, kind: str, source: str = "") -> str | None:
    """Why rows of this `kind` (see `rows_kind`) cannot feed ``cfg.objective``, naming the field and the
    file (`source`, default the data file's name); None when they can.

    >>> print(data_problem(RunConfig.from_dict({"objective": "dpo", "data_path": "chat.jsonl"}), "sft"))
    objective dpo needs chosen/rejected pairs (prompt, chosen and rejected), and chat.jsonl holds prompt/answer demonstrations: pick a preference file in the Data tab, or choose objective sft.
    >>> data_problem(RunConfig(objective="kto"), "pairs") is None
    True
    """
    name = source or Path(cfg.data.data_path).name or "the data file"
    have = KIND_WORDS.get(kind, kind)
    if cfg.objective in PAIR_ONLY and kind != "pairs":
        other = "kto" if kind == "unpaired" else "sft"
        return (f"objective {cfg.objective} needs chosen/rejected pairs (prompt, chosen and rejected), and {name} "
                f"holds {have}: pick a preference file in the Data tab, or choose objective {other}.")
    if cfg.objective == "kto" and kind not in ("pairs", "unpaired"):
        return (f"objective kto needs answers marked desirable or not (a boolean label) or chosen/rejected "
                f"pairs, and {name} holds {have}: pick such a file in the Data tab, or choose objective sft.")
    if cfg.objective == "sft" and kind == "unpaired":
        return (f"objective sft learns from demonstrations, and {name} holds {have}, some of them bad "
                "answers: choose objective kto.")
    return None


def check_rows(cfg: RunConfig, train: list[dict], held: list[dict]) -> None:
    """Refuse split rows this objective cannot train on (TrainingError, see `data_problem`)."""
    for rows, what in ((train, "training rows"), (held, "held-out rows")):
        problem = data_problem(cfg, rows_kind(rows)) if rows else None
        if problem:
            raise TrainingError(f"The run's {what}: {problem}")


def orpo_missing() -> str:
    """Why this TRL cannot run ORPO ("" when ``trl.experimental.orpo`` imports)."""
    import os
    import warnings

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we name the namespace in the docs ourselves
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: F401
    except ImportError as exc:
        return f"objective: orpo needs trl.experimental.orpo, which the installed TRL lacks ({exc})."
    return ""


def config_problem(cfg: RunConfig) -> str | None:
    """A setting TRL's preference trainers would refuse once the run has started, named; None when fine."""
    if cfg.objective == "sft":
        return None
    if cfg.objective == "orpo" and orpo_missing():
        return orpo_missing()
    if "lm_head" in [t.strip() for t in cfg.target_modules.split(",")]:
        return ("target_modules: a preference run cannot train an adapter on lm_head (TRL scores answers with "
                "its weights directly); leave lm_head out.")
    loss = cfg.loss_type if cfg.loss_type != "auto" else "kto"
    if cfg.objective == "kto" and cfg.reference == "none":
        return "reference: KTO needs its reference model (TRL has no reference-free KTO); choose 'start'."
    if cfg.objective == "kto" and loss == "kto" and cfg.batch_size < 2:
        return ("batch_size: KTO estimates its KL term from the other rows of a batch; use a batch size of at "
                "least 2 (or loss_type apo_zero_unpaired).")
    return None


def check_objective(cfg: RunConfig) -> None:
    """Raise TrainingError when `config_problem` finds one."""
    problem = config_problem(cfg)
    if problem:
        raise TrainingError(problem)


def check_start(cfg: RunConfig) -> None:
    """Everything to refuse before a run of `cfg` is created: `config_problem`, the parent run
    (runs/chain.check_parent: ConfigError naming parent_run) and the data and evaluation files' rows
    (`data_problem`). A file that cannot be read is left to the run, which names its problems."""
    from finetune_core.data.dataset import prepare_data
    from finetune_core.runs.chain import check_parent

    check_objective(cfg)
    check_parent(cfg)
    for path in (cfg.data.data_path, cfg.data.eval_path):
        if not path:
            continue
        report = prepare_data(cfg.data if path == cfg.data.data_path else cfg.data.for_file(path))
        problem = data_problem(cfg, rows_kind(report.rows), Path(path).name) if report.usable else None
        if problem:
            raise TrainingError(problem)


# -- the trainer -----------------------------------------------------------------
def preference_args(cfg: RunConfig, run, policy, grad_ckpt: bool, has_eval: bool):
    """TRL's DPOConfig, KTOConfig or ORPOConfig: the arguments every objective shares
    (`train.trainer_arguments`), then beta, the loss type ("auto": TRL's default) and max_length."""
    from finetune_core.training.train import trainer_arguments

    common = {**trainer_arguments(cfg, run, policy, grad_ckpt, has_eval), "beta": cfg.beta,
              "max_length": cfg.max_length}
    if cfg.objective == "dpo":
        from trl import DPOConfig

        loss = cfg.loss_type.split("+") if cfg.loss_type != "auto" else ["sigmoid"]  # "sigmoid+sft": two, summed
        return DPOConfig(**common, loss_type=loss, precompute_ref_log_probs=cfg.reference == "none")
    if cfg.objective == "kto":
        from trl import KTOConfig

        loss = cfg.loss_type if cfg.loss_type != "auto" else "kto"
        # the KL estimate pairs each row with its neighbour in a fixed order: TRL needs sequential batches
        return KTOConfig(**common, loss_type=loss, train_sampling_strategy="sequential" if loss == "kto" else "random")
    orpo_missing()  # sets TRL_EXPERIMENTAL_SILENCE before the import
    from trl.experimental.orpo import ORPOConfig

    # ORPO's batches have no "input_ids" to count tokens by, and its collator keeps every column itself
    common.update(include_num_input_tokens_seen="no", remove_unused_columns=False)
    return ORPOConfig(**common)


def trainer_class(cfg: RunConfig):
    """TRL's trainer class for the objective; reference-free DPO subclasses DPOTrainer so that the
    "precomputed" reference log-probabilities are zeros."""
    if cfg.objective == "orpo":
        from trl.experimental.orpo import ORPOTrainer

        return ORPOTrainer
    import trl

    base = getattr(trl, TRAINERS[cfg.objective])
    if cfg.objective != "dpo" or cfg.reference != "none":
        return base

    class ReferenceFreeDPOTrainer(base):
        """DPOTrainer whose reference log-probabilities are 0: the loss compares chosen and rejected
        under the policy alone (reference-free DPO)."""

        def _precompute_ref_logps(self, dataset, name, batch_size):
            zeros = [0.0] * len(dataset)
            return dataset.add_column("ref_chosen_logps", zeros).add_column("ref_rejected_logps", zeros)

    return ReferenceFreeDPOTrainer


def reference_model(cfg: RunConfig, model, say: Callable[[str], None]):
    """The `ref_model` to hand TRL: None (LoRA: the adapter switched off; reference-free; ORPO), or for
    a full fine-tune against its start a frozen copy of the start model, made before training touches it."""
    if cfg.objective == "orpo" or cfg.reference == "none" or cfg.method != "full":
        return None
    say("Full fine-tune: a frozen copy of the start model is kept as the reference, so the weights take "
        "twice the memory.")
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def identity_dropouts(model) -> int:
    """Make the LoRA dropouts TRL switched off (``disable_dropout``: nn.Dropout with p 0) nn.Identity, as
    PEFT builds them for lora_dropout 0: the same function, in the form the fused LoRA step takes
    (finetune_core/speedups/fused_lora.py). Returns how many were replaced."""
    from torch import nn

    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, nn.ModuleDict):
            for name, drop in list(dropouts.items()):
                if type(drop) is nn.Dropout and drop.p == 0:
                    dropouts[name] = nn.Identity()
                    replaced += 1
    return replaced


def withheld_speedups(cfg: RunConfig) -> dict[str, str]:
    """The CPU speed-ups a preference run must not get, with the reason its log gives. The fused RMSNorm
    step runs only where gradients are taken, so the reference (scored without them, by the library's
    norm) would round differently from the policy: in bf16 on the bundled model the DPO loss at step 0
    was 0.671 instead of log 2. The other speed-ups give both the same numbers and stay
    (tests/test_train_preference.py)."""
    if cfg.objective == "orpo" or cfg.reference == "none":
        return {}  # no reference model is scored
    return {"fused_rms_norm": "the reference is scored without gradients, where this step is not used: "
                              "policy and reference would round differently"}


def describe(cfg: RunConfig, parent_name: str) -> str:
    """The log line that says what the run optimises and against which reference."""
    loss = cfg.loss_type if cfg.loss_type != "auto" else {"dpo": "sigmoid", "kto": "kto", "orpo": "orpo"}[cfg.objective]
    start = f"run {parent_name!r} merged into {cfg.model}" if parent_name else f"the base model {cfg.model}"
    if cfg.objective == "orpo":
        ref = "no reference model (ORPO)"
    elif cfg.reference == "none":
        ref = "no reference model (reference-free: the reference log-probabilities are 0)"
    else:
        ref = f"reference: the start model, {start}" + (" (the new adapter switched off)" if cfg.method != "full"
                                                         else "")
    return (f"Objective {cfg.objective}: TRL's {TRAINERS[cfg.objective]}, beta {cfg.beta}, loss {loss}; starts "
            f"from {start}; {ref}. TRL turns dropout off in preference runs (lora_dropout is not used).")


def build_preference_trainer(cfg: RunConfig, run, train: list[dict], held: list[dict], policy, callbacks: list,
                             emit: Emit):
    """TRL's trainer for ``cfg.objective`` (dpo, kto, orpo) on the run's split, returned with the tokenizer
    as `train.build_trainer` returns SFT's: same callbacks, checkpoints, precision and speed-ups."""
    from datasets import Dataset

    from finetune_core.runs.chain import check_parent
    from finetune_core.training.train import finish_setup, load_start, peft_config

    say = lambda m: emit({"event": "log", "message": m})  # noqa: E731
    parent = check_parent(cfg)
    start = load_start(cfg, run, policy, say)
    rows, held_rows = objective_rows(cfg, train, say), objective_rows(cfg, held)
    kwargs = dict(model=start.model, args=preference_args(cfg, run, policy, start.grad_ckpt, bool(held)),
                  train_dataset=Dataset.from_list(rows), eval_dataset=Dataset.from_list(held_rows) if held else None,
                  processing_class=start.tokenizer, peft_config=peft_config(cfg), callbacks=callbacks)
    if cfg.objective != "orpo":
        kwargs["ref_model"] = reference_model(cfg, start.model, say)
    trainer = trainer_class(cfg)(**kwargs)
    if len(trainer.train_dataset) == 0:
        raise TrainingError(f"max_length: every training prompt is at least {cfg.max_length} tokens long, so no "
                            "answer would be scored; raise max_length.")
    left_out = len(rows) - len(trainer.train_dataset)
    if left_out:  # TRL drops a row whose prompt alone fills max_length: say how many, never silently
        say(f"{left_out} of {len(rows)} training rows left out: their prompt alone is {cfg.max_length} tokens or "
            "longer (max_length), so no answer token would be scored. Raise max_length to keep them.")
        run.record_facts(rows_left_out_by_length=left_out)
    say(describe(cfg, parent.name if parent else ""))
    identity_dropouts(trainer.model)
    return finish_setup(trainer, cfg, run, policy, start, emit, withheld_speedups(cfg)), start.tokenizer
