"""Both sides' answers streamed together, token by token: the side-by-side chat.

`stream_pair` is what `InferenceModel.stream_pair` runs. For a LoRA model whose
sides have at most one adapter each, both go in one mixed batch (PEFT's
``adapter_names``: row 0 side A, row 1 side B), so the weights are read once
per token. PEFT's mixed batch gives a row one adapter, so a side that is a
chain of several (an SFT -> DPO run), two models, or a DoRA adapter (PEFT
refuses it in a mixed batch) stream side A, then side B. Generation
runs on a worker thread under the model's lock and hands snapshots back through
a queue; when the consumer goes away (a page closed) the worker stops at its
next token.

The stopping criteria and the memory release are looked up in
``finetune_core.inference.generation`` at call time, shared with batched generation.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Iterator

from finetune_core.errors import InputError
from finetune_core.inference import generation
from finetune_core.inference.generation import GenSettings

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class _RowStreamer:
    """A streamer for a batch: decodes each row's new tokens and queues (row, text) snapshots."""

    def __init__(self, tokenizer, rows: int):
        self.tokenizer = tokenizer
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        self.out: "queue.Queue" = queue.Queue()
        self._prompt_seen = False
        self._eos = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}

    def put(self, value) -> None:
        if not self._prompt_seen:  # the first call carries the prompt ids
            self._prompt_seen = True
            return
        ids = value.reshape(len(self.tokens), -1)[:, -1].tolist()
        texts = []
        for row, tok in enumerate(ids):
            if not self.done[row]:
                if tok in self._eos:
                    self.done[row] = True
                else:
                    self.tokens[row].append(tok)
            texts.append(self.tokenizer.decode(self.tokens[row], skip_special_tokens=True))
        self.out.put(texts)

    def end(self) -> None:
        self.out.put(None)


class _OneRow:
    """Streams one row of a _RowStreamer when the sides are generated one after the other."""

    def __init__(self, shared: _RowStreamer, row: int):
        self.shared, self.row, self._prompt_seen = shared, row, False

    def put(self, value) -> None:
        if not self._prompt_seen:  # the first call carries the prompt ids
            self._prompt_seen = True
            return
        s, tok = self.shared, int(value.reshape(-1)[-1])
        if not s.done[self.row]:
            if tok in s._eos:
                s.done[self.row] = True
            else:
                s.tokens[self.row].append(tok)
        s.out.put([s.tokenizer.decode(t, skip_special_tokens=True) for t in s.tokens])

    def end(self) -> None:
        pass


def drop_stale_adapter_hooks(model) -> int:
    """Remove PEFT's per-row adapter hooks left on the layers by a mixed-batch call that raised.

    PEFT registers them for `adapter_names` and removes them only when the call returns
    normally; left behind, every later call on the shared model fails ("Length of
    adapter_names should be the same as the number of inputs"). Returns how many went.
    """
    dropped = 0
    for module in model.modules():
        for hooks in (module._forward_pre_hooks,):
            for key, hook in list(hooks.items()):
                if getattr(getattr(hook, "func", None), "__name__", "") == "_adapter_names_pre_forward_hook":
                    del hooks[key]
                    module._forward_pre_hooks_with_kwargs.pop(key, None)
                    dropped += 1
    return dropped


