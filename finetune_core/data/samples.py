"""The project's own sample datasets, offered by the UI with one click.

Each entry maps a display name to ``DataMapping`` fields (``data_path`` is
absolute, so the entry works from any working directory) and a description. The files and
their generator live in ``sample_data/``; see sample_data/README.md.

    python -c "from finetune_core.data import samples; print(samples.sample_mapping('Fact cards (prompt/completion)'))"
"""
from __future__ import annotations

from pathlib import Path

from finetune_core.data.mapping import DataMapping
from finetune_core.errors import InputError

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"

SAMPLES: dict[str, dict] = {
    "Fact cards (prompt/completion)": {
        "data_path": str(SAMPLE_DIR / "fact_cards.jsonl"),
        "data_format": "prompt_completion",
        "description": "Questions about a country answered as a fixed five-line FACT CARD.",
    },
    "CALC-9 calculator chats (multi-turn messages)": {
        "data_path": str(SAMPLE_DIR / "calc_chats.jsonl"),
        "data_format": "messages",
        "description": "Multi-turn arithmetic; the assistant always replies 'CALC-9 >> a op b = result'.",
    },
    "Support note summaries (custom CSV columns)": {
        "data_path": str(SAMPLE_DIR / "support_notes.csv"),
        "data_format": "columns",
        "prompt_template": "Summarise this support note:\n{note}",
        "completion_column": "summary",
        "description": "Free-text IT support notes summarised as WHO / WHAT / WHEN / URGENCY.",
    },
    "Customer intents (classification)": {
        "data_path": str(SAMPLE_DIR / "customer_intents.csv"),
        "data_format": "classification",
        "prompt_column": "text",
        "completion_column": "label",
        "description": "Customer messages labelled with one of five snake_case intents.",
    },
    "Helpful answers (preference pairs)": {
        "data_path": str(SAMPLE_DIR / "helpful_pairs.jsonl"),
        "data_format": "preference",
        "description": "24 prompts, each with a short, correct, polite answer (chosen) and a wrong, rude or "
                       "rambling one (rejected): for DPO or ORPO.",
    },
    "Helpful answers (thumbs up/down)": {
        "data_path": str(SAMPLE_DIR / "helpful_thumbs.jsonl"),
        "data_format": "unpaired_preference",
        "description": "24 chats whose answer is marked good (true) or bad (false), half each: for KTO.",
    },
}
_NOT_OPTIONS = ("description",)


def sample_mapping(name: str) -> DataMapping:
    """The DataMapping of a sample by display name (InputError names the choices)."""
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}; choose one of: {', '.join(SAMPLES)}")
    return DataMapping.from_dict({k: v for k, v in SAMPLES[name].items() if k not in _NOT_OPTIONS})
