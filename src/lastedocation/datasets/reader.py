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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import ijson
import orjson

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
_BOM = b"\xef\xbb\xbf"
# Keys tried first when a JSON document is an object that holds the rows.
_ARRAY_KEYS = ("data", "rows", "examples", "records", "items", "train", "conversations")
# Records of the supported formats nest 3 or 4 levels deep (a row, its `messages`
# list, a turn); anything far deeper is hostile, and parsers that build it cost
# memory (ijson's prefixes grow with the square of the depth).
MAX_DEPTH = 64
# for callers without a record limit; the scan derives its own from max_record_chars
MAX_LINE_BYTES = 16 * 1024 * 1024
# the rest of an over-long line is skipped in pieces of this size
_SKIP_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    row: int
    data: Any


@dataclass(frozen=True, slots=True)
class Problem:
    row: int | None
    field: str | None
    kind: str
    message: str
    fatal: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "kind": self.kind, "message": self.message}


Item = Record | Problem
Progress = Callable[[int], None]


def guess_file_format(filename: str, head: bytes) -> FileFormat | None:
    """The file format from the name's extension, else from the first bytes."""
    ext = Path(filename).suffix.lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    text = head.removeprefix(_BOM).lstrip()
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
            yield from _read_json(raw, progress, max_line_bytes)
        elif file_format == "csv":
            yield from _read_csv(raw, progress, max_field_chars, max_line_bytes)
        else:
            yield from _read_text(raw, progress, max_line_bytes)


def _every(progress: Progress | None, raw: BinaryIO, row: int) -> None:
    if progress is not None and row % 2048 == 0:
        progress(raw.tell())


def _lines(raw: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) for every line, the BOM removed; a line longer than `limit`
    bytes comes as None, and only `limit` bytes of it are ever held."""
    line_no = 0
    while line := raw.readline(limit + 1):
        line_no += 1
        if line_no == 1:
            line = line.removeprefix(_BOM)
        if len(line) <= limit:
            yield line_no, line
            continue
        while line and not line.endswith(b"\n"):
            line = raw.readline(_SKIP_CHUNK)
        yield line_no, None


def _too_long(row: int, limit: int) -> Problem:
    return Problem(row, None, "too_long", f"the line is longer than the limit of {limit:,} bytes")


def _too_deep(row: int) -> Problem:
    return Problem(row, None, "too_deep", f"the row is nested deeper than {MAX_DEPTH} levels")


def _read_jsonl(raw: BinaryIO, progress: Progress | None, limit: int) -> Iterator[Item]:
    for line_no, line in _lines(raw, limit):
        _every(progress, raw, line_no)
        if line is None:
            yield _too_long(line_no, limit)
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
            yield _too_deep(line_no)
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


class _OverLimit(Exception):
    """A JSON value or a CSV row passed the byte limit before it ended."""


_PARSE_ERRORS = (ijson.JSONError, UnicodeDecodeError, _OverLimit)
_STARTS = frozenset(("start_map", "start_array"))
_ENDS = frozenset(("end_map", "end_array"))


class _CountingReader:
    """The file as ijson reads it, counting bytes. yajl holds a string or a number
    whole until it ends, so a reader that got `limit` bytes with no event in between
    (`mark` is moved at every event) refuses to read on."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self.raw = raw
        self.limit = limit
        self.total = 0
        self.mark = 0

    def read(self, size: int = -1) -> bytes:
        if self.total - self.mark > self.limit:
            raise _OverLimit
        data = self.raw.read(size)
        self.total += len(data)
        return data


def _read_json(raw: BinaryIO, progress: Progress | None, limit: int) -> Iterator[Item]:
    if raw.read(3) != _BOM:
        raw.seek(0)
    start = raw.tell()
    head = raw.read(64).lstrip()
    raw.seek(start)
    key = None
    if head.startswith(b"{"):
        try:
            key = _find_array_key(_CountingReader(raw, limit))
        except _PARSE_ERRORS as exc:
            yield _json_failure(exc, 0, limit)
            return
        raw.seek(start)
        if key is None:
            yield Problem(None, None, "no_rows", "the JSON object holds no array of rows", True)
            return
    elif not head.startswith(b"["):
        yield Problem(None, None, "bad_json", "a JSON file must be an array or an object", True)
        return
    yield from _json_rows(raw, key, progress, limit)
    if progress is not None:
        progress(raw.tell())


