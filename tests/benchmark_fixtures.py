"""Small benchmark files in each benchmark's layout, written for these tests (ai2_arc, HellaSwag, cais/mmlu
fields), with the quirks of the real files: ARC rows with digit labels and with 3 or 5 choices, HellaSwag
labels as strings and WikiHow markers, an MMLU question with a leading space."""
from __future__ import annotations

import json
from pathlib import Path


def _arc(question: str, texts: list[str], answer: int, digits: bool = False) -> dict:
    labels = [str(i + 1) for i in range(len(texts))] if digits else [chr(65 + i) for i in range(len(texts))]
    return {"id": "fixture-" + question[:12], "question": question,
            "choices": {"text": texts, "label": labels}, "answerKey": labels[answer]}


ARC_ROWS = [
    _arc("Which gas do green plants take in from the air to make their food?",
         ["oxygen", "carbon dioxide", "nitrogen", "helium"], 1),
    _arc("How many legs does a spider have?", ["six", "eight", "ten", "four"], 1, digits=True),
    _arc("What does a thermometer measure?", ["temperature", "mass", "length"], 0),
    _arc("Which of these is a source of light?", ["a mirror", "the Moon", "a candle flame", "a window", "a shadow"], 2),
    _arc("Water freezing into ice is an example of", ["a change of state", "a chemical reaction", "evaporation",
                                                      "condensation"], 0),
    _arc("Which planet is closest to the Sun?", ["Venus", "Earth", "Mars", "Mercury"], 3, digits=True),
    _arc("What part of a plant takes in water from the soil?", ["the leaves", "the roots", "the flowers",
                                                                "the seeds"], 1),
    _arc("A student pushes a toy car. What makes the car move?", ["a force", "its color", "gravity only",
                                                                  "the air"], 0),
]

HELLASWAG_ROWS = [
    {"ind": 1, "activity_label": "Baking cookies", "ctx_a": "A woman mixes flour and sugar in a bowl.",
     "ctx_b": "she", "ctx": "A woman mixes flour and sugar in a bowl. she", "split": "val",
     "split_type": "indomain", "label": 2,
     "endings": ["paints the bowl blue.", "throws the bowl out of the window.",
                 "adds eggs and stirs the dough.", "reads a book about trains."], "source_id": "fixture~1"},
    {"ind": 2, "activity_label": "Riding a bike", "ctx_a": "A boy puts on a helmet.", "ctx_b": "he",
     "ctx": "A boy puts on a helmet. he", "split": "val", "split_type": "indomain", "label": "0",
     "endings": ["gets on the bike and rides down the street.", "eats the helmet.", "sleeps on the grass.",
                 "sings to a cat."], "source_id": "fixture~2"},
    {"ind": 3, "activity_label": "Home and Garden", "ctx_a": "[header] How to water a plant [title] Check the soil.",
     "ctx_b": "", "ctx": "[header] How to water a plant [title] Check the soil.", "split": "val",
     "split_type": "zeroshot", "label": 1,
     "endings": ["[step] Paint the pot red.", "[step] Pour water slowly until the soil is damp.",
                 "[step] Put the plant in the freezer.", "[step] Cut off every leaf."], "source_id": "wikihow~3"},
    {"ind": 4, "activity_label": "Washing dishes", "ctx_a": "A man fills the sink with soapy water.",
     "ctx_b": "he", "ctx": "A man fills the sink with soapy water. he", "split": "val", "split_type": "indomain",
     "label": 3, "endings": ["drives to the moon.", "plants a tree in the sink.", "turns into a bird.",
                             "scrubs the plates with a sponge."], "source_id": "fixture~4"},
    {"ind": 5, "activity_label": "Playing guitar", "ctx_a": "A girl sits with a guitar on her lap.",
     "ctx_b": "she", "ctx": "A girl sits with a guitar on her lap. she", "split": "val",
     "split_type": "indomain", "label": 0,
     "endings": ["strums the strings and starts to play.", "throws the guitar into a lake.",
                 "eats a sandwich made of strings.", "flies over the house."], "source_id": "fixture~5"},
]

MMLU_ROWS = [
    {"question": "Which of the following is the largest ocean on Earth?", "subject": "high_school_geography",
     "choices": ["Atlantic", "Indian", "Arctic", "Pacific"], "answer": 3},
    {"question": " What is the capital city of Japan?", "subject": "high_school_geography",
     "choices": ["Kyoto", "Tokyo", "Osaka", "Nagoya"], "answer": 1},
    {"question": "Which river flows through Cairo?", "subject": "high_school_geography",
     "choices": ["Nile", "Amazon", "Danube", "Thames"], "answer": 0},
    {"question": "What is the closest star to the Earth?", "subject": "astronomy",
     "choices": ["Sirius", "Proxima Centauri", "The Sun", "Vega"], "answer": 2},
    {"question": "Which planet has the most prominent rings?", "subject": "astronomy",
     "choices": ["Saturn", "Mars", "Venus", "Mercury"], "answer": 0},
    {"question": "What causes the phases of the Moon?", "subject": "astronomy",
     "choices": ["Earth's shadow", "The Moon's position relative to the Sun and Earth", "Clouds",
                 "The Moon changing shape"], "answer": 1},
]

FILES = {"arc_easy": ("arc_easy_test.jsonl", ARC_ROWS), "arc_challenge": ("arc_challenge_test.jsonl", ARC_ROWS[::-1]),
         "hellaswag": ("hellaswag_val.jsonl", HELLASWAG_ROWS), "mmlu": ("mmlu_sample.jsonl", MMLU_ROWS)}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_benchmark_folder(folder: Path, only: tuple[str, ...] | None = None) -> Path:
    """Write the four files (or `only` those benchmarks') into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (file, rows) in FILES.items():
        if only is None or name in only:
            write_jsonl(folder / file, rows)
    return folder
