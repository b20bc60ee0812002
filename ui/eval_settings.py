"""The Evaluate tab's settings for the held-out evaluation: rows, batch size, max new tokens,
held-out loss and the extra metrics (the shipped `evaluate` modules to tick, and Hub metric names
where the owner allows them). eval_tab.py lays them out in its Settings accordion and passes
them to evaluation.run_eval.evaluate_run, which checks every value before the model loads.
"""
from __future__ import annotations

import gradio as gr

from evaluation.metric_registry import DEFAULT_METRICS, available_metrics, hub_metrics_allowed
from finetune_core.limits import limits


def extra_metrics(picked: list[str] | str | None, typed: str | None = None) -> list[str] | None:
    """The extra metrics asked for: the ticked shipped ones, then any typed Hub names (comma-separated).
    evaluate_run checks every name before the model loads (a Hub name only where the owner allows it)."""
    names = [picked] if isinstance(picked, str) else list(picked or [])
    names += [n.strip() for n in (typed or "").split(",") if n.strip()]
    return names or None


def settings_inputs() -> list:
    """The Settings accordion's inputs: rows, batch size, max new tokens, held-out loss, extra metrics
    (the shipped ones to tick; a box for Hub names only where the owner allows Hub metrics)."""
    with gr.Accordion("Settings", open=False, elem_id="eval-settings"):
        with gr.Row():
            limit = gr.Number(value=0, minimum=0, precision=0, label="Rows to evaluate",
                              info="0 = every held-out row; fewer rows finish sooner", elem_id="eval-limit")
            batch_size = gr.Slider(1, 128, value=64, step=1, label="Batch size", elem_id="eval-batch",
                                   info="most prompts generated together (batches also stay under 2 GiB of cache)")
            max_new = gr.Number(value=0, minimum=0, maximum=limits().max_new_tokens, precision=0,
                                label="Max new tokens", elem_id="eval-max-new",
                                info="0 = auto: longest label + 8, or longest reference + 16 (up to 256)")
            with_loss = gr.Checkbox(value=False, label="Also compute held-out loss",
                                    info="mean loss and perplexity on the answers (lower is better)")
        defaults = {name for names in DEFAULT_METRICS.values() for name in names}
        metrics = gr.CheckboxGroup(
            [(f"{name}: {about}", name) for name, about in available_metrics().items() if name not in defaults],
            label="Extra metrics", elem_id="eval-metrics",
            info="besides ROUGE and exact match (generation) or accuracy (classification); each with its interval")
        hub = gr.Textbox(label="Metrics from the Hugging Face Hub (names, comma-separated)", elem_id="eval-hub-metrics",
                         visible=hub_metrics_allowed(), placeholder="e.g. meteor",
                         info="code fetched from the Hub and run on this server (allowed by STUDIO_HUB_METRICS=1)")
    return [limit, batch_size, max_new, with_loss, metrics, hub]
