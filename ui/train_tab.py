"""Train tab: preset, model and method settings, Train / Stop / Resume, live
progress with ETA, loss curve, log tail, and the list of runs (Delete; admins
can make a run a read-only showcase). A visitor sees and changes only what
finetune_core/runs/ownership.py allows them.

The model is picked from the catalogue (finetune_core/models/catalogue.py) or typed
(any Hub id or local folder); beside it the memory estimate of
finetune_core/models/memory.py follows the settings, and a run it says will not fit
is refused with the settings that would, unless "Train anyway" is ticked.

The tab polls the run directory with a gr.Timer (and once when the page loads),
so a page reload or a second browser re-attaches to the running job. It shows
the running job, else the run picked in "Open run", else the session's run,
else the visitor's latest run (train_views.watched_run_id), so a run that
ended or was stopped stays on screen. Each tick compares file stamps with what
this page last got and sends only what changed (an idle page with many runs
costs a few stat calls a second, and the plot does not redraw); the run and
runs views it sends are built in ui/train_views.py.

Runs have human names: the "Run name" box (empty: dataset · preset · time) and
"Rename" beside "Open run" (the run's owner or an admin).

Preference training: the objective (sft, dpo, kto, orpo), beta, loss type and reference sit with the
method; "Start from run" (``parent_run``) picks one of the visitor's completed runs to train on top of
(its model fills the Model field), and a preference run's rewards are plotted beside its loss. A file
the objective cannot use, or a parent run that cannot be used, is refused before a run is created
(finetune_core/training/preference.py: check_start).
"""
from __future__ import annotations

import secrets
import shutil
from typing import Any

import gradio as gr
import yaml

from finetune_core.cli import command_line
from finetune_core.config import PRESETS, ConfigError, RunConfig, field_info, read_config_yaml
from finetune_core.data.mapping import DataMapping
from finetune_core.models.sources import training_policy
from finetune_core.runs.ownership import AccessError, Visitor, admins, set_showcase
from finetune_core.errors import StudioError
from finetune_core.training.checkpoint_choice import align_checkpoints
from finetune_core.training.queue import QueueError
from finetune_core.runs.store import RunError, check_run_name, get_run

from .access import require_user, visitor
from .context import AppContext, Shared, TrainParts
from .errors import shows_errors
from .train_checks import TRAIN_ANYWAY, check_memory, check_model, check_preference
from .train_views import (COLUMN_WIDTHS, ESTIMATE_FIELDS, FOLLOW_LOG_JS, NO_PARENT, REWARD_SERIES, device_note,
                          memory_markdown, model_choices, parent_choices, parent_model, run_picks, runs_table, tick,
                          watched_run_id)
from .widgets import (build_config_widgets, chosen_run_name, config_from_values, default_name_for, named_values,
                      open_run, widget_updates)

# the browser asks first, naming the run as the picker shows it; a cancelled confirm sends no id
CONFIRM_DELETE_JS = """(run_id) => {
  const shown = document.querySelector('#run-pick input')?.value || run_id;
  return (run_id && confirm('Delete run "' + shown + '" for good?')) ? run_id : '';
}"""


# -- plain functions (the tests call these) ------------------------------------
def data_fields(data_state: dict | None, required: bool = True) -> dict[str, Any]:
    """The Data tab's DataMapping (``data_state["mapping"]``) as flat RunConfig fields, validated:
    an unknown or bad field is a gr.Error naming it. Without a chosen file: a gr.Error, or {}
    when not ``required`` (the CLI text can be shown before a dataset is chosen)."""
    mapping = (data_state or {}).get("mapping") or {}
    if not mapping.get("data_path"):
        if not required:
            return {}
        raise gr.Error("Choose a dataset in the Data tab first (upload a file or pick a sample).")
    try:
        return DataMapping.from_dict(mapping).to_dict()
    except ValueError as exc:
        raise gr.Error(f"The Data tab's choices: {exc}") from None


def build_config(values: dict[str, Any], data_state: dict | None) -> RunConfig:
    """The RunConfig from the tab's widget values and the Data tab's choices; a bad value is a gr.Error naming it."""
    try:
        return config_from_values(values, data_fields(data_state))
    except ConfigError as exc:
        raise gr.Error(str(exc)) from exc


