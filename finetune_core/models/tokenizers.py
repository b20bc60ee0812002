"""TokenizerCache: the tokenizers the Data tab's token statistics use, shared by the app.

The data layer counts tokens with whatever tokenizer it is given; this cache
is where the app gets one by model source (bundled, Hub id, folder).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

from finetune_core.data.stats import ensure_chat_template
from finetune_core.models.sources import ModelError, load_tokenizer


class TokenizerCache:
    """Tokenizers for token statistics, by model source, most recently used kept.

    One per app, shared read-only between users: each tokenizer gets its chat
    template fallback once, here, before other threads can see it, and a lock
    keeps two clicks from loading the same one twice.
    """

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str, progress: Callable[[str], None] | None = None):
        """The tokenizer of ``source`` (loaded on first use; ModelError when it cannot be)."""
        with self._lock:
            if source in self._items:
                self._items.move_to_end(source)
                return self._items[source]
            tok = load_tokenizer(source, progress)
            ensure_chat_template(tok)
            self._items[source] = tok
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return tok

    def for_stats(self, source: str | None, default: str,
                  progress: Callable[[str], None] | None = None) -> tuple[Any, str]:
        """(tokenizer or None, problem text) for ``source`` (blank: ``default``). A bad model
        choice only costs the token statistics: the rest of a data view does not need them."""
        source = (source or "").strip() or default
        try:
            return self.get(source, progress), ""
        except ModelError as exc:
            return None, str(exc)
