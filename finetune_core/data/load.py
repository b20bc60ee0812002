"""Read a data file into raw records (one dict per row), with exact problems.

Supported: ``.jsonl``, ``.json`` (an array of objects, an object of equal-length
columns, or JSON Lines saved as ``.json``), ``.csv``, ``.tsv``, ``.parquet``.
Nothing here interprets the columns; that is ``data_formats``' job. What a read
produces (``LoadResult``, ``Issue``) is in ``finetune_core.data.records``.

Row numbers are 1-based: the line number for JSON Lines, the position of the
object for JSON arrays, the data row (header not counted) for CSV/TSV/Parquet.

The deployment's limits (`finetune_core.limits`: rows, columns, JSON depth,
characters per cell) are checked while reading, before a small compressed or
deeply nested file can expand in memory: Parquet's row and column counts come
from its footer, JSON Lines and CSV stop at the row limit. A cell over a limit
or holding a broken character makes its row a bad row (named row and column);
messages never hold the server's path.

    python -c "from finetune_core.data.load import load_records; print(load_records('f.csv').columns)"
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from finetune_core.data.cells import BROKEN_TEXT, has_broken_text, printable, too_deep
from finetune_core.data.records import Issue, LoadResult

EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
UTF8_BOM = b"\xef\xbb\xbf"
CSV_FIELD_CAP = 2**31 - 1
EMPTY = "the file is empty: it needs at least one example"
NOT_AN_OBJECT = 'an object with named fields, like {"prompt": ..., "completion": ...}'
PARQUET_BATCH_ROWS = 256  # rows decoded at a time: each batch is measured before it becomes Python objects
# An absolute path: starts the text or follows a space, quote or bracket (so "bytes/value" is left alone).
_ABS_PATH = re.compile(r"""(?<![^\s'"(\[=])(?:[A-Za-z]:)?[\\/](?:[^\s'"\\/]+[\\/])+[^\s'"():,;]*""")


def without_paths(exc: BaseException, path: Path) -> str:
    """An exception's first line with any server path replaced by 'the file'."""
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    for form in sorted({str(path), str(path.absolute()), str(path.resolve())}, key=len, reverse=True):
        text = text.replace(form, "the file")
    return _ABS_PATH.sub("the file", text)


def load_records(path: str | os.PathLike, max_file_mb: float = 100.0) -> LoadResult:
    """Read ``path``; never raises for bad content (problems become issues)."""
    result = LoadResult()
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in EXTENSIONS:
        return result.fail(f"unsupported file type {suffix or '(none)'!r}; use one of {', '.join(EXTENSIONS)}")
    try:
        size = p.stat().st_size
    except OSError as exc:
        return result.fail(f"cannot read the file: {exc.strerror or without_paths(exc, p)}")
    # Checked before reading so an oversized upload never reaches memory.
    limit = int(max_file_mb * 1024 * 1024)
    if size > limit:
        return result.fail(f"the file is {_human_size(size)}, over the {max_file_mb:g} MB limit")
    if size == 0:
        return result.fail(EMPTY)
    if suffix == ".parquet":
        _read_parquet(p, result)
    else:
        try:
            data = p.read_bytes()
        except OSError as exc:
            return result.fail(f"cannot read the file: {exc.strerror or without_paths(exc, p)}")
        text = decode_utf8(data, result)
        del data  # only the text is needed from here: free the bytes before parsing
        if text is None:
            return result
        if not text.strip():
            return result.fail(EMPTY.replace("empty", "empty (only spaces and blank lines)", 1))
        reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".tsv": _read_tsv}[suffix]
        reader(text, result)
    if not result.fatal:
        result.columns = _column_union(result.records) if not result.columns else result.columns
        if not result.within("data_columns", len(result.columns), "the number of columns"):
            return result
        if result.total_rows == 0:
            result.fail("the file holds no examples: it needs at least one")
    return result


