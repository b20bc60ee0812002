"""What the tabs share: server-wide objects, and the page's cross-tab components.

`AppContext` holds the server-wide objects (the training slot, the model cache,
settings), made once per app. The page's components that more than one tab
wires to are typed dataclasses, not looked up by name: `Shared` is made by
`app.build_app` before the tabs and handed to each tab's `build`; each `build`
returns its own `*Parts` of what it exposes; `Page` gathers them once every tab
exists, and only then does `app.py` wire the events that span tabs (picker
refresh on tab select, the guided demo). So a tab can only use what was built
before it, and the order is in the code, not in a registry.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from finetune_core.inference.chat_limits import GenerationSlots
from finetune_core.inference.model_cache import ModelCache
from finetune_core.retention import Area, Sweeper, gradio_cache_dir
from finetune_core.training.queue import RunQueue
from finetune_core.runs.store import RunError, get_run
from finetune_core.training.runner import TrainingSlot

from .eval_progress import Evaluations

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
    """Server-wide objects every tab's handlers use; one per app, shared by all visitors."""

    slot: TrainingSlot = field(default_factory=TrainingSlot)
    models: ModelCache = field(default_factory=ModelCache)
    chat_slots: GenerationSlots = field(default_factory=GenerationSlots)  # chat turns each visitor has queued/running
    settings: Settings = field(default_factory=Settings)
    guides: dict = field(default_factory=dict)  # visitor key -> that visitor's guided demo walk (ui/guide.py)
    sweeper: Sweeper | None = None  # made by start_sweeper (app.py main), not by tests that build the app
    # evaluations in progress by run id, whichever page or the guided demo started them (ui/eval_progress.py)
    evaluations: Evaluations = field(default_factory=Evaluations)
    # the Evaluate tab's checks in progress by "<kind>:<run id>" (general skills, judge: ui/eval_checks.py)
    checks: Evaluations = field(default_factory=Evaluations)
    # the runs waiting for the device and the one training (training/queue.py); made from `slot`
    queue: RunQueue | None = None

    def __post_init__(self) -> None:
        if self.queue is None:
            self.queue = RunQueue(self.slot, on_finished=self.evaluate_finished)

    def evaluate_finished(self, run) -> None:
        """A queued run that asked for it (evaluate_after) is evaluated when it completes."""
        from .eval_after import evaluate_finished_run  # it imports this module

        evaluate_finished_run(self, run)

    def in_use(self) -> list[Path]:
        """Files the sweeper must keep now: the data of the run that is training and of the runs waiting."""
        runs = [self.queue.running()]
        for item in self.queue.items():
            try:
                runs.append(get_run(item["run"]))
            except RunError:
                continue
        kept = []
        for run in filter(None, runs):
            try:
                cfg = run.config()
            except (OSError, ValueError):
                continue
            kept += [Path(p) for p in (cfg.data.data_path, cfg.data.eval_path) if p]
        return kept

    def start_sweeper(self) -> Sweeper:
        """Sweep uploads, exports and Gradio's cache by the retention settings
        (finetune_core/retention.py) in a daemon thread; runs are never swept."""
        from .data_uploads import uploads_dir  # data_uploads imports this module

        if self.sweeper is None:
            self.sweeper = Sweeper([Area("uploads", uploads_dir()), Area("exports", self.settings.exports_dir),
                                    Area("gradio-cache", gradio_cache_dir())], protect=self.in_use)
            self.sweeper.start()
        return self.sweeper


@dataclass
class Shared:
    """Made by app.build_app inside its Blocks before any tab, and passed to every tab's `build`."""

    blocks: gr.Blocks  # the page: the Evaluate, Chat and Export tabs refresh their run list on `blocks.load`
    tabs: gr.Tabs  # the tab strip: the Data tab's "Next" button and the guided demo select a tab
    # per browser session: {"mapping": DataMapping fields, "name", "rows"} of the current file, or None.
    # Written by the Data tab (and the guided demo); read by the Train tab (Train, CLI command).
    data_state: gr.State
    # per browser session: id of the session's run, or "". Written by the Train tab (Train, Resume,
    # Delete, "Open run"), the Evaluate and Export pickers and the guided demo; the Evaluate, Chat
    # and Export pickers follow it, and app.py's tab-select refresh reads it.
    run_state: gr.State


@dataclass
class DataParts:
    """What data_tab.build exposes; the guided demo (guide.wire) uses it."""

    outputs: list[Any]  # what a data view fills, in order: shared.data_state first (data_views.view_values)
    load_sample: Callable[..., tuple]  # sample name -> values in the order of `outputs`
    sample_buttons: dict[str, gr.Button]  # one per sample, by name
    status: gr.Markdown  # the "Ready / Not usable" line
    votes: gr.Dropdown  # "Or train on the votes of a run"
    vote_runs: Callable[..., Any]  # (current pick, request) -> the votes picker's update


@dataclass
class TrainParts:
    """What train_tab.build exposes (tests read the widgets; nothing else wires to them yet)."""

    pick: gr.Dropdown  # "Open run": the run the tab watches
    widgets: dict[str, Any]  # RunConfig field name -> its input component


@dataclass
class EvalParts:
    """What eval_tab.build exposes; app.py (tab-select refresh) and the guided demo use it."""

    run: gr.Dropdown  # the run to evaluate
    view: list[Any]  # what show_run/evaluate fill, in order (status, summary, ..., downloads)
    examples: gr.Dataframe  # the per-example table (also in `view`)
    cards: gr.HTML | None = None  # one card per example: reference, base and tuned side by side (also in `view`)
    progress: gr.Markdown | None = None  # "Evaluating <run name>: N of M held-out rows…" while one runs
    # the checks' sections: [status, results] of general skills, then of the judge (ui/eval_checks.py)
    checks: list[Any] = field(default_factory=list)


@dataclass
class ChatParts:
    """What chat_tab.build exposes; app.py (tab-select refresh) and the guided demo use it."""

    run: gr.Dropdown  # the model picker (base alone, or a run)
    message: gr.Textbox  # the message box the guided demo types a held-out prompt into
    picked: gr.State | None = None  # the model the visitor chose in Chat ("" until they do)


@dataclass
class ExportParts:
    """What export_tab.build exposes."""

    run: gr.Dropdown  # the run to export


@dataclass
class SettingsParts:
    """What settings_tab.build exposes (tests read it; the tab is shown per visitor on page load)."""

    tab: gr.Tab  # hidden unless the visitor may see the settings (an admin, or anyone on a local app)
    intro: gr.Markdown  # the hardware line and who sees the tab
    table: gr.Dataframe  # every setting with its value and source


@dataclass
class RunsParts:
    """What runs_tab.build exposes (tests and the browser test read them)."""

    queue: gr.Dataframe  # the running run and the waiting ones, by position
    cancel_pick: gr.Dropdown  # the waiting run "Cancel selected" takes off the queue
    sweep_pick: gr.Dropdown  # the sweep whose ranked table is shown
    sweep_table: gr.Dataframe  # the picked sweep's runs ranked by its metric, the best highlighted
    compare_pick: gr.Dropdown  # the runs compared (multiselect)
    compare_plot: gr.LinePlot  # their losses overlaid


@dataclass
class Page:
    """Every tab's parts, gathered by app.build_app once all tabs exist; the events that span
    tabs are wired from it. Kept on the Blocks as `studio_page` for tests and scripts."""

    shared: Shared
    data: DataParts
    train: TrainParts
    evaluate: EvalParts
    chat: ChatParts
    export: ExportParts
    runs: RunsParts | None = None
