"""Evaluations the run queue asks for: a queued run with evaluate_after is evaluated when it completes
(finetune_core/training/queue.py calls AppContext.evaluate_finished, which calls this)."""
from __future__ import annotations

from evaluation.run_eval import evaluate_on_gpu, evaluate_run, load_eval_rows
from finetune_core.data.dataset import is_text_rows

from .context import AppContext


def evaluate_finished_run(ctx: AppContext, run) -> None:
    """The held-out evaluation a queued run asked for (evaluate_after), with the Evaluate tab's defaults:
    every held-out row, answers sized from the references, held-out loss where the rows are plain
    text. Progress shows on every page watching the run, as for a press of Evaluate."""
    running = ctx.evaluations.start(run.id, run.name)
    if running is None:
        return  # someone is evaluating it already
    try:
        rows, _labels, _source = load_eval_rows(run)
        settings = {"with_loss": is_text_rows(rows)}
        # on ZeroGPU one GPU call, as the Evaluate button does; elsewhere the app's copy of the model
        evaluate_on_gpu(run, settings) or evaluate_run(
            run, **settings, progress=lambda text, f: ctx.evaluations.update(running, text, f),
            load_model=lambda: ctx.models.get(f"run:{run.id}"))
    finally:
        ctx.evaluations.finish(running)
