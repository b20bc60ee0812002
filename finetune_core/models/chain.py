"""Load the model a run starts from, or a run's own model, by following its chain of parent runs.

`load_start_model` is what training uses: the base, with every ancestor's
adapter merged into its weights in memory (merge_and_unload), ready for a new
adapter. Merged weights equal the adapters applied on the fly up to float
rounding; merging keeps a single set of weights and lets the trainer's
"adapter off" view be the parent (TRL's reference model with PEFT).
"""
from __future__ import annotations

from typing import Callable

from finetune_core.models.sources import DevicePolicy, load_model
from finetune_core.runs.chain import chain_source
from finetune_core.runs.store import Run


def merge_adapters(model, adapters, progress: Callable[[str], None] | None = None):
    """`model` with each adapter folder in `adapters` merged into its weights, in order."""
    from peft import PeftModel

    for folder in adapters:
        if progress:
            progress(f"Merging the adapter of run {folder.parent.name} into the weights...")
        model = PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
    return model


def load_chain_model(run: Run, policy: DevicePolicy, include_self: bool = True,
                     progress: Callable[[str], None] | None = None, **load_kwargs):
    """`run`'s model (``include_self=False``: its parent's) as one plain model with the chain's adapters
    merged; the base alone when the run has no parent and ``include_self`` is False."""
    source = chain_source(run, include_self=include_self)
    model = load_model(source.base, policy, progress, **load_kwargs)
    return merge_adapters(model, source.adapters, progress)


def load_start_model(run: Run, policy: DevicePolicy, progress: Callable[[str], None] | None = None,
                     **load_kwargs):
    """The model a new run trains from: its parent run's model merged (when ``parent_run`` is set),
    else the base model named in its config."""
    return load_chain_model(run, policy, include_self=False, progress=progress, **load_kwargs)
