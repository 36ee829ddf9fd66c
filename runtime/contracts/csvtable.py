"""Strict CSV tables: a header of unique names and rows of exactly as many cells.

`csv.DictReader` keeps the last of two columns with the same name and files a row's extra cells
under a key of None, so values vanish without a word. Every table the product reads (worklists,
`diagnose --batch`) goes through here instead, and such a file is refused naming row and column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from runtime.contracts.errors import ConfigError, DataError
from runtime.contracts.safe_load import read_text_file

#: A table larger than this is not a worklist or a batch of patients.
MAX_TABLE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CsvTable:
    """Header names (stripped) and the rows as name -> cell text (stripped)."""

    columns: list[str]
    rows: list[dict[str, str]]


def read_csv_table(path: str | Path, text: str | None = None) -> CsvTable:
    """Read `path` (or parse `text`, naming `path` in errors); DataError for a missing or empty
    header, a blank or duplicated column name, or a row with more or fewer cells than the header.
    Blank lines are skipped; row numbers in messages are the file's line numbers."""
    path = Path(path)
    if text is None:
        text = read_text_bounded(path, "CSV")
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{path}: empty CSV (no header row)")
        columns = [h.strip() for h in header]
        for i, name in enumerate(columns):
            if not name:
                raise DataError(f"{path}: header column {i + 1} has no name")
            if name in columns[:i]:
                raise DataError(f"{path}: column {name!r} appears twice in the header "
                                f"(columns {columns.index(name) + 1} and {i + 1})")
        rows = []
        for cells in reader:
            if not cells or all(not c.strip() for c in cells) and len(cells) <= 1:
                continue
            if len(cells) != len(columns):
                extra = "more" if len(cells) > len(columns) else "fewer"
                raise DataError(f"{path}: line {reader.line_num} has {len(cells)} cells, {extra} than the "
                                f"{len(columns)} columns of the header")
            rows.append({name: cell.strip() for name, cell in zip(columns, cells)})
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV (line {reader.line_num}: {exc})") from None
    return CsvTable(columns, rows)


def read_text_bounded(path: Path, what: str) -> str:
    """A regular UTF-8 text file of at most MAX_TABLE_BYTES, read by the one bounded reader
    (runtime.contracts.safe_load); its problems are the data's (DataError), not configuration."""
    try:
        return read_text_file(path, f"{what} file", MAX_TABLE_BYTES)
    except ConfigError as exc:
        raise DataError(str(exc)) from None
