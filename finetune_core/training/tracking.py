"""Experiment tracking (``report_to``): TensorBoard, Trackio or W&B beside the studio's own live plot.

The studio's plot reads metrics.jsonl, which StudioCallback writes whatever is chosen here; a tracker is
one more Trainer callback that gets the same logs. The trackers are handed to the Trainer as configured
callbacks (`tracker_callbacks`) and ``report_to`` stays "none" in TrainingArguments, so where each one
writes is set per run without touching the process environment (transformers would otherwise read
TENSORBOARD_LOGGING_DIR, WANDB_DIR and WANDB_MODE from it, shared by every run of the app):

- tensorboard: event files in ``runs/<id>/tensorboard`` (``tensorboard --logdir runs``).
- trackio: Trackio's local store (``$TRACKIO_DIR``, default ``$HF_HOME/trackio``), project PROJECT, one
  Trackio run per studio run, named by its id; ``trackio show --project fine-tuning-studio`` opens its
  dashboard (a Gradio app). Nothing leaves the machine unless TRACKIO_SPACE_ID is set.
- wandb: ``runs/<id>/wandb``, offline (``wandb sync`` uploads it later) unless WANDB_API_KEY is set, or
  WANDB_MODE says otherwise; project WANDB_PROJECT, else PROJECT.

Those variables are the user's to set (for the whole server); this module only reads them.
`check_tracker` refuses a tracker whose package is missing before a run starts, saying what to install.
"""
from __future__ import annotations

import importlib.util
import os

from transformers.integrations import TensorBoardCallback, TrackioCallback, WandbCallback

from finetune_core.config import TRACKERS, ConfigError, RunConfig
from finetune_core.runs.store import Run

PROJECT = "fine-tuning-studio"
# what each tracker imports, and the pip line that installs it (pinned where requirements.txt pins it)
PACKAGES = {"tensorboard": ("tensorboard", "pip install tensorboard==2.21.0"),
            "trackio": ("trackio", "pip install trackio==0.43.0"),
            "wandb": ("wandb", "pip install wandb")}
LABELS = {"tensorboard": "TensorBoard", "trackio": "Trackio", "wandb": "W&B"}


