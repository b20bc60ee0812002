"""Datasets by Hugging Face Hub id: list a dataset's configs and splits, stream its first rows into a file.

The first rows of a split (up to a row limit) are streamed with ``load_dataset(...,
streaming=True)``, never downloaded whole, into a JSON Lines file under a server-made
name in the caller's folder (the Data tab's uploads folder); from there they go
through the upload's mapping, checks, statistics and split. Rows are written in
order from the split's first, one per line, so "row 3" in any message is the
split's third row (from 1; the Hub's dataset viewer counts from 0 and shows row 2).
The provenance, ``DataMapping.hub_source`` in run.yaml, is one text
``owner/name?config=C&split=S&rows=N&revision=SHA`` (`HubRequest.source` / `.parse`).

``token`` goes to the Hub as given: a string (the signed-in user's), False (none
is sent) or None (the environment's: the command line's user owns the server).
Offline (``HF_HUB_OFFLINE``, or no network) an id is refused within seconds: one
metadata request with a short timeout comes before ``load_dataset``, whose own
retries take about 25 s without network.

``local_root`` stands a folder in for the Hub (tests, the command line): the id
``owner/name`` is then ``local_root/owner/name`` (data files and a README.md
``configs:`` block). The web page never sets it: a visitor names only Hub ids.

    python -m finetune_core inspect --hub owner/name --split train --limit 500
"""
from __future__ import annotations

import datetime as _dt
import decimal
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qsl, urlencode

from finetune_core.errors import StudioError
from finetune_core.limits import limits

DATASET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")  # a config or split name
DEFAULT_ROWS = 1000  # rows taken when no limit is given; the most is the data_rows limit (finetune_core.limits)
HUB_TIMEOUT_S = 10.0  # the metadata request: an unreachable Hub is refused within this
PREVIEW_ROWS = 10
MEDIA_FEATURES = ("Image", "Audio", "Video", "Pdf", "Nifti")  # left out: this studio trains on text
SOURCE_CHARS = 512


class HubDataError(StudioError, ValueError):
    """A Hub dataset could not be listed or read; the message says why and what to do."""


def default_rows() -> int:
    """The row limit used when none is given: DEFAULT_ROWS, or less where the data_rows limit is lower."""
    return min(DEFAULT_ROWS, limits().data_rows)


@dataclass(frozen=True)
class HubRequest:
    """Which rows of which dataset: id, config (subset, "" = the only or default one), split, row limit, and
    the revision (commit) they were read at, once known."""

    dataset_id: str
    config: str = ""
    split: str = "train"
    limit: int = DEFAULT_ROWS
    revision: str = ""

    def checked(self) -> "HubRequest":
        """The request with its text stripped and its limit bounded; HubDataError names a bad field."""
        dataset_id = check_dataset_id(self.dataset_id)
        config, split = (self.config or "").strip(), (self.split or "").strip() or "train"
        for what, value in (("config", config), ("split", split)):
            if value and not NAME_RE.match(value):
                raise HubDataError(f"The {what} {value[:60]!r} is not a valid {what} name "
                                   "(letters, digits, '.', '_', '+' and '-').")
        revision = (self.revision or "").strip()
        if revision and not re.fullmatch(r"[A-Za-z0-9._/-]{1,128}", revision):
            raise HubDataError(f"The revision {revision[:60]!r} is not a valid commit or branch name.")
        return HubRequest(dataset_id, config, split, check_limit(self.limit), revision)

    @property
    def source(self) -> str:
        """The provenance text recorded in run.yaml (``DataMapping.hub_source``)."""
        query = {"config": self.config, "split": self.split, "rows": self.limit, "revision": self.revision}
        return f"{self.dataset_id}?{urlencode({k: v for k, v in query.items() if v})}"

    @classmethod
    def parse(cls, text: str) -> "HubRequest":
        """A request from its ``source`` text (or a bare id); HubDataError names what is wrong.

        >>> HubRequest.parse("me/notes?split=test&rows=50").limit
        50
        >>> HubRequest.parse("me/notes?row=5")
        Traceback (most recent call last):
        ...
        finetune_core.data.hub.HubDataError: hub_source: unknown part 'row'; use config, split, rows and revision.
        """
        text = str(text or "").strip()
        if len(text) > SOURCE_CHARS:
            raise HubDataError(f"hub_source: {len(text)} characters, over {SOURCE_CHARS}.")
        dataset_id, _, query = text.partition("?")
        parts = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(parts) - {"config", "split", "rows", "revision"})
        if unknown:
            raise HubDataError(f"hub_source: unknown part {unknown[0]!r}; use config, split, rows and revision.")
        return cls(dataset_id, parts.get("config", ""), parts.get("split", "train"),
                   parts.get("rows", default_rows()), parts.get("revision", "")).checked()


