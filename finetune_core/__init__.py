"""finetune_core: the studio's engine (config, models, data, training, generation).

Importable without gradio; the UI, the CLI (`python -m finetune_core`) and the
tests all call the same functions.
"""
__version__ = "0.1.0"
