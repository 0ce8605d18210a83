"""Bulk camera import bodies (JSON array or CSV) turned into rows for CameraCreate.

Rows are numbered from 1 in the order they appear (the CSV header is not a row), and the
returned list keeps that order, so `rows[n - 1]` is row n in the caller's error messages.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

__all__ = ["BULK_MAX_ROWS", "CSV_COLUMNS", "BulkError", "parse_bulk_csv", "parse_bulk_json"]

BULK_MAX_ROWS = 5000
CSV_COLUMNS = (
    "id", "name", "node", "url", "substream_url", "enabled",
    "lat", "lon", "fps", "labels", "min_score", "motion_threshold",
)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_LABEL_SPLIT = re.compile(r"[;|]")


class BulkError(ValueError):
    """A bulk body that cannot be read as rows at all (not a problem with one row's values)."""

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(f"row {row}: {message}" if row is not None else message)
        self.row = row


def _text(data: str | bytes) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            # utf-8-sig: spreadsheets on Windows save CSV with a byte-order mark.
            return bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BulkError(f"body is not UTF-8 (byte {exc.start})") from None
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    raise BulkError("body must be text")


def _reject_constant(name: str) -> Any:
    raise BulkError(f"{name} is not a valid JSON number")


def parse_bulk_json(data: str | bytes | Any) -> list[dict[str, Any]]:
    """Rows of a JSON array of objects (body text, or the already-decoded value); raise BulkError otherwise."""
    if isinstance(data, (str, bytes, bytearray, memoryview)):
        text = _text(data)
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            # exc.msg and the position only: the document itself may hold passwords.
            raise BulkError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise BulkError("invalid JSON: nested too deeply") from None
        except BulkError:
            raise  # NaN or Infinity, refused by _reject_constant
        except ValueError:  # a number of more digits than Python converts (sys.get_int_max_str_digits)
            raise BulkError("invalid JSON: a number too long") from None
    else:
        value = data
    if not isinstance(value, list):
        raise BulkError("body must be a JSON array of camera objects")
    if len(value) > BULK_MAX_ROWS:
        raise BulkError(f"{len(value)} rows; at most {BULK_MAX_ROWS} per request")
    for i, row in enumerate(value, start=1):
        if not isinstance(row, dict):
            raise BulkError("must be a JSON object", row=i)
    return value


def _bool_cell(value: str) -> bool | str:
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return value  # left for CameraCreate to refuse with its own message and field path


def _number_cell(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _row_dict(cells: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    location: dict[str, Any] = {}
    analytics: dict[str, Any] = {}
    for column, value in cells.items():
        if column in ("id", "name", "node", "url", "substream_url"):
            row[column] = value
        elif column == "enabled":
            row["enabled"] = _bool_cell(value)
        elif column in ("lat", "lon"):
            location[column] = _number_cell(value)
        elif column in ("fps", "min_score", "motion_threshold"):
            analytics[column] = _number_cell(value)
        elif column == "labels":
            analytics["labels"] = [p.strip() for p in _LABEL_SPLIT.split(value) if p.strip()]
    if location:
        row["location"] = location
    if analytics:
        row["analytics"] = analytics
    return row


def parse_bulk_csv(text: str | bytes) -> list[dict[str, Any]]:
    """Rows of a CSV body with a header row; empty cells are omitted; raise BulkError if malformed."""
    body = _text(text)
    if "\x00" in body:
        # Usually a spreadsheet's binary format uploaded as CSV.
        raise BulkError("CSV body contains NUL characters; save the sheet as CSV (UTF-8)")
    reader = csv.reader(io.StringIO(body, newline=""), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            raise BulkError("CSV body is empty; expected a header row")
        columns = [c.strip().lower() for c in header]
        unknown = [c for c in columns if c not in CSV_COLUMNS]
        if unknown:
            raise BulkError(
                f"unknown column {unknown[0][:40]!r} in header; expected some of {', '.join(CSV_COLUMNS)}"
            )
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise BulkError(f"column {dupes[0]!r} appears twice in the header")
        rows: list[dict[str, Any]] = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # blank lines between rows are common in hand-edited files
            n = len(rows) + 1
            if len(rows) >= BULK_MAX_ROWS:
                raise BulkError(f"more than {BULK_MAX_ROWS} rows; at most {BULK_MAX_ROWS} per request")
            if len(cells) > len(columns):
                raise BulkError(f"{len(cells)} cells but the header has {len(columns)} columns", row=n)
            present = {col: cell.strip() for col, cell in zip(columns, cells) if cell.strip()}
            rows.append(_row_dict(present))
    except csv.Error as exc:
        raise BulkError(f"malformed CSV at line {reader.line_num}: {exc}") from None
    return rows
