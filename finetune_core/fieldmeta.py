"""Settings fields described once: help text, group, bounds and choices in the field's metadata.

`RunConfig` (finetune_core/config.py) and `DataMapping`
(finetune_core/data/mapping.py) declare their fields with `setting`, turn
YAML / CLI / widget values into the field's type with `coerce`, and check
bounds and choices with `check_values`. The UI builds its widgets from the
same metadata, so a bound or a help text is written in one place.

Problems are raised as ValueError naming the field; RunConfig re-raises them
as its ConfigError.
"""
from __future__ import annotations

import math
from dataclasses import field, fields
from typing import Any


def setting(default, help: str, group: str, lo=None, hi=None, choices=None, step=None):
    """A dataclass field with a default and the metadata widgets and validation read."""
    meta = {"help": help, "group": group}
    if lo is not None:
        meta["min"] = lo
    if hi is not None:
        meta["max"] = hi
    if choices is not None:
        meta["choices"] = list(choices)
    if step is not None:
        meta["step"] = step
    return field(default=default, metadata=meta)


def check_values(obj) -> None:
    """Refuse a value outside its field's choices or bounds, or a NaN/inf float (ValueError naming the field)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError(f"{f.name}: {value!r} is not one of {', '.join(map(str, meta['choices']))}.")
        if isinstance(value, float) and not math.isfinite(value):
            # NaN passes every < and > test below, and inf has no use: refuse both by name.
            raise ValueError(f"{f.name}: {value} is not a finite number.")
        try:
            if "min" in meta and value < meta["min"]:
                raise ValueError(f"{f.name}: {value} is below the minimum {meta['min']}.")
            if "max" in meta and value > meta["max"]:
                raise ValueError(f"{f.name}: {value} is above the maximum {meta['max']}.")
        except TypeError:  # direct construction with a value of the wrong type, e.g. lora_r="8"
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            raise ValueError(f"{f.name}: {str(value)[:80]!r} is not a valid {kind}.") from None


def coerce(f, value):
    """Convert YAML / CLI / widget values to the field's type, naming the field on failure (ValueError)."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind == "int":
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():  # "8.5" is not 8: say so
                raise ValueError(value)
            return int(number)
        if kind == "float":
            return float(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(float("inf"))
        raise ValueError(f"{f.name}: {str(value)[:80]!r} is not a valid {kind}.") from exc


def field_rows(cls) -> list[dict[str, Any]]:
    """Name, type, default and metadata of every field of a settings dataclass, in order."""
    out = []
    for f in fields(cls):
        out.append({"name": f.name, "type": f.type if isinstance(f.type, str) else f.type.__name__,
                    "default": f.default, **f.metadata})
    return out
