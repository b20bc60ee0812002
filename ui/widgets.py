"""Widgets built from RunConfig's field metadata, and shared UI helpers.

Every config widget is a Number, Slider, Checkbox, Dropdown or Textbox whose
label, help text and bounds come from `finetune_core.config.field_info()`, so
the UI cannot drift from the dataclass. Handlers receive the widget values as
a dict (Gradio's set-of-inputs form) and turn them back into a RunConfig with
`config_from_values`.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import gradio as gr

from finetune_core.config import ConfigError, RunConfig, coerce, field_info
from finetune_core.runs.ownership import AccessError, Visitor, require_change, require_view, visible_runs
from finetune_core.runs.store import RUN_ID_RE, Run, RunError, default_run_name, get_run

from .context import AppContext

LABELS = {
    "lora_r": "LoRA rank (r)", "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout",
    "use_dora": "DoRA", "use_rslora": "rsLoRA", "num_epochs": "Epochs", "max_steps": "Max steps",
    "lr_scheduler": "LR schedule", "grad_accum": "Gradient accumulation", "max_length": "Max length (tokens)",
    "group_by_length": "Group rows by length", "completion_only_loss": "Completion-only loss",
    "eval_steps": "Held-out loss every N steps", "save_steps": "Checkpoint every N steps",
    "save_total_limit": "Checkpoints kept", "max_train_rows": "Max training rows",
}
SLIDER_FIELDS = {"lora_dropout", "eval_fraction", "weight_decay"}


def label_for(name: str) -> str:
    """The widget label for a RunConfig field: its entry in LABELS, else the name in words."""
    return LABELS.get(name, name.replace("_", " ").capitalize())


def make_widget(info: dict, value: Any = None):
    """A new Gradio input for one field's metadata (from `field_info`), showing `value` or the default:
    Checkbox, Dropdown, Slider (SLIDER_FIELDS with bounds), Number or Textbox; elem_id is "cfg-<name>"."""
    name, kind = info["name"], info["type"]
    value = info["default"] if value is None else value
    common = {"label": label_for(name), "info": info.get("help"), "value": value, "elem_id": f"cfg-{name}"}
    if kind == "bool":
        return gr.Checkbox(**common)
    if "choices" in info:
        return gr.Dropdown(choices=info["choices"], **common)
    if kind in ("int", "float"):
        lo, hi = info.get("min"), info.get("max")
        if name in SLIDER_FIELDS and lo is not None and hi is not None:
            return gr.Slider(minimum=lo, maximum=hi, step=info.get("step", 0.01), **common)
        return gr.Number(minimum=lo, maximum=hi, precision=0 if kind == "int" else None, **common)
    return gr.Textbox(**common)


def build_config_widgets(groups: tuple[str, ...], cfg: RunConfig | None = None,
                         only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Widgets for the fields of the given groups (or just the fields named in `only`), in
    dataclass order. Each widget is placed on the page as it is made: build only those shown."""
    values = (cfg or RunConfig()).to_dict()
    return {info["name"]: make_widget(info, values[info["name"]])
            for info in field_info() if info["group"] in groups and (only is None or info["name"] in only)}


def config_from_values(values: dict[str, Any], base: dict[str, Any] | None = None) -> RunConfig:
    """RunConfig from widget values (by field name) on top of `base` (e.g. the data state).

    Validated (bounds, NaN/inf, template limits, no unknown key); a bad value is a
    gr.Error naming the field, so every Train tab event (train, preset, CLI text) shows the reason.
    """
    merged = {**(base or {}), **{k: v for k, v in values.items() if v is not None}}
    try:
        return RunConfig.from_dict(merged)
    except ConfigError as exc:
        raise gr.Error(str(exc)) from exc


def named_values(widgets: dict[str, Any], raw: dict) -> dict[str, Any]:
    """Map Gradio's {component: value} input dict back to {field name: value}."""
    by_id = {id(comp): name for name, comp in widgets.items()}
    return {by_id[id(comp)]: value for comp, value in raw.items() if id(comp) in by_id}


def widget_updates(widgets: dict[str, Any], cfg: RunConfig) -> dict:
    """Gradio update mapping that shows `cfg` in the widgets."""
    values = cfg.to_dict()
    return {comp: gr.update(value=values[name]) for name, comp in widgets.items()}


