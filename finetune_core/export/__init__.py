"""Export: take a trained run elsewhere.

``artifacts`` writes the adapter zip and the merged model and pushes to the
Hub; ``gguf`` writes a GGUF file for llama.cpp-based tools.

May import: ``finetune_core.models``, ``finetune_core.runs``,
``finetune_core.errors``. The stakeholder report lives in ``evaluation.report``.
"""
