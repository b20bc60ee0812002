"""evaluation: metrics and paired base-vs-tuned scoring on a run's held-out split.

No gradio here. Command line: `python -m evaluation --run RUN_DIR --json`.
"""
