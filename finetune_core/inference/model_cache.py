"""ModelCache: the loaded inference models of this process, shared read-only.

Loading a model takes seconds, so the app keeps the last few loaded
(base-only, or a pair of sides: base + the adapters of both sides' chains)
and hands the same `InferenceModel` to every session that asks for it. A key
is ``base:<model source>``, ``sides:<a>|<b>`` (a pair of side keys, see
finetune_core.inference.sides) or ``run:<run id>``, which is the run's
default pair and shares its entry with the same pair asked for by name, so
two pairs are never confused and one pair is never loaded twice. The weights are never mutated by chat or
evaluation; `InferenceModel.lock` serialises generation on them. The app
makes one cache and passes it to the tabs (no module-level globals).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from finetune_core.inference.chat_limits import TokenCounter
from finetune_core.inference.generation import InferenceModel
from finetune_core.inference.sides import PAIR_PREFIX, default_sides, newer_run, pair_key, parse_pair_key, root_model
from finetune_core.models.sources import load_tokenizer
from finetune_core.runs.store import get_run


def canonical_key(key: str) -> str:
    """The cache entry a key names: ``run:<id>`` becomes its default pair's ``sides:`` key; ValueError
    for a key of no known kind."""
    kind, _, value = str(key).partition(":")
    if kind == "run":
        return pair_key(*default_sides(get_run(value)))
    if key.startswith(PAIR_PREFIX):
        return pair_key(*parse_pair_key(key))
    if kind == "base" and value:
        return key
    raise ValueError(f"Unknown model key {key!r}.")


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
        """`key` is 'run:<run id>' (the run against its default side), 'sides:<a>|<b>' (two sides) or
        'base:<model source>' (that model alone)."""
        key = canonical_key(key)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            if key.startswith(PAIR_PREFIX):
                model = InferenceModel.for_sides(*parse_pair_key(key), progress=progress)
            else:
                model = InferenceModel.base_only(key.partition(":")[2], progress)
            self._items[key] = model
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return model

    def counter(self, key: str, progress: Callable[[str], None] | None = None) -> TokenCounter:
        """A token counter for `key`'s model without loading its weights, so a chat turn is
        checked before it is queued: the loaded model's own, else one from its tokenizer."""
        key = canonical_key(key)
        model = self._items.get(key)  # a peek: get() may hold the lock for a whole model load
        if model is not None:
            return model.counter
        if key.startswith(PAIR_PREFIX):
            source = root_model(newer_run(*parse_pair_key(key)))
        else:
            source = key.partition(":")[2]
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
            self._items.pop(canonical_key(key), None)
