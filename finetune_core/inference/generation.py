"""Generation with base and tuned from one copy of the weights.

`InferenceModel` holds a base model and, for a LoRA run, its adapter. The
tuned side is the model with the adapter on, the base side the same model
with it off (PEFT's `disable_adapter`, or `adapter_names=["__base__", ...]`
for a mixed batch), so memory holds one model. A lock serialises generation
on the shared weights. A full fine-tune holds two models (there is no adapter
to switch off).

* `generate(prompts, tuned=...)` — batched greedy generation with left padding
  (held-out evaluation); on a CPU from per-prompt prefilled caches
  (speedups.kv_cache) unless the speed-ups are off for this model.
* `stream_pair(...)` — base and tuned answers streamed together, token by
  token, in one mixed batch (the side-by-side chat; in
  finetune_core.inference.streaming).
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


class InferenceModel:
    """A base model and its tuned side for generation, loaded once and shared; `lock` serialises generation.

    For a LoRA run the tuned side is the adapter on one model; a full fine-tune holds two models.
    The tokenizer is changed in place: left padding, and EOS as pad token where it has none."""

    def __init__(self, model, tokenizer, policy: DevicePolicy, tuned_model=None, label: str = "",
                 speedups: str = "auto"):
        self.model = model  # PeftModel when an adapter is loaded, else a plain model
        self.tuned_model = tuned_model  # only for full fine-tunes
        self.tokenizer = tokenizer
        self.policy = policy
        self.label = label
        self.lock = threading.Lock()
        self.tokenizer.padding_side = "left"  # decoder-only batches must pad on the left
        from finetune_core.speedups import apply_inference

        # what this model's generation gets (speedups.Report: applied, and why not)
        self.speedups = apply_inference(model, policy.device, speedups)
        if tuned_model is not None:
            apply_inference(tuned_model, policy.device, speedups)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.counter = TokenCounter(self.tokenizer)  # limit checks count on their own copy

    @property
    def has_adapter(self) -> bool:
        """Whether `model` is a PEFT model whose adapter can be switched off (a LoRA or QLoRA run)."""
        return hasattr(self.model, "disable_adapter") and hasattr(self.model, "peft_config")

    @property
    def has_tuned(self) -> bool:
        """Whether there is a tuned side: an adapter, or a second model for a full fine-tune."""
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
    def from_run(cls, run: Run, progress: Callable[[str], None] | None = None) -> "InferenceModel":
        """The run's base model with its saved adapter (or, for a full fine-tune, base and tuned models), on the
        run's device with its speed-up setting; FileNotFoundError when the run has saved no adapter yet."""
        cfg = run.config()
        if not run.has_adapter():
            raise RunError(f"Run {run.id} has no saved adapter yet.")
        policy = device_policy(cfg.device if cfg.device != "auto" else "auto")
        tok = load_tokenizer(cfg.model, progress)
        base = load_model(cfg.model, policy, progress).eval()
        if cfg.method == "full":
            tuned = load_model(str(run.adapter_dir), policy, progress).eval()
            return cls(base, tok, policy, tuned_model=tuned, label=run.id, speedups=cfg.speedups)
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(run.adapter_dir), is_trainable=False).eval()
        return cls(model, tok, policy, label=run.id, speedups=cfg.speedups)

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
        """The module that answers for one side: the base model, a separate tuned model when one is held,
        or the same LoRA model (switch the side with `side_context`). InputError for a tuned side that is missing."""
        if not tuned:
            return self.model
        if self.tuned_model is not None:
            return self.tuned_model
        if not self.has_adapter:
            raise InputError("This model has no adapter: there is no tuned side.")
        return self.model

    def side_context(self, model, tuned: bool):
        """The context for one side: the adapter switched off for the base side of a LoRA model."""
        if self.has_adapter and not tuned and model is self.model:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def side(self, tuned: bool):
        """(weights, context) that answer as the base (``tuned=False``) or the tuned side.

        Run the weights inside the context: for a LoRA model both sides are the same
        weights, and the context switches the adapter off for the base side. Ask for a
        fresh pair per use (PEFT's ``disable_adapter()`` context is one-shot). InputError
        when the tuned side is asked of a model without one.
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