def start_training(ctx: AppContext, cfg: RunConfig, label: str = "", who: Visitor | None = None,
                   force: bool = False, name: str = "") -> str:
    """Start a run owned by `who` (see finetune_core/runs/ownership.py) and called `name` (empty: the
    dataset and the time); one the memory estimate says will not fit is refused unless `force`, and a
    bad name, parent run or data file (`check_preference`) before anything starts, with the field named."""
    if name:
        try:
            name = check_run_name(name)
        except RunError as exc:
            raise gr.Error(str(exc)) from None
    check_model(cfg.model)
    check_preference(cfg, who)
    check_memory(cfg, force)
    who = who or Visitor()
    try:
        aligned = align_checkpoints(cfg)[1]  # said here; enqueue applies it (and logs it in the run)
        run, _position = ctx.queue.enqueue(cfg, label=label, owner=who.owner_record(), name=name, who=who)
    except StudioError as exc:  # the queue's, the launcher's, access, a tracker or early-stopping setting
        raise gr.Error(str(exc)) from None
    if aligned:
        gr.Info(aligned)
    ctx.queue.dispatch_once(evaluate=False)  # the device is free: it starts now (the dispatcher does the rest)
    return run.id


def queue_note(ctx: AppContext, run_id: str) -> str:
    """What a Train or Resume press did: the run started, or where it waits in the queue."""
    run = get_run(run_id)
    position = ctx.queue.position(run_id)
    if position is None:
        return f'Training started: "{run.name}".'
    running = ctx.queue.running()
    ahead = f' after "{running.name}"' if running is not None else ""
    return (f'Queued: "{run.name}" is number {position} in the queue{ahead}; it starts by itself '
            "(Cancel in the Runs tab).")


def resume_training(ctx: AppContext, run_id: str, who: Visitor | None = None) -> str:
    """Resume a stopped, failed or interrupted run `who` may change; returns its id (gr.Error otherwise)."""
    run = open_run(run_id, visitor=who, change="resume")
    ctx.slot.settle(run)  # not the file alone: a dead job can leave "running"
    try:
        ctx.queue.resume(run, who)  # checks the state under the queue's lock, and the visitor's limit
    except QueueError as exc:
        raise gr.Error(str(exc)) from None
    ctx.queue.dispatch_once(evaluate=False)
    return run.id


def rename_run(run_id, name, who: Visitor | None = None) -> str:
    """Give a run a new human name (its owner or an admin); returns the name as saved. A bad
    name is a gr.Error that names the field."""
    run = open_run(run_id, "Pick a run to rename in 'Open run'.", visitor=who, change="rename")
    try:
        return run.rename(name)
    except RunError as exc:
        raise gr.Error(str(exc)) from None


def delete_run(ctx: AppContext, run_id, who: Visitor | None = None) -> str:
    """Remove a run for good: only its owner or an admin, never the running job.
    The folder is renamed away first, so no one ever lists half a run."""
    run = open_run(run_id, visitor=who, change="delete")
    running = ctx.queue.running()
    if running is not None and running.id == run.id:
        raise gr.Error(f'Run "{run.name}" is training: stop it first.')
    trash = run.path.with_name(f".deleted-{run.id}-{secrets.token_hex(4)}")
    run.path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return run.id


def showcase_run(run_id, on: bool, who: Visitor | None = None) -> str:
    """An admin shares a run read-only with every visitor, or stops sharing it."""
    run = open_run(run_id, visitor=who)
    try:
        set_showcase(run.path, who or Visitor(), bool(on))
    except AccessError as exc:
        raise gr.Error(str(exc)) from None
    return (f'Run "{run.name}" is now a showcase: every visitor can open it, chat with it and vote.'
            if on else f'Run "{run.name}" is no longer shared.')


def stop_training(ctx: AppContext, who: Visitor | None = None) -> bool:
    """Stop the running run (a thread or its own process) if `who` may (its owner or an admin); False
    when none runs."""
    try:
        return ctx.queue.stop_running(who or Visitor()) is not None
    except AccessError as exc:
        raise gr.Error(str(exc)) from None


