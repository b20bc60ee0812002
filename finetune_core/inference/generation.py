"""Generation with two sides (base and tuned, or any two models) from one copy of the weights.

`InferenceModel` holds a model and, for LoRA runs, their adapters. Side A
(``tuned=False``) and side B (``tuned=True``) are the same weights with
different adapters switched on (none: PEFT's `disable_adapter`; a chain: all
of its adapters at once; `adapter_names=[...]` for a mixed batch), so memory
holds one model. Which adapters make a side, and what the sides are called,
come from `InferenceModel.for_sides` (finetune_core.inference.sides); a run
alone is compared with its default pair (`from_run`). A lock serialises
generation and adapter switching on the shared weights. Two models are held
only when the sides start from different weights (a full fine-tune, or
different base models).

* `generate(prompts, tuned=...)` — batched greedy generation with left padding
  (held-out evaluation); on a CPU from per-prompt prefilled caches
  (speedups.kv_cache) unless the speed-ups are off for this model.
* `stream_pair(...)` — both sides' answers streamed together, token by
  token, in one mixed batch when each side has at most one adapter (the
  side-by-side chat; in finetune_core.inference.streaming).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

from finetune_core.errors import InputError
from finetune_core.inference.chat_limits import TokenCounter
from finetune_core.limits import limits
from finetune_core.models.sources import DevicePolicy, device_policy, load_model, load_tokenizer
from finetune_core.runs.store import Run, RunError


@dataclass
class GenSettings:
    """How to generate: answer length in tokens (capped by the server's limit), temperature (0: greedy),
    nucleus top_p (only when sampling) and a seed."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0

    @property
    def new_tokens(self) -> int:
        """max_new_tokens within the server's limit: the callers refuse larger values with a
        message (chat_limits.check_new_tokens); this cap covers any path that does not."""
        return max(1, min(int(self.max_new_tokens), limits().max_new_tokens))

    def kwargs(self, tokenizer) -> dict:
        """Keyword arguments for `model.generate` with this tokenizer's pad id: sampling when temperature > 0,
        else greedy with the sampling settings cleared."""
        kw = {"max_new_tokens": self.new_tokens, "pad_token_id": tokenizer.pad_token_id}
        if self.temperature and self.temperature > 0:
            kw.update(do_sample=True, temperature=float(self.temperature), top_p=float(self.top_p))
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library, or no C library found)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_memory() -> None:
    """Give the memory a finished generation freed back to the system. glibc keeps freed
    heap pages for reuse, so without this a long prompt's activations stay in the
    process's RSS after the answer (measured: 1.47 GB -> 0.92 GB after a 3,900-token
    prompt on the bundled model)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _Cancel:
    """StoppingCriteria that ends generation when any of its events is set."""

    def __init__(self, *events: threading.Event | None):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stop = self.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def _is_peft(model) -> bool:
    """Whether `model` is a PEFT model (adapters that can be switched)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def _switched_on(model, names: list[str]):
    """Switch exactly `names` on in PEFT model `model` (the LoRA layers add each active adapter's update,
    so a chain's adapters on together equal the chain merged). Done on entry, not when made: callers
    make the context before taking the lock."""
    if list(model.base_model.active_adapters) != list(names):
        model.base_model.set_adapter(list(names) if len(names) > 1 else names[0], inference_mode=True)
    yield


