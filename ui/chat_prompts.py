"""Speaking the run's language in the Chat tab: its prompt template, single-turn mode and example chips.

A run trained on a ``{column}`` template (finetune_core/inference/run_prompts.py)
has only seen prompts in that wrapping, so for such a run the tab offers
"Wrap my message in this run's prompt template" and "Single turn", both on by
default; a plain chat run gets neither wrapping nor single turn by default.
Both sides of the comparison get the same wrapping (the base model uses the
tuned run's template), which the note under the picker says.

The held-out prompt chips show the part that differs (the field's text, or
the prompts without their shared beginning and end); clicking one types the
field's text when wrapping is on, else the whole prompt.
"""
from __future__ import annotations

import gradio as gr

from finetune_core.inference.run_prompts import RunTemplate, chip_texts, example_prompts, run_template
from finetune_core.runs.ownership import Visitor

from .chat_models import key_run
from .errors import shows_errors

WRAP_LABEL = "Wrap my message in this run's prompt template"
SINGLE_LABEL = "Single turn (each message is answered on its own, without the earlier turns)"
CHIPS = 8


def template_for(key, who: Visitor | None = None) -> RunTemplate | None:
    """The prompt template of the run behind a ``run:`` key, when the visitor may see it and it has one."""
    run = key_run(key, who or Visitor())
    return run_template(run) if run is not None else None


def examples_for(key, who: Visitor | None = None) -> list[list[str]]:
    """Up to 8 held-out prompts of the run behind a ``run:`` key as [whole prompt, typed text]
    pairs (the typed text is the template's field when the run has a template, else the prompt);
    [] for the base model, a missing run, or one `who` may not see."""
    run = key_run(key, who or Visitor())
    if run is None:
        return []
    template = run_template(run)
    prompts = example_prompts(run, n=CHIPS)
    fields = [template.field_of(p) if template else None for p in prompts]
    return [[p, f if f is not None else p] for p, f in zip(prompts, fields)]


def chips(examples: list[list[str]], key, who: Visitor | None = None) -> gr.Dataset:
    """The example buttons: each labelled with the part of its prompt that differs from the others."""
    prompts = [full for full, _ in examples]
    labels = chip_texts(prompts, template_for(key, who)) if prompts else []
    return gr.Dataset(samples=[[p] for p in prompts] or [[""]], sample_labels=labels or None,
                      visible=bool(prompts))


@shows_errors
def pick_example(index, examples, wrap: bool = False) -> str:
    """A chip click (its index): the text typed into the message box, the field's text when
    wrapping is on (the template is added when sending), else the whole prompt."""
    if isinstance(index, (list, tuple)):  # a "values" click: the prompt itself
        return str(index[0]) if index else ""
    rows = examples if isinstance(examples, list) else []
    if not isinstance(index, int) or not 0 <= index < len(rows):
        return ""
    full, typed = rows[index]
    return typed if wrap else full


def template_note(template: RunTemplate | None, blind: bool = False) -> str:
    """What the wrapping does, said under the picker ("" for a plain chat run): the template, and
    that both sides get it (in blind mode without naming which model is which)."""
    if template is None:
        return ""
    shown = template.template
    for name, value in template.extras.items():
        shown = shown.replace("{" + name + "}", value)
    # one inline code span per line: they wrap on a phone, where a code block would scroll sideways
    lines = "  \n".join(f"`{line.replace('`', chr(39))}`" for line in shown.splitlines() if line.strip())
    fair = ("Both models get the same wrapped prompt, so the comparison is fair." if blind else
            "The base model gets the same wrapped prompt (this run's template), so the comparison is fair.")
    return (f"This run was trained on prompts made from a template; with wrapping on, your message "
            f"fills `{{{template.column}}}`:\n\n{lines}\n\n{fair}")


def prompt_controls(key, who: Visitor | None = None, blind: bool = False) -> tuple:
    """(wrap checkbox, single-turn checkbox, template note) for a newly chosen model: wrapping shown
    and on, and single turn on, for a template run; wrapping hidden and single turn off otherwise."""
    template = template_for(key, who)
    on = template is not None
    return (gr.Checkbox(value=on, visible=on, label=WRAP_LABEL), gr.Checkbox(value=on, label=SINGLE_LABEL),
            gr.Markdown(template_note(template, blind), visible=on))


def side_templates(key, wrap: bool, who: Visitor | None = None) -> tuple[RunTemplate | None, RunTemplate | None]:
    """(base, tuned) templates for a turn: both the run's template when wrapping is on (the base
    side uses the tuned run's, so both answer the same prompt), else none."""
    template = template_for(key, who) if wrap else None
    return template, template
