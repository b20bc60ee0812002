"""Stand-ins the chat tests share: a fake model that records its prompts, a fake app context, and a run
whose data split is saved as training saves it (no training)."""
from __future__ import annotations

from finetune_core.inference import chat
from finetune_core.inference.generation import GenSettings

GREEDY = GenSettings(max_new_tokens=8)
INTENTS = "sample_data/customer_intents.csv"


class FakeModel:
    """Stands in for InferenceModel: streams 'base-N'/'tuned-N' and records the prompts it got."""

    def __init__(self, has_tuned: bool = True, steps: int = 3):
        self.has_tuned = has_tuned
        self.steps = steps
        self.calls: list[tuple] = []

    def stream_pair(self, base_messages, tuned_messages, settings=None, cancel=None):
        self.calls.append((base_messages, tuned_messages))
        n = len(self.calls)
        for i in range(1, self.steps + 1):
            if cancel is not None and cancel.is_set():
                return
            yield f"base-{n}"[: 2 + i * 2], (f"tuned-{n}"[: 2 + i * 2] if tuned_messages else "")


def run_turn(session, message, model=None):
    return list(chat.stream_chat(model or FakeModel(), session, message, GREEDY))


class _Slot:
    def __init__(self, job=None):
        self.job = job

    def active(self):
        return self.job

    def gpu_run(self):  # the real slot's rule, over this fake's job
        from finetune_core.training.runner import TrainingSlot

        return TrainingSlot.gpu_run(self)


class _Models:
    def __init__(self, model):
        self.model = model

    def get(self, key, progress=None):
        return self.model

    def counter(self, key, progress=None):
        return getattr(self.model, "counter", None)  # FakeModel has none: characters are checked


def fake_ctx(model=None, job=None):
    from ui.context import AppContext

    return AppContext(slot=_Slot(job), models=_Models(model or FakeModel()))


def split_run(data_path: str, **mapping):
    """A run with its data split saved exactly as training saves it (no training: the prompts are what matter)."""
    from finetune_core.config import RunConfig
    from finetune_core.runs.store import create_run
    from finetune_core.training.train import prepare_split

    cfg = RunConfig.from_dict({"model": "bundled", "data_path": str(data_path), **mapping})
    run = create_run(cfg, label="template")
    prepare_split(cfg, run)
    return run
