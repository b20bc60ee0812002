"""Runs: what a training run is on disk and who may see it.

``store`` is the run directory (run.yaml, status.json, metrics, adapter,
logs, votes) and the list of runs, ``ownership`` records a run's owner and
decides who may open, change or delete it.

May import: ``finetune_core.config``, ``finetune_core.errors``.
"""