def stream_pair(inference, base_messages: list[dict] | None, tuned_messages: list[dict] | None,
                settings: GenSettings | None = None, cancel: threading.Event | None = None
                ) -> Iterator[tuple[str, str]]:
    """Yield (base_text, tuned_text) snapshots of `inference` (an InferenceModel) as tokens arrive; either
    side may be None (InputError when the tuned side is asked of a model without one)."""
    import torch
    from transformers import StoppingCriteriaList

    settings = settings or GenSettings()
    sides = [(False, base_messages), (True, tuned_messages)]
    sides = [(tuned, m) for tuned, m in sides if m is not None]
    if any(t for t, _ in sides) and not inference.has_tuned:
        raise InputError("No tuned model is loaded: pick a run with an adapter.")
    texts = [inference.render(m) for _, m in sides]
    streamer = _RowStreamer(inference.tokenizer, len(texts))
    gone = threading.Event()  # set when the consumer stops reading: the worker stops too
    stopping = generation._Cancel(cancel, gone)
    kw = {**settings.kwargs(inference.tokenizer), "streamer": streamer,
          "stopping_criteria": StoppingCriteriaList([stopping])}
    rows = mixed_batch_names(inference) if len(sides) == 2 else None
    mixed = rows is not None
    if mixed:
        kw["adapter_names"] = rows  # one batch: row 0 side A, row 1 side B
        jobs = [(inference.model, texts, kw)]
    elif len(sides) == 2:  # full fine-tune (two models) or DoRA: one side after the other
        jobs = None
    else:
        jobs = [(inference.weights(sides[0][0]), texts, kw)]

    def work():
        try:
            with inference.lock, torch.inference_mode():
                torch.manual_seed(settings.seed)
                if jobs is not None:
                    model, ts, kwargs = jobs[0]
                    # one side: its adapters on; a mixed batch names each row's adapter itself
                    side = contextlib.nullcontext() if mixed else inference.side_context(model, sides[0][0])
                    with side:
                        model.generate(**inference.encode(ts), **kwargs)
                else:
                    _stream_two_models(inference, texts, streamer, settings, stopping)
        except Exception as exc:  # noqa: BLE001 - surfaced to the caller through the queue
            if mixed:
                drop_stale_adapter_hooks(inference.model)
            streamer.out.put(exc)
        finally:
            streamer.end()
            generation.release_memory()  # after the lock is released: the next turn need not wait for it

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield from _snapshots(streamer, sides)
    finally:
        # Stopped, failed or closed by the consumer (a page closed): the worker ends at its
        # next token instead of generating to max_new_tokens for nobody. Not joined here:
        # a close from the server's event loop must not wait for that token.
        gone.set()
    thread.join()


def _snapshots(streamer: _RowStreamer, sides: list) -> Iterator[tuple[str, str]]:
    """(base_text, tuned_text) from the worker's queue until it ends; its errors are raised."""
    while True:
        item = streamer.out.get()
        if item is None:
            return
        if isinstance(item, Exception):
            raise item
        if len(sides) == 2:
            yield item[0], item[1]
        elif sides[0][0]:
            yield "", item[0]
        else:
            yield item[0], ""


def mixed_batch_names(inference) -> list[str] | None:
    """Each row's adapter name when both sides can share one batch (PEFT's `adapter_names`: one adapter
    or none per row), else None: one model with at most one adapter per side, and no DoRA, which PEFT
    refuses there."""
    if inference.tuned_model is not None or not inference.has_adapter:
        return None
    names = [inference.side_adapters[False], inference.side_adapters[True]]
    if any(len(n) > 1 for n in names):
        return None
    if any(getattr(c, "use_dora", False) for c in inference.model.peft_config.values()):
        return None
    return [n[0] if n else BASE_ADAPTER for n in names]


def _stream_two_models(inference, texts, streamer: _RowStreamer, settings: GenSettings, stopping) -> None:
    """Side A then side B, each streaming into its row of the shared streamer: two models, or
    adapters that cannot share a batch (each side's switched on in turn)."""
    from transformers import StoppingCriteriaList

    tuned = inference.tuned_model if inference.tuned_model is not None else inference.model
    for row, model in enumerate((inference.model, tuned)):
        if stopping.is_set():  # stopped during the base side: the tuned side is not started
            return
        with inference.side_context(model, tuned=row == 1):
            model.generate(**inference.encode([texts[row]]), **settings.kwargs(inference.tokenizer),
                           streamer=_OneRow(streamer, row), stopping_criteria=StoppingCriteriaList([stopping]))