def installed(name: str) -> bool:
    """Whether the package tracker `name` needs can be imported (without importing it)."""
    module = PACKAGES[name][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken install
        return False


def check_tracker(name: str) -> None:
    """Refuse an unknown tracker, or one whose package is not installed, with the line that installs it
    (ConfigError naming report_to). "none" always passes.

    >>> check_tracker("none")
    >>> check_tracker("mlflow")
    Traceback (most recent call last):
    ...
    finetune_core.config.ConfigError: report_to: 'mlflow' is not a tracker the studio knows; choose one of: none, tensorboard, trackio, wandb.
    """
    if name == "none":
        return
    if name not in PACKAGES:
        raise ConfigError(f"report_to: {name!r} is not a tracker the studio knows; choose one of: "
                          f"{', '.join(TRACKERS)}.")
    if not installed(name):
        raise ConfigError(f"report_to: {LABELS[name]} needs the {PACKAGES[name][0]} package, which is not installed "
                          f"here: {PACKAGES[name][1]} (or choose report_to none; the studio's own plot works "
                          "without it).")


def wandb_mode(environ=None) -> str:
    """W&B's mode for a run: WANDB_MODE when set, else online with WANDB_API_KEY, else offline.

    >>> wandb_mode({}), wandb_mode({"WANDB_API_KEY": "k"}), wandb_mode({"WANDB_MODE": "disabled"})
    ('offline', 'online', 'disabled')
    """
    env = os.environ if environ is None else environ
    return env.get("WANDB_MODE") or ("online" if env.get("WANDB_API_KEY") else "offline")


def tracker_arguments(cfg: RunConfig, run: Run) -> dict:
    """TrainingArguments for tracking: report_to "none" (the trackers come as callbacks, see the module
    docstring), the run's id as run_name and the Trackio project.

    >>> from pathlib import Path
    >>> tracker_arguments(RunConfig(report_to="tensorboard"), Run(Path("runs/20260101-000000-toy-abcdef")))
    {'report_to': 'none', 'run_name': '20260101-000000-toy-abcdef', 'project': 'fine-tuning-studio'}
    """
    return {"report_to": "none", "run_name": run.id, "project": PROJECT}


class RunTensorBoard(TensorBoardCallback):
    """transformers' TensorBoard callback writing into the run's tensorboard/ folder."""

    def __init__(self, folder: str):
        super().__init__()
        self.logging_dir = folder  # read by on_train_begin instead of TENSORBOARD_LOGGING_DIR

    def close(self) -> None:
        """Close the event file (a run that failed never reached on_train_end)."""
        if self.tb_writer is not None:
            self.tb_writer.close()
            self.tb_writer = None


class RunTrackio(TrackioCallback):
    """transformers' Trackio callback (project and run name from TrainingArguments), closable after a failure."""

    def close(self) -> None:
        """Finish the Trackio run if training ended without on_train_end."""
        if self._initialized:
            self._initialized = False
            self._trackio.finish()


class RunWandb(WandbCallback):
    """transformers' W&B callback, with the W&B run started here: in the run folder, offline unless a
    key is set (`wandb_mode`), with the studio run's id, so a resumed run continues the same W&B run."""

    def __init__(self, init: dict):
        super().__init__()
        self._init = init

    def setup(self, args, state, model, **kwargs):
        """Start the W&B run (rank 0), then let transformers record the config on it."""
        if state.is_world_process_zero and not self._initialized:
            if self._wandb.run is not None:  # left open by an earlier run of this process that failed
                self._wandb.finish()
            self._wandb.init(**self._init)
        super().setup(args, state, model, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        """transformers' end of training, then finish the W&B run."""
        super().on_train_end(args, state, control, **kwargs)
        self.close()  # the next run of this process must not log into this one

    def close(self) -> None:
        """Finish the W&B run this callback started."""
        if self._initialized and self._wandb.run is not None:
            self._wandb.finish()
        self._initialized = False


def tracker_callbacks(cfg: RunConfig, run: Run) -> list:
    """The Trainer callback of the run's tracker ([] for none), after `check_tracker`."""
    name = cfg.report_to
    check_tracker(name)
    if name == "tensorboard":
        return [RunTensorBoard(str(run.path / "tensorboard"))]
    if name == "trackio":
        return [RunTrackio()]
    if name == "wandb":
        project = os.environ.get("WANDB_PROJECT") or PROJECT
        # console off: W&B would otherwise wrap sys.stdout, which the app's other threads share
        return [RunWandb(dict(project=project, id=run.id, name=run.name, dir=str(run.path), mode=wandb_mode(),
                              resume="allow", settings={"console": "off"}))]
    return []


def tracker_facts(cfg: RunConfig, run: Run) -> dict:
    """What run.yaml records about tracking ({} for none): the tracker, where it writes (relative to the
    run folder, or Trackio's project) and W&B's mode."""
    name = cfg.report_to
    if name == "tensorboard":
        return {"report_to": name, "folder": "tensorboard"}
    if name == "trackio":
        return {"report_to": name, "project": PROJECT, "run_name": run.id}
    if name == "wandb":
        return {"report_to": name, "folder": "wandb", "mode": wandb_mode()}
    return {}


def describe(cfg: RunConfig, run: Run) -> str:
    """The log line that says where the run is tracked besides the studio's plot ("" for none)."""
    name = cfg.report_to
    if name == "tensorboard":
        return (f"Tracking: TensorBoard event files in {run.id}/tensorboard under the runs folder "
                "(tensorboard --logdir <runs folder>).")
    if name == "trackio":
        return (f"Tracking: Trackio project {PROJECT}, run {run.id} (trackio show --project {PROJECT} opens the "
                "dashboard).")
    if name == "wandb":
        mode = wandb_mode()
        after = " (wandb sync uploads it later)" if mode == "offline" else ""
        return f"Tracking: W&B, {mode}, in {run.id}/wandb under the runs folder{after}."
    return ""


def start(cfg: RunConfig, run: Run, emit, main: bool) -> list:
    """The run's tracker callbacks (`tracker_callbacks`); on the main process the log says where it is
    tracked and run.yaml records it (`tracker_facts`)."""
    callbacks = tracker_callbacks(cfg, run)
    if callbacks and main:
        emit({"event": "log", "message": describe(cfg, run)})
        run.record_facts(tracking=tracker_facts(cfg, run))
    return callbacks


def close_trackers(callbacks: list) -> None:
    """Close the trackers among `callbacks` (after a failure, on_train_end never ran); never raises."""
    for callback in callbacks:
        if isinstance(callback, (RunTensorBoard, RunTrackio, RunWandb)):
            try:
                callback.close()
            except Exception:  # noqa: BLE001 - a tracker must not turn a run's real failure into its own
                pass
