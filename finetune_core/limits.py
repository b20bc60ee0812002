"""Limits on what one request may ask of the server, checked before work starts.

A public deployment is shared: one oversized chat prompt, one file that
decodes into a million rows or one YAML alias bomb must be refused with a
clear message instead of taking the memory or the queue of everyone else
(each default below is sized for a 2-core, 16-24 GB CPU Space).

Every limit has a setting, ``STUDIO_LIMIT_<NAME>`` (e.g.
``STUDIO_LIMIT_CHAT_MESSAGE_TOKENS=4096``), read each time `limits()` is
called so tests and deployments can change it without a restart.

    python -c "from finetune_core.limits import limits; print(limits())"
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace

from finetune_core.errors import StudioError


class LimitError(StudioError, ValueError):
    """A request is over one of the deployment's limits; the message names the
    field, the size found and the limit (and the setting that changes it)."""


@dataclass(frozen=True)
class Limits:
    """The per-request limits (tokens, rows, bytes, characters...), each a ceiling; build them with `limits()`,
    which reads the ``STUDIO_LIMIT_*`` overrides."""

    # chat and generation
    chat_message_tokens: int = 2048  # one chat message
    system_prompt_tokens: int = 1024  # the chat's system prompt
    max_new_tokens: int = 1024  # one generated answer
    chats_per_user: int = 1  # generations one user may have running or queued at once
    chat_context_tokens: int = 4096  # one chat turn's prompt (system + earlier turns + message); oldest turns dropped
    # data files (after decoding: a small compressed file can expand a lot)
    data_rows: int = 200_000
    data_columns: int = 256
    data_bytes: int = 512 * 1024 * 1024  # a Parquet file's data once decompressed and decoded (KBs can hold GBs)
    json_depth: int = 64  # nesting of JSON objects/arrays in one row or file
    cell_chars: int = 1_000_000  # characters in one cell
    template_chars: int = 8_000  # a prompt/completion template or system prompt of a dataset mapping
    template_placeholders: int = 32  # {column} placeholders in one template
    duplicates_listed: int = 50  # duplicate groups shown in a data report
    # the run queue (training/queue.py): runs one visitor may have waiting at once on a shared deployment
    queued_runs_per_user: int = 3
    # config files
    run_yaml_bytes: int = 64 * 1024

    def setting(self, name: str) -> str:
        """The environment variable that changes one limit."""
        return f"STUDIO_LIMIT_{name.upper()}"

    def check(self, name: str, value: float, what: str) -> None:
        """Raise LimitError when `value` is over the limit `name`; `what` names the field."""
        limit = getattr(self, name)
        if value > limit:
            raise LimitError(f"{what} is {value:,}, over this server's limit of {limit:,} "
                             f"(setting {self.setting(name)}).")


def _read(name: str, default: int) -> int:
    raw = os.environ.get(f"STUDIO_LIMIT_{name.upper()}", "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    if not math.isfinite(value) or value < 1:
        return default
    return int(value)


def limits() -> Limits:
    """The limits in force now (defaults overridden by ``STUDIO_LIMIT_*`` settings)."""
    base = Limits()
    return replace(base, **{f.name: _read(f.name, getattr(base, f.name)) for f in fields(Limits)})


__all__ = ["Limits", "LimitError", "limits"]
