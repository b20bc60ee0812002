"""Data: from an uploaded file to training rows, with every problem named by row and column.

``load`` reads a file into raw records (``cells`` holds the per-cell checks),
``formats`` detects the layout and normalises rows to TRL's conversational
form, ``checks`` validates rows and whole files, ``stats`` counts tokens and
shows what the model will learn, ``dataset`` is the facade the rest of the
studio calls (load, detect, normalise, validate, split, inspect), ``samples``
lists the project's own sample files.

May import: ``finetune_core.config``, ``finetune_core.limits``,
``finetune_core.errors`` and ``finetune_core.models`` (for tokenizers).
"""