def check_dataset_id(dataset_id: str) -> str:
    """A Hub dataset id 'owner/name', stripped; anything else (a path, a URL) is refused by name."""
    text = str(dataset_id or "").strip()
    if not DATASET_ID_RE.match(text) or ".." in text:
        raise HubDataError(f"{text[:80]!r} is not a Hub dataset id: expected 'owner/name' "
                           "(as in huggingface.co/datasets/owner/name).")
    return text


def check_limit(limit: Any) -> int:
    """The row limit as a whole number from 1 to the data_rows limit (empty or 0: the default)."""
    most = limits().data_rows
    try:
        value = int(float(limit)) if limit not in (None, "") else 0
    except (TypeError, ValueError, OverflowError):
        raise HubDataError(f"Row limit: {str(limit)[:40]!r} is not a number.") from None
    if value <= 0:
        return default_rows()
    if value > most:
        raise HubDataError(f"Row limit: {value:,} is over this server's limit of {most:,} rows "
                           f"(setting {limits().setting('data_rows')}).")
    return value


def describe(source: str) -> str:
    """A recorded ``hub_source`` in words: "owner/name (config C, split train, first 500 rows, revision 1a2b3c4)".

    >>> describe("me/notes?split=test&rows=50&revision=0123456789abcdef")
    'me/notes (split test, first 50 rows, revision 0123456)'
    """
    try:
        req = HubRequest.parse(source)
    except HubDataError:
        return str(source or "")[:120]
    parts = [f"config {req.config}"] if req.config else []
    parts += [f"split {req.split}", f"first {req.limit:,} rows"]
    if req.revision:
        parts.append(f"revision {req.revision[:7]}")
    return f"{req.dataset_id} ({', '.join(parts)})"


# -- reaching the Hub -----------------------------------------------------------------
def _where(dataset_id: str, local_root: str | os.PathLike | None) -> str:
    """What load_dataset reads: the Hub id, or its stand-in folder under ``local_root``."""
    if local_root is None:
        return dataset_id
    folder = Path(local_root) / dataset_id
    if not folder.is_dir():
        raise HubDataError(f"Dataset {dataset_id!r} was not found (local stand-in for the Hub).")
    return str(folder)


def _clean(exc: BaseException, where: str) -> str:
    """An exception's first line without server paths (the stand-in folder, cache folders)."""
    from finetune_core.data.load import without_paths

    return without_paths(exc, Path(where or "/nonexistent"))[:300] or type(exc).__name__


def hub_error(exc: BaseException, dataset_id: str, where: str = "") -> HubDataError:
    """A user's message for a failure reaching or reading a Hub dataset: offline, not found or
    private, gated, or the library's own words (without paths)."""
    from huggingface_hub import errors as hub_errors

    page, text = f"https://huggingface.co/datasets/{dataset_id}", str(exc)
    if isinstance(exc, hub_errors.GatedRepoError) or "gated" in text.lower():
        return HubDataError(f"{dataset_id} is gated: accept its terms at {page} while signed in, then sign in "
                            "here with Hugging Face and load it again.")
    if isinstance(exc, hub_errors.RepositoryNotFoundError) or "401" in text or "Unauthorized" in text:
        return HubDataError(f"{dataset_id} was not found on the Hub, or it is private: check the id, or sign in "
                            "with Hugging Face as a user who can read it.")
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return HubDataError(f"{dataset_id}: that revision does not exist.")
    if isinstance(exc, hub_errors.OfflineModeIsEnabled) or _network_failure(exc):
        return HubDataError(offline_message(dataset_id))
    if isinstance(exc, hub_errors.HfHubHTTPError):
        return HubDataError(f"The Hub refused {dataset_id}: {_clean(exc, where)}")
    return HubDataError(f"Could not read {dataset_id}: {_clean(exc, where)}")


