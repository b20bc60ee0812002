"""The examples in the docstrings of finetune_core and evaluation run, and say what the code does.

Every module of both packages is imported (which must be cheap and free of side
effects: no files, no threads, no model loads) and its ``>>>`` examples are run
by the standard doctest runner. A failing example is reported with doctest's
own expected/got text.

    .venv/bin/python -m pytest -q tests/test_doctests.py
"""
from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("finetune_core", "evaluation")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def module_names() -> list[str]:
    """Every module under the packages, found by file (runs/ has no __init__.py, so
    pkgutil would not list it)."""
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("name", module_names())
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()


def test_the_core_helpers_carry_examples():
    """The documented behaviour stays documented: these modules keep their examples."""
    counts = {}
    for name in ("finetune_core.config", "finetune_core.runs.store", "finetune_core.inference.votes",
                 "evaluation.metrics"):
        tests = doctest.DocTestFinder().find(importlib.import_module(name), name)
        counts[name] = sum(len(t.examples) for t in tests)
    assert all(n >= 3 for n in counts.values()), counts
