"""Data: from an uploaded file to training rows, with every problem named by row and column.

``mapping`` holds ``DataMapping``, the one description of the file, its
column mapping, the held-out split and the row caps (RunConfig, the Data tab,
training and evaluation all use it). ``records`` holds the ``Issue`` a problem
becomes and the ``LoadResult`` of a read. ``load`` reads a file into raw records
(``cells`` holds the per-cell checks), ``formats`` detects the layout and
normalises rows to TRL's conversational form (``preference`` does it for
chosen/rejected pairs, thumbs up/down and a run's votes, and says which kind of
rows a file gave: ``rows_kind``), ``checks`` validates rows and whole files, ``templates`` fills ``{column}`` templates, ``split`` makes the held-out split, ``stats`` counts tokens,
shows what the model will learn, ``dataset`` is the
facade the rest of the studio calls (load, detect, normalise, validate,
split, inspect), ``samples`` lists the project's own sample files.

May import: ``finetune_core.fieldmeta``, ``finetune_core.limits`` and
``finetune_core.errors``; never ``models`` (a tokenizer is passed in; the
app's tokenizer cache is ``models.tokenizers``).
"""
