"""Training: a TRL run from a RunConfig, in a background slot, reporting as it goes.

``train`` builds the trainer (model, adapter, data, speed-ups) and runs it,
``events`` turns the Trainer's log steps into the run's metrics and live
events, ``runner`` is the process's one training slot (start, stop, resume,
re-attach).

May import every other ``finetune_core`` subpackage except ``inference`` and ``export``.
"""