class InferenceModel:
    """Two sides for generation, loaded once and shared; `lock` serialises generation on them.

    Side A answers as ``tuned=False``, side B as ``tuned=True``. `side_adapters` names the adapters
    each side switches on ([] = none: the base weights); made directly from a PEFT model it is
    {False: [], True: the model's active adapters} (base vs tuned). A second model (`tuned_model`)
    answers for side B when the sides start from different weights. The tokenizer is changed in
    place: left padding, and EOS as pad token where it has none."""

    def __init__(self, model, tokenizer, policy: DevicePolicy, tuned_model=None, label: str = "",
                 speedups: str = "auto", sides: dict[bool, list[str]] | None = None,
                 side_labels: dict[bool, str] | None = None, side_keys: tuple[str, str] | None = None):
        self.model = model  # PeftModel when adapters are loaded, else a plain model
        self.tuned_model = tuned_model  # side B's own model when the sides' weights differ
        self.tokenizer = tokenizer
        self.policy = policy
        self.label = label
        self.lock = threading.Lock()
        self.side_adapters = sides if sides is not None else {
            False: [], True: list(model.active_adapters) if _is_peft(model) else []}
        self.side_labels = side_labels or {False: "Base", True: "Tuned"}
        self.side_keys = side_keys  # ("base" | "run:<id>", ...) when made by for_sides
        self.tokenizer.padding_side = "left"  # decoder-only batches must pad on the left
        from finetune_core.speedups import apply_inference

        # What this model's generation gets (speedups.Report: applied, and why not). Both speed-ups
        # change attention and the cache only; LoRA layers, however many adapters are on, are
        # untouched (tests/test_sides.py checks a multi-adapter side's answers against the merged chain).
        self.speedups = apply_inference(model, policy.device, speedups)
        if tuned_model is not None:
            apply_inference(tuned_model, policy.device, speedups)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.counter = TokenCounter(self.tokenizer)  # limit checks count on their own copy

    @property
    def has_adapter(self) -> bool:
        """Whether `model` is a PEFT model whose adapters are switched per side (LoRA or QLoRA runs)."""
        return _is_peft(self.model)

    @property
    def has_tuned(self) -> bool:
        """Whether there is a side B: adapters to switch, or a second model."""
        return self.has_adapter or self.tuned_model is not None

    # -- construction --------------------------------------------------------
    @classmethod
    def base_only(cls, source: str, progress: Callable[[str], None] | None = None) -> "InferenceModel":
        """The model `source` alone, with no tuned side, on the default device (loads it: slow, may download)."""
        policy = device_policy()
        tok = load_tokenizer(source, progress)
        model = load_model(source, policy, progress).eval()
        return cls(model, tok, policy, label=source)

    @classmethod
    def for_sides(cls, a: str, b: str, progress: Callable[[str], None] | None = None,
                  runs: tuple[Run, ...] = ()) -> "InferenceModel":
        """Side keys `a` ("base" or "run:<run id>") and `b` as sides A and B (see inference.sides): one
        base with both chains' adapters, or two models when the bases differ and both fit (InputError
        otherwise); RunError when a run in a chain has no saved adapter yet. `runs`: runs already open
        (found by id before the runs root is searched)."""
        from finetune_core.inference.sides import load_pair

        return load_pair(a, b, progress, {r.id: r for r in runs})

    @classmethod
    def from_run(cls, run: Run, progress: Callable[[str], None] | None = None) -> "InferenceModel":
        """The run against its default side (its parent's chain, else the base; see sides.default_sides),
        on the run's device with its speed-up setting; RunError when the run has saved no adapter yet."""
        from finetune_core.inference.sides import default_sides

        if not run.has_adapter():
            raise RunError(f"Run {run.id} has no saved adapter yet.")
        return cls.for_sides(*default_sides(run), progress=progress, runs=(run,))

    # -- prompts ---------------------------------------------------------------
    def render(self, messages: list[dict]) -> str:
        """The prompt text for chat `messages`, ending with the assistant's turn opening; a tokenizer without
        a chat template is given the ChatML fallback."""
        from finetune_core.data.stats import ensure_chat_template

        ensure_chat_template(self.tokenizer)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, texts: list[str]):
        """Tokenize a batch of rendered prompts (left-padded, no special tokens added) onto the model's device."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.policy.device) for k, v in enc.items()}

    def weights(self, tuned: bool):
        """The module that answers for one side: `model`, or side B's own model when one is held
        (switch the side with `side_context`). InputError for a side B that is missing."""
        if not tuned:
            return self.model
        if self.tuned_model is not None:
            return self.tuned_model
        if not self.has_adapter:
            raise InputError("This model has no adapter: there is no tuned side.")
        return self.model

    def side_context(self, model, tuned: bool):
        """The context one side runs in on `model`: its adapters switched on (all of a chain's at once),
        or every adapter off for a side without any. Enter it under `lock`: it switches shared weights."""
        if not _is_peft(model):
            return contextlib.nullcontext()
        names = self.side_adapters[tuned]
        return _switched_on(model, names) if names else model.disable_adapter()

    def side(self, tuned: bool):
        """(weights, context) that answer as side A (``tuned=False``) or side B.

        Run the weights inside the context: for a LoRA model both sides are the same
        weights, and the context switches the side's adapters on (or all off). Ask for a
        fresh pair per use (PEFT's ``disable_adapter()`` context is one-shot). InputError
        when side B is asked of a model without one.
        """
        model = self.weights(tuned)
        return model, self.side_context(model, tuned)

    # -- batched (evaluation) ------------------------------------------------
    def generate(self, prompts: list[list[dict]], tuned: bool, settings: GenSettings | None = None,
                 batch_size: int = 16, progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None) -> list[str]:
        """Greedy (by default) answers for chat prompts, in batches with left padding.

        On a CPU each prompt is prefilled on its own after the opening they all
        share, and the batch decodes together from those caches (see speedups.kv_cache);
        on a GPU a padded batch prefill is cheap and plain `generate` is used.
        """
        import torch
        from transformers import StoppingCriteriaList

        from finetune_core.inference.batching import kv_bytes_per_token, plan_batches
        from finetune_core.speedups.kv_cache import prefilled_batch, shared_prefix

        settings = settings or GenSettings()
        texts = [self.render(p) for p in prompts]
        tokens = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        answers: list[str] = [""] * len(texts)
        model = self.weights(tuned)
        # Length-sorted batches (little padding), each capped so its cache fits the memory budget.
        batches = plan_batches([len(t) for t in tokens], batch_size, settings.new_tokens,
                               kv_bytes_per_token(model))
        stopped = lambda: cancel is not None and cancel.is_set()  # noqa: E731
        prefilled = "prefilled_kv_cache" in self.speedups.applied() and all(len(t) > 1 for t in tokens)
        prefix, prefix_len = None, 0
        if prefilled:
            with self.lock:
                prefix, prefix_len = shared_prefix(model, tokens, self.policy.device, lambda: self.side_context(model, tuned))
        done = 0
        for idx in batches:
            if stopped():
                raise InterruptedError("Generation cancelled.")
            with self.lock, torch.inference_mode(), self.side_context(model, tuned):
                if prefilled:
                    inputs = prefilled_batch(model, [tokens[i] for i in idx], self.tokenizer.pad_token_id,
                                             settings.new_tokens, self.policy.device, prefix, prefix_len,
                                             stopped)
                else:
                    inputs = self.encode([texts[i] for i in idx])
                out = model.generate(**inputs, **settings.kwargs(self.tokenizer),
                                     stopping_criteria=StoppingCriteriaList([_Cancel(cancel)]))
            new = out[:, inputs["input_ids"].shape[1]:]
            for row, i in enumerate(idx):
                answers[i] = self.tokenizer.decode(new[row], skip_special_tokens=True).strip()
            done += len(idx)
            if progress:
                progress(done, len(texts))
        release_memory()
        return answers

    # -- streaming (chat) -----------------------------------------------------
    def stream_pair(self, base_messages: list[dict] | None, tuned_messages: list[dict] | None,
                    settings: GenSettings | None = None, cancel: threading.Event | None = None
                    ) -> Iterator[tuple[str, str]]:
        """Yield (base_text, tuned_text) snapshots as tokens arrive; either side may be None
        (see finetune_core.inference.streaming)."""
        from finetune_core.inference.streaming import stream_pair

        return stream_pair(self, base_messages, tuned_messages, settings, cancel)
