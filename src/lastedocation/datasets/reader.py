"""Streaming readers: one record at a time from JSONL, JSON, CSV or plain text.

A reader never holds the whole file, nor more than one row of it: JSONL and
text are read line by line, a JSON document through ijson's event parser, CSV
through the csv module on a decoding wrapper. Every record or problem carries
the row it came from (a line number for JSONL/CSV/text, the item number in a
JSON array), so a report can name it. Invalid UTF-8 in CSV and text is decoded
with `surrogateescape` and reported per field by the validator instead of
aborting the whole file.

Hostile files are cut off before they cost memory or time: a JSONL or text
line, or a JSON row, longer than `max_line_bytes` is skipped and reported
(`too_long`); a row nested deeper than MAX_DEPTH levels likewise (`too_deep`),
a JSON row without ever being built. A single JSON value or a CSV row past the
limit ends the file (fatal): where the next row starts cannot be known. A
number too large for a double or a 64-bit integer is a problem (`bad_number`).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from lastedocation.datasets.json_rows import read_json
from lastedocation.datasets.rows import (
    BOM,
    MAX_DEPTH,
    Item,
    OverLimit,
    Problem,
    Progress,
    Record,
    every,
    too_deep,
    too_long,
)

__all__ = ["MAX_DEPTH", "Item", "Problem", "Progress", "Record", "read_records"]

FileFormat = Literal["jsonl", "json", "csv", "txt"]
FILE_FORMATS: tuple[FileFormat, ...] = ("jsonl", "json", "csv", "txt")
_EXTENSIONS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".txt": "txt",
    ".text": "txt",
}
# for callers without a record limit; the scan derives its own from max_record_chars
MAX_LINE_BYTES = 16 * 1024 * 1024
# the rest of an over-long line is skipped in pieces of this size
_SKIP_CHUNK = 1024 * 1024


def guess_file_format(filename: str, head: bytes) -> FileFormat | None:
    """The file format from the name's extension, else from the first bytes."""
    ext = Path(filename).suffix.lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    text = head.removeprefix(BOM).lstrip()
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        first_line = text.split(b"\n", 1)[0]
        try:
            orjson.loads(first_line)
        except orjson.JSONDecodeError:
            return "json"
        return "jsonl"
    return None


