"""Inference: generation with base and tuned from one copy of the weights, and chat.

``generation`` holds ``InferenceModel`` (two sides, adapters switched per
side, batched and streaming generation; ``streaming`` streams both sides side
by side), ``sides`` says what a side is ("base" or a run's whole chain), what
a run is compared with by default and loads a pair, ``batching`` groups prompts into batches that fit a
key/value-cache budget, ``model_cache`` keeps the last few loaded models,
``chat`` is a side-by-side conversation with blind A/B votes, ``run_prompts``
rebuilds a run's prompt template so a typed message is wrapped as training saw
it (and gives the held-out example prompts), ``votes`` appends blind votes to the
run, and ``chat_limits`` checks what one chat turn may ask of a shared server.

May import: ``finetune_core.config``, ``finetune_core.limits``,
``finetune_core.errors``, ``data``, ``models``, ``runs`` and ``speedups``.
"""