def _json_rows(
    raw: BinaryIO, key: str | None, progress: Progress | None, limit: int
) -> Iterator[Item]:
    """The items of the top-level array (or of the array under `key` in the top-level
    object), each built from parser events by a _RowBuilder."""
    reader = _CountingReader(raw, limit)
    rows_level = 1 if key is None else 2  # how many containers are open around a row
    level = 0
    in_rows = False
    last_key: str | None = None
    row: _RowBuilder | None = None
    done = 0
    try:
        for event, value in ijson.basic_parse(reader, use_float=True):
            reader.mark = reader.total
            if row is None and in_rows and level == rows_level and event != "end_array":
                row = _RowBuilder(done + 1, reader.total)
            if row is not None:
                if reader.total - row.start > limit:
                    row.give_up("too_long")
                if row.feed(event, value):
                    done += 1
                    _every(progress, raw, done)
                    yield row.result(limit)
                    row = None
                continue
            if event == "map_key" and level == 1:
                last_key = value
            elif event in _STARTS:
                level += 1
                in_rows = event == "start_array" and level == rows_level and last_key == key
            elif event in _ENDS:
                level -= 1
                in_rows = False
    except _PARSE_ERRORS as exc:
        yield _json_failure(exc, done, limit)


class _RowBuilder:
    """One row built from parser events on an explicit stack (no recursion). Past
    MAX_DEPTH levels or the byte limit it drops what it built and only counts
    levels until the row ends."""

    def __init__(self, row: int, start: int) -> None:
        self.row = row
        self.start = start
        self.depth = 0
        self.stack: list[Any] = []  # the open lists and objects, innermost last
        self.keys: list[str | None] = []  # the key being filled in each (None: a list)
        self.value: Any = None
        self.problem: str | None = None

    def give_up(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem
            self.stack.clear()
            self.keys.clear()

    def feed(self, event: str, value: Any) -> bool:
        """Take one event; True when the row is complete. Keys and scalars, the most
        common events, are tested first."""
        if event == "map_key":
            if self.problem is None:
                self.keys[-1] = value
            return False
        if event in _STARTS:
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.give_up("too_deep")
            if self.problem is None:
                self.stack.append({} if event == "start_map" else [])
                self.keys.append("" if event == "start_map" else None)
            return False
        if event in _ENDS:
            self.depth -= 1
            if self.problem is not None:
                return self.depth == 0
            self.keys.pop()
            value = self.stack.pop()
        elif self.problem is not None:
            return self.depth == 0
        if not self.stack:
            self.value = value
            return True
        key = self.keys[-1]
        if key is None:
            self.stack[-1].append(value)
        else:
            self.stack[-1][key] = value
        return False

    def result(self, limit: int) -> Item:
        if self.problem == "too_deep":
            return _too_deep(self.row)
        if self.problem == "too_long":
            message = f"the row is longer than the limit of {limit:,} bytes"
            return Problem(self.row, None, "too_long", message)
        return Record(self.row, self.value)


def _json_failure(exc: Exception, done: int, limit: int) -> Problem:
    """The fatal problem when the parser stops after `done` complete items."""
    if isinstance(exc, _OverLimit):
        message = f"item {done + 1} holds a value longer than the limit of {limit:,} bytes"
        return Problem(done + 1, None, "too_long", message, True)
    return Problem(done + 1, None, *_explain_bad_json(exc, done), True)


def _explain_bad_json(exc: Exception, complete_items: int) -> tuple[str, str]:
    detail = exc.args[0] if exc.args and not isinstance(exc, UnicodeDecodeError) else str(exc)
    if isinstance(detail, bytes):  # yajl's message when the input around it is not UTF-8
        detail = detail.decode(errors="replace")
    text = str(detail).strip().split("\n", 1)[0]  # yajl adds the input around the error
    if isinstance(exc, UnicodeDecodeError) or "UTF8" in text or "utf-8" in text.lower():
        return "bad_utf8", f"invalid UTF-8 in item {complete_items + 1}"
    if "premature EOF" in text:
        return (
            "truncated",
            f"the JSON document ends early after {complete_items} complete items (cut short?)",
        )
    if "overflow" in text:
        return (
            "bad_number",
            f"item {complete_items + 1} holds a number too large to read ({text})",
        )
    return "bad_json", f"not valid JSON after {complete_items} complete items: {text}"


def _find_array_key(reader: _CountingReader) -> str | None:
    """The top-level key whose value is the array of rows (first preferred key, else
    first). Only the nesting level is counted, nothing is built."""
    found: list[str] = []
    level = 0
    last_key = ""
    try:
        for event, value in ijson.basic_parse(reader):
            reader.mark = reader.total
            if event == "map_key" and level == 1:
                last_key = value
            elif event in _STARTS:
                if event == "start_array" and level == 1:
                    if last_key in _ARRAY_KEYS:
                        return last_key
                    found.append(last_key)
                level += 1
            elif event in _ENDS:
                level -= 1
                if level == 0:
                    break
    except _PARSE_ERRORS:
        if not found:
            raise
        # a rows array came first: reading it names the problem at its row
    return found[0] if found else None


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
            raise _OverLimit
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
    except _OverLimit:
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
        except _OverLimit:
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
        _every(progress, raw, line_no)
        if line is None:
            yield _too_long(line_no, limit)
            continue
        text = line.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        if text.strip():
            yield Record(line_no, {"text": text})
    if progress is not None:
        progress(raw.tell())
