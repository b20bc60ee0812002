"""What reading a data file produces: raw records with their row numbers and columns
(``LoadResult``), and the problems found on the way (``Issue``, naming row and column).

``LoadResult`` also applies the deployment's limits (`finetune_core.limits`) as rows
arrive: the readers in ``finetune_core.data.load`` fill it, a row with a cell over a
limit or holding broken text becomes an issue instead of a record.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from finetune_core.data.cells import json_text_within, record_problem
from finetune_core.limits import LimitError, Limits, limits


@dataclass
class Issue:
    """One problem found in a data file; ``row`` is None for file-level problems.

    Rows are numbered from 1, so row 0 names no row: it is read as file-wide too
    (``file_wide``), and every place that shows an issue treats both alike.
    """

    row: int | None  # 1-based row or line number
    column: str | None
    message: str

    @property
    def file_wide(self) -> bool:
        """True for a problem of the whole file (or mapping) rather than of one row."""
        return not self.row

    @property
    def place(self) -> str:
        """Where the problem is: "row 57", "row 57, column 'text'", "the file" or "column 'label'"."""
        if self.file_wide:
            return f"column {self.column!r}" if self.column else "the file"
        return f"row {self.row}, column {self.column!r}" if self.column else f"row {self.row}"

    def text(self) -> str:
        """The issue as one line, "row 57, column 'text': message": the one way an issue becomes text. A
        problem of the whole file is its message alone when that names the column (or there is none)."""
        if self.file_wide and (not self.column or repr(self.column) in self.message):
            return self.message
        return f"{self.place}: {self.message}"

    def to_dict(self) -> dict:
        """The issue as a JSON-ready dict: row, column, message."""
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
    limits: Limits = field(default_factory=limits, repr=False)  # read once per file

    def fail(self, message: str, column: str | None = None) -> "LoadResult":
        """Record a file-level problem and mark the file unusable; returns self, so a reader can return it."""
        self.issues.append(Issue(None, column, message))
        self.fatal = True
        return self

    def within(self, name: str, value: int, what: str) -> bool:
        """True when ``value`` is within the limit ``name``; else the file is refused, naming ``what``."""
        try:
            self.limits.check(name, value, what)
        except LimitError as exc:
            self.fail(str(exc).rstrip("."))
            return False
        return True

    def count_row(self) -> bool:
        """Count one more row; False (the file refused) past the row limit, so a reader stops there."""
        if self.total_rows >= self.limits.data_rows:
            self.fail(f"the file has more than {self.limits.data_rows:,} rows, this server's limit "
                      f"(setting {self.limits.setting('data_rows')})")
            return False
        self.total_rows += 1
        return True

    def add(self, number: int, record: dict, source: str | None = None) -> None:
        """Keep a row, or record why it cannot be used (a cell over a limit, broken text).

        ``source`` is the row's JSON text when there is one: when it is short, has
        few brackets and no surrogate escape, no cell can break a limit, and the
        per-cell checks (which would double the load time) are skipped.
        """
        if source is not None and json_text_within(source, self.limits):
            problem = None
        else:
            problem = record_problem(record, self.limits)
        if problem is not None:
            self.issues.append(Issue(number, *problem))
            return
        self.records.append(record)
        self.row_numbers.append(number)