def offline_message(dataset_id: str) -> str:
    """The message for a Hub that cannot be reached (what to do instead)."""
    return (f"Could not reach the Hugging Face Hub for {dataset_id}: this server is offline "
            "(HF_HUB_OFFLINE is set, or it has no network). Download the data elsewhere and upload it as a file.")


def _network_failure(exc: BaseException) -> bool:
    for _ in range(5):  # the cause chain: httpx errors come wrapped
        names = type(exc).__name__
        if isinstance(exc, (ConnectionError, TimeoutError)) or re.search(r"Connect|Timeout|Network|Transport|"
                                                                           r"LocalEntryNotFound", names):
            return True
        exc = exc.__cause__ or exc.__context__
        if exc is None:
            return False
    return False


def _reach(dataset_id: str, token, local_root) -> str:
    """Check that the dataset exists and can be read; returns its revision (commit sha; "" for a stand-in).
    One request with a short timeout, so an offline server answers in seconds, not after retries."""
    if local_root is not None:
        _where(dataset_id, local_root)
        return ""
    if any(os.environ.get(name, "") not in ("", "0") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        raise HubDataError(offline_message(dataset_id))
    from huggingface_hub import HfApi

    try:
        info = HfApi().dataset_info(dataset_id, token=token, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message for the user
        raise hub_error(exc, dataset_id) from None
    return str(getattr(info, "sha", "") or "")


def _names(dataset_id: str, token, local_root, ask) -> list[str]:
    """``ask(where, revision)`` (a datasets listing) once the dataset is reached; failures as HubDataError."""
    revision = _reach(dataset_id, token, local_root)
    where = _where(dataset_id, local_root)
    try:
        return [str(n) for n in ask(where, revision or None)]
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message for the user
        raise hub_error(exc, dataset_id, where) from None


def list_configs(dataset_id: str, token=None, local_root=None) -> list[str]:
    """The dataset's configs (subsets), in the order it declares them; ["default"] when it has no others."""
    from datasets import get_dataset_config_names

    return _names(check_dataset_id(dataset_id), token, local_root, lambda where, revision: get_dataset_config_names(
        where, revision=revision, token=token)) or ["default"]


def list_splits(dataset_id: str, config: str = "", token=None, local_root=None) -> list[str]:
    """The splits of one config of the dataset (train first when it has one)."""
    from datasets import get_dataset_split_names

    req = HubRequest(dataset_id, config).checked()
    names = _names(req.dataset_id, token, local_root, lambda where, revision: get_dataset_split_names(
        where, req.config or None, revision=revision, token=token))
    return sorted(names, key=lambda n: n != "train")


# -- rows into a file ---------------------------------------------------------------------
@dataclass
class HubFile:
    """The rows written: the file, the request (with the revision read), the columns, the first rows (for a
    preview) and notes (columns left out, fewer rows than asked)."""

    path: Path
    request: HubRequest
    rows: int
    columns: list[str]
    preview: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The provenance, for DataMapping.hub_source (with the revision read)."""
        return self.request.source

    @property
    def name(self) -> str:
        """A short display name: "owner/name · train" (config too when there is one)."""
        return " · ".join(part for part in (self.request.dataset_id, self.request.config, self.request.split) if part)


def _jsonable(value: Any) -> Any:
    """A value json cannot write by itself, as JSON (dates as ISO text); TypeError for media and bytes."""
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time, _dt.timedelta, decimal.Decimal)):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(type(value).__name__)


def _stream(req: HubRequest, token, local_root) -> tuple[Iterable[dict], list[str]]:
    """The split as a stream of rows (media columns removed), and the columns removed."""
    from datasets import load_dataset

    where = _where(req.dataset_id, local_root)
    try:
        stream = load_dataset(where, req.config or None, split=req.split, streaming=True,
                              revision=req.revision or None, token=token)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise HubDataError(f"{req.dataset_id} has no split {req.split!r}"
                               f"{' in config ' + repr(req.config) if req.config else ''}: "
                               f"{_clean(exc, where)}") from None
        raise hub_error(exc, req.dataset_id, where) from None
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message for the user
        raise hub_error(exc, req.dataset_id, where) from None
    media = [name for name, kind in (stream.features or {}).items() if type(kind).__name__ in MEDIA_FEATURES]
    if media:
        stream = stream.remove_columns(media)
    return stream, media


def fetch_to_file(request: HubRequest, folder: str | os.PathLike, token=None, local_root=None,
                  max_file_mb: float = 100.0) -> HubFile:
    """Stream the first ``request.limit`` rows of the split into a new JSON Lines file in ``folder``
    (server-made name ``hub-<time>-<random>.jsonl``); nothing past the limit is read.

    Row N of the split is line N of the file. A value JSON cannot hold (bytes, a decoded image)
    leaves its column out, with a note. More than ``max_file_mb`` of rows is refused (lower the
    limit): the file is removed. Raises HubDataError with a message for the user."""
    req = request.checked()
    req = replace(req, revision=req.revision or _reach(req.dataset_id, token, local_root))
    stream, media = _stream(req, token, local_root)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"hub-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}.jsonl"
    try:
        written, columns, preview, dropped = _write_rows(stream, req, path, int(max_file_mb * 1024 * 1024))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    notes = [f"column {c!r} left out: it holds images, audio or other binary data" for c in [*media, *dropped]]
    if written < req.limit:
        notes.append(f"the split has {written:,} rows: all of them were read")
    if not written:
        path.unlink(missing_ok=True)
        raise HubDataError(f"{req.dataset_id}: the split {req.split!r} holds no rows.")
    return HubFile(path, req, written, columns, preview, notes)


def _write_rows(stream, req: HubRequest, path: Path, max_bytes: int) -> tuple[int, list[str], list[dict], list[str]]:
    """Write up to req.limit rows of ``stream`` as JSON Lines; (rows, columns, first rows, columns dropped)."""
    written, size, columns, preview, dropped = 0, 0, {}, [], []
    iterator = iter(stream)
    with open(path, "x", encoding="utf-8") as out:
        while written < req.limit:  # the limit is checked before the next row is asked for
            try:
                row = next(iterator)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - a broken shard or a lost connection, mid-stream
                raise HubDataError(f"{req.dataset_id}: reading row {written + 1} failed: "
                                   f"{hub_error(exc, req.dataset_id, str(path.parent))}") from None
            row = {str(k): v for k, v in row.items() if str(k) not in dropped}
            line = _json_line(row, dropped)
            size += len(line.encode("utf-8")) + 1
            if size > max_bytes:
                raise HubDataError(f"The first {written + 1:,} rows of {req.dataset_id} take over "
                                   f"{max_bytes / 1024 / 1024:g} MB, this server's file limit: lower the row limit.")
            out.write(line + "\n")
            written += 1
            columns.update(dict.fromkeys(k for k in row if k not in dropped))
            if len(preview) < PREVIEW_ROWS:
                preview.append(json.loads(line))
    return written, [c for c in columns if c not in dropped], preview, dropped


def _json_line(row: dict, dropped: list[str]) -> str:
    """The row as one JSON line; columns whose values JSON cannot hold are added to ``dropped`` and left out."""
    try:
        return json.dumps(row, ensure_ascii=False, default=_jsonable)
    except (TypeError, ValueError):
        pass
    for key, value in list(row.items()):
        try:
            json.dumps(value, default=_jsonable)
        except (TypeError, ValueError):
            dropped.append(key)
            del row[key]
    return json.dumps(row, ensure_ascii=False, default=_jsonable)


def default_folder() -> Path:
    """Where the command line writes the rows: the uploads folder, read as ui/data_uploads.uploads_dir reads
    it (``STUDIO_UPLOADS_DIR``, else ./uploads); the Data tab passes its own."""
    return Path(os.environ.get("STUDIO_UPLOADS_DIR") or "uploads").resolve()


def fill_from_hub(mapping, folder: str | os.PathLike | None = None, token=None, local_root=None,
                  max_file_mb: float = 100.0):
    """A DataMapping with a ``hub_source`` and no ``data_path`` (``train --set hub_source=owner/name``) with
    its rows fetched into ``folder`` (default_folder) and ``data_path`` set; ``hub_source`` gains the
    revision read. Any other mapping is returned as it is."""
    if not mapping.hub_source or mapping.data_path:
        return mapping
    got = fetch_to_file(HubRequest.parse(mapping.hub_source), folder or default_folder(), token, local_root,
                        max_file_mb)
    return replace(mapping, data_path=str(got.path), hub_source=got.source)


__all__ = ["HubDataError", "HubRequest", "HubFile", "DEFAULT_ROWS", "check_dataset_id", "check_limit", "default_folder",
           "default_rows", "describe", "fetch_to_file", "fill_from_hub", "hub_error", "list_configs", "list_splits"]
