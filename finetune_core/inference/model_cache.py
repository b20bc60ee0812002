"""ModelCache: the loaded inference models of this process, shared read-only.

Loading a model takes seconds, so the app keeps the last few loaded
(base-only or base + a run's adapter) and hands the same `InferenceModel` to
every session that asks for it. The weights are never mutated by chat or
evaluation; `InferenceModel.lock` serialises generation on them. The app
makes one cache and passes it to the tabs (no module-level globals).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from finetune_core.inference.chat_limits import TokenCounter
from finetune_core.inference.generation import InferenceModel
from finetune_core.models.sources import load_tokenizer
from finetune_core.runs.store import get_run


class ModelCache:
    """The last `capacity` loaded models by key, least recently used dropped first; thread-safe.

    One per app, shared by every session: a model is loaded once and the same object handed to all."""

    def __init__(self, capacity: int = 2):
        self.capacity = max(1, capacity)
        self._items: "OrderedDict[str, InferenceModel]" = OrderedDict()
        self._lock = threading.Lock()
        self._counters: "OrderedDict[str, TokenCounter]" = OrderedDict()  # by model source
        self._counters_lock = threading.Lock()

    def get(self, key: str, progress: Callable[[str], None] | None = None) -> InferenceModel:
        """`key` is 'run:<run id>' (base + that run's adapter) or 'base:<model source>'."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            kind, _, value = key.partition(":")
            if kind == "run":
                model = InferenceModel.from_run(get_run(value), progress)
            elif kind == "base":
                model = InferenceModel.base_only(value, progress)
            else:
                raise ValueError(f"Unknown model key {key!r}.")
            self._items[key] = model
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return model

    def counter(self, key: str, progress: Callable[[str], None] | None = None) -> TokenCounter:
        """A token counter for `key`'s model without loading its weights, so a chat turn is
        checked before it is queued: the loaded model's own, else one from its tokenizer."""
        model = self._items.get(key)  # a peek: get() may hold the lock for a whole model load
        if model is not None:
            return model.counter
        kind, _, value = key.partition(":")
        if kind not in ("run", "base"):
            raise ValueError(f"Unknown model key {key!r}.")
        source = get_run(value).config().model if kind == "run" else value
        with self._counters_lock:
            if source not in self._counters:
                self._counters[source] = TokenCounter(load_tokenizer(source, progress))
                while len(self._counters) > 2 * self.capacity:
                    self._counters.popitem(last=False)
            self._counters.move_to_end(source)
            return self._counters[source]

    def drop(self, key: str) -> None:
        """Forget `key`'s model (no-op when absent); the next `get` loads it again. A session still
        holding it keeps using it, and its memory goes when the last holder lets go."""
        with self._lock:
            self._items.pop(key, None)
