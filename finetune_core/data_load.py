"""Read a data file into raw records (one dict per row), with exact problems.

Supported: ``.jsonl``, ``.json`` (an array of objects, an object of equal-length
columns, or JSON Lines saved as ``.json``), ``.csv``, ``.tsv``, ``.parquet``.
Nothing here interprets the columns; that is ``data_formats``' job.

Row numbers are 1-based: the line number for JSON Lines, the position of the
object for JSON arrays, the data row (header not counted) for CSV/TSV/Parquet.

    python -c "from finetune_core.data_load import load_records; print(load_records('f.csv').columns)"
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class Issue:
    """One problem found in a data file; ``row`` is None for file-level problems."""

    row: int | None  # 1-based row or line number
    column: str | None
    message: str

    def to_dict(self) -> dict:
        return {"row": self.row, "column": self.column, "message": self.message}


@dataclass
class LoadResult:
    """Raw records plus where each came from; ``fatal`` means nothing can be used."""

    records: list[dict] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)  # parallel to records
    columns: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    total_rows: int = 0
    fatal: bool = False

    def fail(self, message: str, column: str | None = None) -> "LoadResult":
        self.issues.append(Issue(None, column, message))
        self.fatal = True
        return self

    def add(self, number: int, record: dict) -> None:
        self.records.append(record)
        self.row_numbers.append(number)


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
        return result.fail(f"cannot read the file: {exc.strerror or exc}")
    # Checked before reading so an oversized upload never reaches memory.
    limit = int(max_file_mb * 1024 * 1024)
    if size > limit:
        return result.fail(f"the file is {_human_size(size)}, over the {max_file_mb:g} MB limit")
    if size == 0:
        return result.fail("the file is empty")
    if suffix == ".parquet":
        _read_parquet(p, result)
    else:
        text = decode_utf8(p.read_bytes(), result)
        if text is None:
            return result
        if not text.strip():
            return result.fail("the file is empty (only whitespace)")
        reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".tsv": _read_tsv}[suffix]
        reader(text, result)
    if not result.fatal:
        result.columns = _column_union(result.records) if not result.columns else result.columns
        if result.total_rows == 0:
            result.fail("the file holds no rows")
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
        result.total_rows += 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            result.issues.append(Issue(number, None, f"invalid JSON on line {number}: {exc.msg} (column {exc.colno})"))
            continue
        if not isinstance(value, dict):
            result.issues.append(Issue(number, None, f"line {number} is a JSON {_json_kind(value)}, not an object"))
            continue
        result.add(number, value)


def _read_json(text: str, result: LoadResult) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        # A .json file that is really JSON Lines fails with "Extra data" after the first object.
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _read_jsonl(text, result)
        result.fail(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
        return
    if isinstance(value, dict):
        value = _rows_from_object(value, result)
        if value is None:
            return
    if not isinstance(value, list):
        result.fail(f"the JSON holds a {_json_kind(value)}; expected an array of objects or an object of columns")
        return
    for number, item in enumerate(value, start=1):
        result.total_rows += 1
        if isinstance(item, dict):
            result.add(number, item)
        else:
            result.issues.append(Issue(number, None, f"row {number} is a JSON {_json_kind(item)}, not an object"))


def _rows_from_object(value: dict, result: LoadResult) -> list | None:
    """An object of columns ``{"a": [..], "b": [..]}``, or one key wrapping the row list."""
    if len(value) == 1:
        only = next(iter(value.values()))
        if isinstance(only, list) and only and all(isinstance(x, dict) for x in only):
            return only
    if value and all(isinstance(v, list) for v in value.values()):
        lengths = {k: len(v) for k, v in value.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            result.fail(f"the JSON object of columns has columns of different lengths ({detail})")
            return None
        keys = list(value)
        result.columns = keys
        return [{k: value[k][i] for k in keys} for i in range(len(value[keys[0]]))]
    result.fail("the JSON object is neither an object of columns (each a list) nor a wrapper of a row list")
    return None


def _read_csv(text: str, result: LoadResult, delimiter: str = ",") -> None:
    # newline="" keeps \r\n inside quoted cells exactly as written.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        result.fail("the file is empty")
        return
    except csv.Error as exc:
        result.fail(f"cannot parse the header: {exc}")
        return
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
        result.total_rows += 1
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
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        result.fail(f"cannot read the Parquet file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return
    result.columns = list(table.column_names)
    for number, record in enumerate(table.to_pylist(), start=1):
        result.total_rows += 1
        result.add(number, record)


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
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__