def run_choices(who: Visitor | None = None, note: Callable[[Run, dict], str] | None = None,
                key: Callable[[Run], str] = lambda run: run.id) -> list[tuple[str, str]]:
    """Dropdown choices of the runs with a saved adapter that `who` may see, newest first:
    label 'name (id's time…tail) · model' (then ' · ' + ``note(run, summary)``), value ``key(run)`` (the id)."""
    choices = []
    for run in visible_runs(who or Visitor()):
        if run.has_adapter():
            summary = run.summary()
            label = f"{run.label()} · {summary.get('model') or '?'}"
            choices.append((label + (f" · {note(run, summary)}" if note else ""), key(run)))
    return choices


def pick_run(choices: list[tuple[str, str]], *wanted: str | None) -> str | None:
    """The first wanted id that is in the (label, id) choices, else the newest run, else None."""
    ids = [value for _, value in choices]
    return next((w for w in wanted if w and w in ids), ids[0] if ids else None)


def open_run(run_id: str | None, empty_message: str | None = None, visitor: Visitor | None = None,
             change: str = "") -> Run:
    """The run behind an id from the browser, if `visitor` may see it (and, when
    `change` names an action such as "stop", change it). The message never echoes
    the text sent: an API client can send anything as the id, of any type."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id.strip()):
        if empty_message and not run_id:
            raise gr.Error(empty_message)
        raise gr.Error("That is not a run id: pick a run from the list.")
    try:
        run = get_run(run_id)
        if change:
            require_change(run.path, visitor or Visitor(), change)
        else:
            require_view(run.path, visitor or Visitor())
        return run
    except (RunError, AccessError) as exc:
        raise gr.Error(str(exc)) from None


def with_ctx(fn, ctx: AppContext):
    """`fn` with the app context bound as its first argument, keeping what Gradio reads
    from a handler: the other parameters (API names and defaults), the annotations (a
    `request: gr.Request` parameter is filled only when Gradio sees its annotation, and
    it cannot see through functools.partial: the handler got None, i.e. no visitor) and
    whether it is a generator (a streaming event)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            yield from fn(ctx, *args, **kwargs)
    else:
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            return fn(ctx, *args, **kwargs)
    signature = inspect.signature(fn)
    handler.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return handler


def fmt_seconds(seconds: float | None) -> str:
    """A duration in seconds, shortened ("1h 05m", "2m 03s", "42s"); "—" for None."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def progress_html(step: int, total: int, state: str, eta: float | None) -> str:
    """The training progress bar as HTML: percent of steps, coloured by state, ETA (seconds) while running."""
    pct = 0 if not total else min(100, round(100 * step / total))
    colour = {"completed": "#16a34a", "failed": "#dc2626", "stopped": "#d97706", "interrupted": "#d97706"}.get(state, "#2563eb")
    return (
        f'<div class="studio-progress"><div style="background:#e5e7eb;border-radius:6px;height:14px;">'
        f'<div style="width:{pct}%;background:{colour};height:14px;border-radius:6px;"></div></div>'
        f'<div style="font-size:0.9em;margin-top:4px;">{state} · step {step}/{total or "?"} · {pct}%'
        f' · ETA {fmt_seconds(eta) if state == "running" else "—"}</div></div>'
    )


MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~&")


def run_name_md(name: str) -> str:
    r"""A run's name as literal Markdown: what Markdown would read as formatting or HTML is escaped.

    >>> print(run_name_md("**big** <b>run</b>"))
    \*\*big\*\* \<b\>run\</b\>
    """
    return "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in str(name))


def default_name_for(data_state: dict | None, preset: str | None = None, when: float | None = None) -> str:
    """The name a run started now gets when its "Run name" box is left empty: the Data tab's
    dataset, the preset and the day and time (finetune_core/runs/store.py default_run_name)."""
    data = (data_state or {}).get("name") or ((data_state or {}).get("mapping") or {}).get("data_path") or ""
    return default_run_name(str(data).rsplit("/", 1)[-1], preset if isinstance(preset, str) else "", when)


def chosen_run_name(typed: Any, data_state: dict | None, preset: str | None = None) -> str:
    """The "Run name" box as typed, or the default name (`default_name_for`) when it is empty;
    checking it is left to start_training, so a bad name is refused with the field named."""
    return typed if isinstance(typed, str) and typed.strip() else default_name_for(data_state, preset)


__all__ = ["coerce", "build_config_widgets", "config_from_values", "named_values", "widget_updates",
           "progress_html", "fmt_seconds", "label_for", "pick_run", "open_run", "with_ctx",
           "run_name_md", "default_name_for", "chosen_run_name"]