def decode_utf8(data: bytes, result: LoadResult) -> str | None:
    """UTF-8 (optionally with a BOM) or a file-level issue naming the first bad byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        result.fail(
            f"not UTF-8: the file starts with the UTF-16 byte-order mark 0x{data[0]:02x} 0x{data[1]:02x} "
            "at offset 0; save the file as UTF-8"
        )
        return None
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        result.fail(f"not UTF-8: byte 0x{data[offset]:02x} at offset {offset}; save the file as UTF-8")
        return None
    # NUL is valid UTF-8 but never appears in text: it means UTF-16 without a BOM, or a binary file.
    nul = text.find("\x00")
    if nul >= 0:
        offset = start + len(text[:nul].encode("utf-8"))
        result.fail(f"not UTF-8 text: NUL byte 0x00 at offset {offset} (UTF-16 or binary?); save the file as UTF-8")
        return None
    return text


def _read_jsonl(text: str, result: LoadResult) -> None:
    # split("\n"), not splitlines(): JSON strings may legally hold U+2028 and friends.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if not result.count_row():
            return
        try:
            value = json.loads(line)
        except RecursionError:  # far past json_depth: the decoder itself gave up
            result.issues.append(Issue(number, None, f"line {number} is {too_deep(result.limits)}"))
            continue
        except ValueError as exc:
            result.issues.append(Issue(number, None, f"invalid JSON on line {number}: {_json_error(exc)}"))
            continue
        if not isinstance(value, dict):
            result.issues.append(Issue(number, None,
                                       f"line {number} is {_json_kind(value)}, not an example ({NOT_AN_OBJECT})"))
            continue
        result.add(number, value, source=line)


def _read_json(text: str, result: LoadResult) -> None:
    try:
        value = json.loads(text)
    except RecursionError:  # far past json_depth: the decoder itself gave up
        result.fail(f"the JSON is {too_deep(result.limits)}")
        return
    except json.JSONDecodeError as exc:
        # A .json file that is really JSON Lines fails with "Extra data" after the first object.
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(text, result)
        result.fail(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
        return
    except ValueError as exc:  # e.g. an integer over Python's digit limit
        result.fail(f"invalid JSON: {_json_error(exc)}")
        return
    if isinstance(value, dict):
        value = _rows_from_object(value, result)
        if value is None:
            return
    if not isinstance(value, list):
        result.fail(f"the file holds {_json_kind(value)}, not a list of examples ({NOT_AN_OBJECT}) "
                    "or an object of columns")
        return
    if not result.within("data_rows", len(value), "the number of rows"):
        return
    for number, item in enumerate(value, start=1):
        result.count_row()
        if isinstance(item, dict):
            result.add(number, item)
        else:
            result.issues.append(Issue(number, None,
                                       f"row {number} is {_json_kind(item)}, not an example ({NOT_AN_OBJECT})"))


def _rows_from_object(value: dict, result: LoadResult) -> list | None:
    """An object of columns ``{"a": [..], "b": [..]}``, or one key wrapping the row list."""
    if len(value) == 1:
        only = next(iter(value.values()))
        if isinstance(only, list) and only and all(isinstance(x, dict) for x in only):
            return only
    if value and all(isinstance(v, list) for v in value.values()):
        if not result.within("data_columns", len(value), "the number of columns"):
            return None
        broken = next((k for k in value if has_broken_text(k)), None)
        if broken is not None:
            result.fail(f"the column name {printable(broken)!r} {BROKEN_TEXT}")
            return None
        lengths = {k: len(v) for k, v in value.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            result.fail(f"the JSON object of columns has columns of different lengths ({detail})")
            return None
        if not result.within("data_rows", max(lengths.values()), "the number of rows"):
            return None
        keys = list(value)
        result.columns = keys
        return [{k: value[k][i] for k in keys} for i in range(len(value[keys[0]]))]
    result.fail("the JSON object is neither columns (each a list of values) nor an object holding one list of examples")
    return None


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (column {exc.colno})"
    return str(exc).split(";")[0]


def _lift_csv_cap() -> None:
    # The csv module's own cap (131,072 characters, process-wide) would stop the
    # whole file at one long cell with a message naming neither row nor column.
    # The file size limit already bounds a cell, so lift the cap (the same value
    # for every caller, so threads cannot disagree) and let cell_chars decide per row.
    if csv.field_size_limit() < CSV_FIELD_CAP:
        csv.field_size_limit(CSV_FIELD_CAP)


def _read_csv(text: str, result: LoadResult, delimiter: str = ",") -> None:
    _lift_csv_cap()
    # newline="" keeps \r\n inside quoted cells exactly as written.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        result.fail(EMPTY)
        return
    except csv.Error as exc:
        result.fail(f"cannot parse the header: {exc}")
        return
    if not result.within("data_columns", len(header), "the number of columns"):
        return  # checked before the header is cleaned: that is quadratic in the number of names
    columns = _clean_header(header)
    result.columns = columns
    number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # A broken quote makes the rest of the file unreadable: stop with a named line.
            result.fail(f"cannot parse the file near line {reader.line_num}: {exc}")
            return
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        number += 1
        if not result.count_row():
            return
        if len(cells) != len(columns):
            result.issues.append(Issue(
                number, None,
                f"row {number} (line {reader.line_num}) has {len(cells)} cells but the header has {len(columns)}",
            ))
            continue
        result.add(number, dict(zip(columns, cells)))
    if number == 0:
        result.fail(f"the file has a header ({', '.join(columns)}) but no data rows")


def _read_tsv(text: str, result: LoadResult) -> None:
    _read_csv(text, result, delimiter="\t")


def _clean_header(header: list[str]) -> list[str]:
    """Blank names become column_N and repeats get a suffix, so every cell has a key."""
    out: list[str] = []
    for i, name in enumerate(header, start=1):
        name = name.strip() or f"column_{i}"
        base, n = name, 1
        while name in out:
            n += 1
            name = f"{base}_{n}"
        out.append(name)
    return out


def _read_parquet(path: Path, result: LoadResult) -> None:
    """Rows, columns and size are checked from the footer before anything is decoded
    (a few KB of Parquet can hold a million rows, or one huge value repeated)."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as footer:
            schema, meta = footer.schema_arrow, footer.metadata
        if not _parquet_within(meta, schema.names, result):
            return
        result.columns = list(schema.names)
        # Text columns are read dictionary-encoded: a value repeated in every row is
        # held once, so a batch can be measured before it becomes Python strings.
        text = [f.name for f in schema if _is_text(f.type)]
        with pq.ParquetFile(path, read_dictionary=text) as parquet:
            _parquet_rows(parquet, result)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file or page
        result.fail(f"cannot read the Parquet file: {without_paths(exc, path)}")


