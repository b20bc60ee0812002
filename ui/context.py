"""AppContext: what the tabs share, made once per app by app.py.

Server-wide objects (the training slot, the model cache, settings) live here;
per-browser-session values live in the gr.State components created in
`app.build_app` and attached here so tabs can wire to them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_core.inference.chat_limits import GenerationSlots
from finetune_core.inference.model_cache import ModelCache
from finetune_core.retention import Area, Sweeper, gradio_cache_dir
from finetune_core.training.runner import TrainingSlot

DATA_EXTENSIONS = [".jsonl", ".json", ".csv", ".tsv", ".parquet"]
GPU_QUEUE = "gpu"  # concurrency_id shared by every event that runs the model


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


@dataclass
class Settings:
    """Deployment settings, read from the environment when the app is built."""

    max_upload_mb: float = field(default_factory=lambda: float(os.environ.get("STUDIO_MAX_UPLOAD_MB", "100")))
    public: bool = field(default_factory=lambda: _env_flag("STUDIO_PUBLIC"))
    require_login: bool = field(default_factory=lambda: _env_flag("STUDIO_REQUIRE_LOGIN"))
    default_model: str = field(default_factory=lambda: os.environ.get("STUDIO_DEFAULT_MODEL", "bundled"))
    # Inside Gradio's cache by default: Gradio serves a returned file from there as it is
    # instead of copying it into the cache (a merged-model zip would be on disk twice).
    exports_dir: Path = field(default_factory=lambda: Path(
        os.environ.get("STUDIO_EXPORTS_DIR") or gradio_cache_dir() / "studio-exports").resolve())


@dataclass
class AppContext:
    slot: TrainingSlot = field(default_factory=TrainingSlot)
    models: ModelCache = field(default_factory=ModelCache)
    chat_slots: GenerationSlots = field(default_factory=GenerationSlots)  # chat turns each visitor has queued/running
    settings: Settings = field(default_factory=Settings)
    # gr.State components, set by app.build_app inside the Blocks context:
    data_state: Any = None  # dict: {"mapping": DataMapping fields, "name", "rows"} of the current file, or None
    run_state: Any = None  # str: id of the run the Evaluate/Chat tabs use, or ""
    components: dict = field(default_factory=dict)  # cross-tab components (tabs, run pickers...)
    sweeper: Sweeper | None = None  # made by start_sweeper (app.py main), not by tests that build the app

    def in_use(self) -> list[Path]:
        """Files the sweeper must keep now: the data of the job that is training."""
        job = self.slot.active()
        if job is None:
            return []
        try:
            cfg = job.run.config()
        except (OSError, ValueError):
            return []
        return [Path(p) for p in (cfg.data.data_path, cfg.data.eval_path) if p]

    def start_sweeper(self) -> Sweeper:
        """Sweep uploads, exports and Gradio's cache by the retention settings
        (finetune_core/retention.py) in a daemon thread; runs are never swept."""
        from .data_uploads import uploads_dir  # data_uploads imports this module

        if self.sweeper is None:
            self.sweeper = Sweeper([Area("uploads", uploads_dir()), Area("exports", self.settings.exports_dir),
                                    Area("gradio-cache", gradio_cache_dir())], protect=self.in_use)
            self.sweeper.start()
        return self.sweeper
