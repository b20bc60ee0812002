"""``{column}`` templates: the placeholders a mapping's prompt and completion templates
name, the limits a template must respect, and filling one from a row.

``{{`` and ``}}`` are literal braces; a missing or null column is a RowProblem
that names the column, so the row is reported, not silently filled.
"""
from __future__ import annotations

import re

from finetune_core.data.cells import has_broken_text
from finetune_core.data.checks import RowProblem
from finetune_core.errors import InputError
from finetune_core.limits import limits

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def template_fields(template: str) -> list[str]:
    """Placeholder names in a ``{column}`` template (``{{``/``}}`` are literal braces)."""
    return [m.group(1) for m in _FIELD.finditer(template) if m.group(1) is not None]


def check_template(name: str, text: str, placeholders: bool = True) -> None:
    """Refuse a mapping template (or system prompt) that would make every row huge.

    Checked once when the mapping is set, before any row is rendered: each row
    costs about (characters + placeholders x cell size), so a template repeating
    ``{text}`` ten thousand times multiplies the file. ``name`` is the field
    named in the message (LimitError, or ValueError for a broken character).
    """
    lim = limits()
    lim.check("template_chars", len(text), f"the length of {name} in characters")
    if placeholders:
        count = len(template_fields(text))
        lim.check("template_placeholders", count, f"the number of {{column}} placeholders in {name}")
    if has_broken_text(text):
        # Tokenizers and the browser cannot encode a lone surrogate: refuse it here, named.
        raise InputError(f"{name} holds a broken character (a lone UTF-16 surrogate); retype that text.")


def render_template(template: str, record: dict, extra: dict | None = None) -> str:
    """Fill ``{column}`` placeholders from a row; a missing or null value is a RowProblem."""
    extra = extra or {}

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        if name in extra:
            return extra[name]
        value = record.get(name)
        if value is None:
            raise RowProblem(name, f"column {name!r} is missing or null")
        if isinstance(value, (list, dict)):
            raise RowProblem(name, f"column {name!r} should be text, got a {type(value).__name__}")
        return str(value)

    return _FIELD.sub(fill, template)