def _parquet_within(meta, names: list[str], result: LoadResult) -> bool:
    # num_columns counts nested fields too: that is what decoding costs.
    stored = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return (result.within("data_rows", meta.num_rows, "the number of rows")
            and result.within("data_columns", max(len(names), meta.num_columns), "the number of columns")
            and result.within("data_bytes", stored, "the size of the file's data once decompressed (bytes)"))


def _parquet_rows(parquet, result: LoadResult) -> None:
    number, decoded = 0, 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        decoded += _batch_bytes(batch)
        if not result.within("data_bytes", decoded, "the size of the file's data once decoded (bytes, so far)"):
            return
        for record in batch.to_pylist():
            number += 1
            if not result.count_row():
                return
            result.add(number, record)


def _is_text(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) or \
        pa.types.is_large_binary(kind)


def _batch_bytes(batch) -> int:
    """Bytes the batch's values take once expanded (a dictionary column counts each row's value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type) and _is_text(column.type.value_type):
            lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
            total += pc.sum(lengths).as_py() or 0
        else:
            total += column.nbytes
    return total


def _column_union(records: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            seen.setdefault(str(key), None)
    return list(seen)


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _json_kind(value) -> str:
    """What a JSON value is, in plain words ("a list"), for messages about a value that is not an example."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a piece of text"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return "null (no value)" if value is None else f"a {type(value).__name__}"
