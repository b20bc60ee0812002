"""Label-only scoring in TRL's fused LM head on CPU, for one trainer at a time.

TRL's fused log-prob head scores only the label positions on Triton devices
and every position elsewhere, so that compiled shapes stay fixed. On a CPU
nothing is compiled, and for prompt/completion rows most positions are
prompt: scoring only the label positions gives the same loss for a fraction
of the vocabulary-wide products.

TRL decides per call with its private `trl.trainer.utils._use_triton(device)`;
there is no public option for it (SFTConfig.loss_type offers "nll" and "dft",
which score the same positions either way). `label_only_lm_head()` puts a
wrapper in its place for the length of a `with` block, answering yes for CPU
tensors only in the thread inside the block, and puts TRL's own function back
when the last block ends: another trainer (DPO, KTO, another thread) sees
TRL's answer. `unavailable_reason()` says when TRL has renamed or changed the
function; tests/test_speedups.py fails loudly in that case.
"""
from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from typing import Iterator

TRL_FUNCTION = "_use_triton"


class _Patch:
    """How many blocks are open process-wide (the wrapper stays while any is) and, per
    thread, whether this thread is inside one. Library state, not user state."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open = 0
        self.original = None
        self.inside = threading.local()

    def depth(self) -> int:
        return getattr(self.inside, "depth", 0)


_PATCH = _Patch()


def _trl_utils():
    import trl.trainer.utils as trl_utils

    return trl_utils


def unavailable_reason() -> str:
    """Why the switch cannot be used with the installed TRL ("" when it can)."""
    try:
        trl_utils = _trl_utils()
    except ImportError:
        return "TRL is not installed"
    current = getattr(trl_utils, TRL_FUNCTION, None)
    if current is None:
        return f"this TRL has no trl.trainer.utils.{TRL_FUNCTION} (renamed or removed)"
    params = list(inspect.signature(_PATCH.original or current).parameters)
    if params != ["device"]:
        return f"TRL's {TRL_FUNCTION} now takes ({', '.join(params)}) instead of (device)"
    return ""


@contextmanager
def label_only_lm_head() -> Iterator[None]:
    """Inside the block, TRL's fused head scores only label positions of CPU tensors in this thread."""
    if unavailable_reason():
        yield
        return
    trl_utils = _trl_utils()
    with _PATCH.lock:
        if _PATCH.open == 0:
            original = getattr(trl_utils, TRL_FUNCTION)
            _PATCH.original = original

            def compact_here(device) -> bool:
                return (device.type == "cpu" and _PATCH.depth() > 0) or original(device)

            setattr(trl_utils, TRL_FUNCTION, compact_here)
        _PATCH.open += 1
    _PATCH.inside.depth = _PATCH.depth() + 1
    try:
        yield
    finally:
        _PATCH.inside.depth -= 1
        with _PATCH.lock:
            _PATCH.open -= 1
            if _PATCH.open == 0:
                setattr(trl_utils, TRL_FUNCTION, _PATCH.original)
                _PATCH.original = None
