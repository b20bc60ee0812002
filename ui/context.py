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

from finetune_core.model_cache import ModelCache
from finetune_core.runner import TrainingSlot

DATA_EXTENSIONS = [".jsonl", ".json", ".csv", ".tsv", ".parquet"]
GPU_QUEUE = "gpu"  # concurrency_id shared by every event that runs the model


@dataclass
class Settings:
    max_upload_mb: float = float(os.environ.get("STUDIO_MAX_UPLOAD_MB", "100"))
    public: bool = os.environ.get("STUDIO_PUBLIC", "") not in ("", "0")
    require_login: bool = os.environ.get("STUDIO_REQUIRE_LOGIN", "") not in ("", "0")
    default_model: str = os.environ.get("STUDIO_DEFAULT_MODEL", "bundled")
    exports_dir: Path = Path(os.environ.get("STUDIO_EXPORTS_DIR", "exports")).resolve()


@dataclass
class AppContext:
    slot: TrainingSlot = field(default_factory=TrainingSlot)
    models: ModelCache = field(default_factory=ModelCache)
    settings: Settings = field(default_factory=Settings)
    # gr.State components, set by app.build_app inside the Blocks context:
    data_state: Any = None  # dict: DataOptions fields of the current file + summary, or None
    run_state: Any = None  # str: id of the run the Evaluate/Chat tabs use, or ""
    components: dict = field(default_factory=dict)  # cross-tab components (tabs, run pickers...)