def read_records(
    path: Path,
    file_format: FileFormat,
    *,
    progress: Progress | None = None,
    max_field_chars: int = 10_000_000,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[Item]:
    """Yield every record (or row-level problem) of `path`, streaming. A line (or a
    JSON row) longer than `max_line_bytes` is reported, not read."""
    with path.open("rb") as raw:
        if file_format == "jsonl":
            yield from _read_jsonl(raw, progress, max_line_bytes)
        elif file_format == "json":
            yield from read_json(raw, progress, max_line_bytes)
        elif file_format == "csv":
            yield from _read_csv(raw, progress, max_field_chars, max_line_bytes)
        else:
            yield from _read_text(raw, progress, max_line_bytes)


def _lines(raw: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) for every line, the BOM removed; a line longer than `limit`
    bytes comes as None, and only `limit` bytes of it are ever held."""
    line_no = 0
    while line := raw.readline(limit + 1):
        line_no += 1
        if line_no == 1:
            line = line.removeprefix(BOM)
        if len(line) <= limit:
            yield line_no, line
            continue
        while line and not line.endswith(b"\n"):
            line = raw.readline(_SKIP_CHUNK)
        yield line_no, None


def _read_jsonl(raw: BinaryIO, progress: Progress | None, limit: int) -> Iterator[Item]:
    for line_no, line in _lines(raw, limit):
        every(progress, raw, line_no)
        if line is None:
            yield too_long(line_no, limit)
            continue
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield Problem(line_no, None, *_explain_bad_line(line, exc))
            continue
        # fewer brackets than the limit cannot nest deeper: skip the walk for most rows
        if line.count(b"[") + line.count(b"{") > MAX_DEPTH and _nests_deeper(data, MAX_DEPTH):
            yield too_deep(line_no)
            continue
        yield Record(line_no, data)
    if progress is not None:
        progress(raw.tell())


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether lists and objects in `value` nest more than `limit` levels (no recursion)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _explain_bad_line(line: bytes, exc: Exception) -> tuple[str, str]:
    if "depth limit exceeded" in str(exc):  # orjson's own limit, 1024 levels
        return "too_deep", f"the row is nested deeper than {MAX_DEPTH} levels"
    if "number is infinity" in str(exc):  # past a double, as 1e999 or 400 digits
        return "bad_number", f"a number is too large to read ({exc})"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return "bad_utf8", f"invalid UTF-8 at byte {bad.start + 1} of the line"
    if not line.endswith(b"\n"):
        return "truncated", f"the last line is cut short: not complete JSON ({exc})"
    return "bad_json", f"not valid JSON: {exc}"


class _CappedLines:
    """The lines of a CSV text stream for csv.reader, refusing a row (which may span
    lines in quoted fields) once it passes `limit` characters, before the csv module
    gathers it whole. `_csv_rows` starts each row's count afresh."""

    def __init__(self, text: io.TextIOWrapper, limit: int) -> None:
        self.text = text
        self.limit = limit
        self.row_chars = 0

    def __iter__(self) -> _CappedLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.row_chars += len(line)
        if self.row_chars > self.limit:
            raise OverLimit
        return line


def _read_csv(
    raw: BinaryIO, progress: Progress | None, max_field_chars: int, max_line_bytes: int
) -> Iterator[Item]:
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(min(sys.maxsize, max_field_chars))
    lines = _CappedLines(text, max_line_bytes)
    try:
        yield from _csv_rows(csv.reader(lines), lines, raw, progress, max_field_chars)
    finally:
        text.detach()  # the caller closes the file


def _csv_rows(
    reader: Any, lines: _CappedLines, raw: BinaryIO, progress: Progress | None, max_field_chars: int
) -> Iterator[Item]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield Problem(1, None, "bad_csv", f"the header row is not valid CSV: {exc}", True)
        return
    except OverLimit:
        yield _csv_too_long(1, lines.limit)
        return
    if header is None:
        return
    header = [name.strip() for name in header]
    previous_line = reader.line_num
    count = 0
    while True:
        start_line = previous_line + 1
        lines.row_chars = 0
        try:
            values = next(reader)
        except StopIteration:
            break
        except OverLimit:
            yield _csv_too_long(start_line, lines.limit)
            return
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                message = f"a field is longer than the limit of {max_field_chars:,} characters"
                yield Problem(start_line, None, "too_long", message, True)
            else:
                yield Problem(start_line, None, "bad_csv", f"not valid CSV: {exc}", True)
            return
        previous_line = reader.line_num
        count += 1
        if count % 2048 == 0 and progress is not None:
            progress(raw.tell())
        if not any(value.strip() for value in values):
            continue
        if len(values) != len(header):
            yield Problem(
                start_line,
                None,
                "bad_csv",
                f"the row has {len(values)} columns; the header has {len(header)}",
            )
            continue
        yield Record(start_line, dict(zip(header, values, strict=True)))
    if progress is not None:
        progress(raw.tell())


def _csv_too_long(row: int, limit: int) -> Problem:
    # fatal: where the next row starts is unknowable once a quoted field may be open
    message = f"the row is longer than the limit of {limit:,} characters"
    return Problem(row, None, "too_long", message, True)


def _read_text(raw: BinaryIO, progress: Progress | None, limit: int) -> Iterator[Item]:
    for line_no, line in _lines(raw, limit):
        every(progress, raw, line_no)
        if line is None:
            yield too_long(line_no, limit)
            continue
        text = line.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        if text.strip():
            yield Record(line_no, {"text": text})
    if progress is not None:
        progress(raw.tell())