def cli_text(cfg: RunConfig) -> str:
    """The run.yaml of `cfg`, headed by the commands that train it from a shell."""
    cmds = command_line(cfg)
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    return (f"# Save this as run.yaml, then run one of:\n# {cmds['single']}\n# {cmds['cpu_ddp']}   "
            f"(several CPU processes)\n# {cmds['multi_gpu']}   (GPUs/nodes; FSDP or DeepSpeed "
            "through an accelerate config)\n" + body)


def config_from_yaml_file(path: str) -> RunConfig:
    """An uploaded run.yaml as a RunConfig (size-limited, no YAML aliases); gr.Error says what is wrong."""
    try:
        return RunConfig.from_dict(read_config_yaml(path), strict=False)
    except OSError as exc:
        raise gr.Error("Could not read that run.yaml; try the upload again.") from exc
    except ConfigError as exc:
        raise gr.Error(f"Could not use that run.yaml: {exc}") from exc


# -- layout and wiring ---------------------------------------------------------
def build(ctx: AppContext, shared: Shared) -> TrainParts:
    """Build the Train tab inside the caller's `gr.Tab`; reads shared.data_state, writes shared.run_state."""
    gr.Markdown(device_note(training_policy()), elem_id="train-device")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                preset = gr.Dropdown(list(PRESETS), value="Quick demo (CPU)", label="Preset", elem_id="train-preset")
                apply_btn = gr.Button("Apply preset", size="sm")
            start_cfg = RunConfig().with_overrides(PRESETS["Quick demo (CPU)"])
            start_cfg.model = ctx.settings.default_model
            # a picker of the catalogue that also takes any Hub id or local folder (check_model vets it)
            model_help = next(i["help"] for i in field_info() if i["name"] == "model")
            widgets = {"model": gr.Dropdown(model_choices(), value=start_cfg.model, label="Model", info=model_help,
                                            allow_custom_value=True, elem_id="cfg-model")}
            # filled per visitor (their completed runs); any id typed or loaded is checked by check_preference
            parent_help = next(i["help"] for i in field_info() if i["name"] == "parent_run")
            widgets["parent_run"] = gr.Dropdown([(NO_PARENT, "")], value="", label="Start from run",
                                                info=parent_help, allow_custom_value=True, elem_id="cfg-parent_run")
            memory_note = gr.Markdown(memory_markdown({"model": start_cfg.model, **PRESETS["Quick demo (CPU)"]}),
                                      elem_id="memory-estimate")
            with gr.Accordion("Method (objective, LoRA / QLoRA / full)", open=False):
                widgets.update(build_config_widgets(("method",), start_cfg))
            with gr.Accordion("Schedule and batching", open=False):
                widgets.update(build_config_widgets(("schedule",), start_cfg))
                widgets.update(build_config_widgets(("data",), start_cfg, only=("max_train_rows",)))
            with gr.Accordion("Where it runs and what tracks it", open=False, elem_id="train-launch"):
                widgets.update(build_config_widgets(("launch",), start_cfg))
            force = gr.Checkbox(False, label=TRAIN_ANYWAY, elem_id="train-anyway",
                                info="Start a run even when the estimate says it will not fit.")
            run_name = gr.Textbox(label="Run name", placeholder=default_name_for(None, preset.value),
                                  info="How the run is listed everywhere; empty: dataset · preset · day and time.",
                                  max_length=80, elem_id="run-name")
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary", elem_id="train-button")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-button")
                cli_btn = gr.Button("Show CLI command")
            cli_box = gr.Code(label="Command line and run.yaml", language="yaml", visible=False)
            yaml_file = gr.File(label="Load a run.yaml", file_types=[".yaml", ".yml"], height=90)
        with gr.Column(scale=3):
            title = gr.Markdown(elem_id="run-title")
            bar = gr.HTML(elem_id="run-progress")
            plot = gr.LinePlot(None, x="step", y="loss", color="series", title="Loss", x_title="step",
                               color_map={"train": "#2563eb", "held-out": "#d97706"},
                               height=260, elem_id="loss-plot")
            rewards_plot = gr.LinePlot(None, x="step", y="reward", color="series", title="Rewards (preference run)",
                                       x_title="step", height=220, elem_id="reward-plot", visible=False,
                                       color_map=dict(zip(REWARD_SERIES.values(),
                                                          ("#16a34a", "#dc2626", "#7c3aed", "#0891b2"))))
            log = gr.Textbox(label="Log", lines=10, max_lines=10, autoscroll=True, elem_id="run-log")
            with gr.Accordion("Runs", open=True):
                # filled per visitor when the page loads (only the runs they may see)
                runs = gr.Dataframe(runs_table(nobody=True), interactive=False, wrap=True,
                                    column_widths=COLUMN_WIDTHS, elem_id="runs-table")
                with gr.Row():
                    # label: the run's name and time, value: its id; custom values allowed (an id typed
                    # or a run made after the last refresh): get_run() checks every id
                    pick = gr.Dropdown(label="Open run", choices=[], elem_id="run-pick", allow_custom_value=True,
                                       scale=3)
                    new_name = gr.Textbox(label="New name for the selected run", elem_id="rename-box", scale=2,
                                          max_length=80)
                with gr.Row():
                    resume_btn = gr.Button("Resume selected run", size="sm")
                    rename_btn = gr.Button("Rename selected run", size="sm", elem_id="rename-button")
                    delete_btn = gr.Button("Delete selected run", size="sm", variant="stop", elem_id="delete-run")
                showcase = gr.Checkbox(False, label="Showcase: every visitor may open, chat with and vote on the "
                                       "selected run (admins only)", visible=bool(admins()))
    timer = gr.Timer(1.0)
    seen = gr.State(None)  # per page: the file stamps of what it last received
    inputs = set(widgets.values()) | {shared.data_state}
    watch_inputs = [pick, seen, shared.run_state]
    watch_outputs = [title, bar, plot, log, rewards_plot, runs, pick, widgets["parent_run"], seen]
    estimate_inputs = {widgets[name] for name in ESTIMATE_FIELDS if name in widgets}

    @shows_errors
    def on_train(raw: dict, request: gr.Request):
        require_user(request)
        who = visitor(request)
        data_state = raw[shared.data_state]
        cfg = build_config(named_values(widgets, raw), data_state)
        run_id = start_training(ctx, cfg, label=(data_state or {}).get("name", ""), who=who, force=bool(raw[force]),
                                name=chosen_run_name(raw[run_name], data_state, raw[preset]))
        gr.Info(queue_note(ctx, run_id))
        return run_id, gr.update(choices=run_picks(who), value=run_id), ""  # the next run: a new default name

    @shows_errors
    def on_stop(request: gr.Request):
        require_user(request)
        if not stop_training(ctx, visitor(request)):
            gr.Warning("No training job is running.")

    @shows_errors
    def on_resume(run_id: str, request: gr.Request):
        require_user(request)
        if not run_id:
            raise gr.Error("Pick a run to resume in 'Open run'.")
        run_id = resume_training(ctx, run_id, visitor(request))
        gr.Info(queue_note(ctx, run_id))
        return run_id

    @shows_errors
    def on_delete(run_id, request: gr.Request):
        require_user(request)
        if not run_id:
            return gr.skip(), gr.skip()
        who = visitor(request)
        name = open_run(run_id, visitor=who).name
        delete_run(ctx, run_id, who)
        gr.Info(f'Deleted run "{name}".')
        return gr.update(choices=run_picks(who), value=None), ""

    @shows_errors
    def on_rename(run_id, name, request: gr.Request):
        require_user(request)
        who = visitor(request)
        gr.Info(f'Renamed: "{rename_run(run_id, name, who)}".')
        return gr.update(choices=run_picks(who), value=run_id), ""

    @shows_errors
    def on_showcase(run_id, on, request: gr.Request):
        require_user(request)
        if not run_id:
            raise gr.Error("Pick a run in 'Open run' first.")
        gr.Info(showcase_run(run_id, on, visitor(request)))

    @shows_errors
    def on_tick(selected: str | None, last: dict | None, session: str | None, request: gr.Request):
        who = visitor(request)
        if last and last.get("who") != who.key:
            last = None  # another identity on this page (signed in or out): send everything again
        view, table, stamps = tick(watched_run_id(ctx, selected, who, session), last, who)
        stamps["who"] = who.key
        view = view if view is not None else (gr.skip(),) * 5
        if table is None:
            return (*view, gr.skip(), gr.skip(), gr.skip(), stamps)
        # the runs changed: the "Open run" and "Start from run" lists follow (only this visitor's runs)
        return (*view, table, gr.update(choices=run_picks(who)), gr.update(choices=parent_choices(who)), stamps)

    @shows_errors
    def on_pick(run_id: str | None):
        return run_id if isinstance(run_id, str) else ""

    @shows_errors
    def on_parent(run_id: str | None, request: gr.Request):
        model = parent_model(run_id, visitor(request))  # a run trains on top of its parent's model
        return gr.update(value=model) if model else gr.skip()

    @shows_errors
    def on_name_hint(data_state, preset_name):
        return gr.update(placeholder=default_name_for(data_state, preset_name))

    @shows_errors
    def on_preset(raw: dict):
        cfg = config_from_values(named_values(widgets, raw), {}).with_overrides(PRESETS[raw[preset]])
        return widget_updates(widgets, cfg)

    @shows_errors
    def on_cli(raw: dict):
        values = named_values(widgets, raw)
        cfg = config_from_values(values, data_fields(raw[shared.data_state], required=False))
        return gr.update(value=cli_text(cfg), visible=True)

    @shows_errors
    def on_yaml(path: str | None):
        if not path:
            return {}
        return widget_updates(widgets, config_from_yaml_file(path))

    @shows_errors
    def on_estimate(raw: dict):
        return memory_markdown(named_values(widgets, raw))

    train_btn.click(on_train, inputs | {force, run_name, preset}, [shared.run_state, pick, run_name], api_name="train")
    for widget in estimate_inputs:  # a preset or run.yaml changes them too: .change covers both
        widget.change(on_estimate, estimate_inputs, memory_note, show_progress="hidden", queue=False)
    stop_btn.click(on_stop, None, None, api_name="train_stop")
    resume_btn.click(on_resume, pick, shared.run_state, api_name="train_resume")
    delete_btn.click(on_delete, pick, [pick, shared.run_state], api_name="train_delete", js=CONFIRM_DELETE_JS)
    rename_btn.click(on_rename, [pick, new_name], [pick, new_name], api_name="train_rename")
    showcase.input(on_showcase, [pick, showcase], None, api_name="run_showcase")
    timer.tick(on_tick, watch_inputs, watch_outputs, show_progress="hidden", queue=False)
    shared.blocks.load(on_tick, watch_inputs, watch_outputs, show_progress="hidden", queue=False,
                       api_visibility="private")
    log.change(None, None, None, js=FOLLOW_LOG_JS)  # the newest log line stays in sight
    shared.tabs.select(None, None, None, js=FOLLOW_LOG_JS)  # a log filled while its tab was hidden
    for source in (shared.data_state, preset):  # the "Run name" box shows the name it would default to
        source.change(on_name_hint, [shared.data_state, preset], run_name, show_progress="hidden", queue=False)
    pick.change(on_pick, pick, shared.run_state, queue=False)
    widgets["parent_run"].input(on_parent, widgets["parent_run"], widgets["model"], queue=False)
    apply_btn.click(on_preset, {preset} | set(widgets.values()), list(widgets.values()))
    cli_btn.click(on_cli, inputs, cli_box)
    yaml_file.upload(on_yaml, yaml_file, list(widgets.values()))
    return TrainParts(pick=pick, widgets=widgets)


__all__ = ["build", "build_config", "start_training", "queue_note", "stop_training", "check_memory", "check_preference", "memory_markdown", "model_choices",
           "resume_training", "rename_run", "delete_run", "cli_text", "config_from_yaml_file"]
