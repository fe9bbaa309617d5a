"""Streaming readers: one record at a time from JSONL, JSON, CSV or plain text.

A reader never holds the whole file: JSONL and text are read line by line, a
JSON document through ijson's event parser, CSV through the csv module on a
decoding wrapper. Every record or problem carries the row it came from (a line
number for JSONL/CSV/text, the item number in a JSON array), so a report can
name it. Invalid UTF-8 is decoded with `surrogateescape` and reported per
field by the validator instead of aborting the whole file.
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
) -> Iterator[Item]:
    """Yield every record (or row-level problem) of `path`, streaming."""
    with path.open("rb") as raw:
        if file_format == "jsonl":
            yield from _read_jsonl(raw, progress)
        elif file_format == "json":
            yield from _read_json(raw, progress)
        elif file_format == "csv":
            yield from _read_csv(raw, progress, max_field_chars)
        else:
            yield from _read_text(raw, progress)


def _every(progress: Progress | None, raw: BinaryIO, row: int) -> None:
    if progress is not None and row % 2048 == 0:
        progress(raw.tell())


def _read_jsonl(raw: BinaryIO, progress: Progress | None) -> Iterator[Item]:
    line_no = 0
    for line_no, line in enumerate(raw, start=1):
        if line_no == 1:
            line = line.removeprefix(_BOM)
        _every(progress, raw, line_no)
        if not line.strip():
            continue
        try:
            yield Record(line_no, orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            yield Problem(line_no, None, *_explain_bad_line(line, exc))
    if progress is not None:
        progress(raw.tell())


def _explain_bad_line(line: bytes, exc: Exception) -> tuple[str, str]:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return "bad_utf8", f"invalid UTF-8 at byte {bad.start + 1} of the line"
    if not line.endswith(b"\n"):
        return "truncated", f"the last line is cut short: not complete JSON ({exc})"
    return "bad_json", f"not valid JSON: {exc}"


def _read_json(raw: BinaryIO, progress: Progress | None) -> Iterator[Item]:
    head = raw.read(64).removeprefix(_BOM).lstrip()
    raw.seek(0)
    if raw.read(3) != _BOM:
        raw.seek(0)
    start = raw.tell()
    if head.startswith(b"["):
        prefix = "item"
    elif head.startswith(b"{"):
        key = _find_array_key(raw)
        raw.seek(start)
        if key is None:
            yield Problem(None, None, "no_rows", "the JSON object holds no array of rows", True)
            return
        prefix = f"{key}.item"
    else:
        yield Problem(None, None, "bad_json", "a JSON file must be an array or an object", True)
        return
    count = 0
    try:
        for count, item in enumerate(ijson.items(raw, prefix, use_float=True), start=1):
            _every(progress, raw, count)
            yield Record(count, item)
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        yield Problem(count + 1, None, *_explain_bad_json(exc, count), True)
    if progress is not None:
        progress(raw.tell())


def _explain_bad_json(exc: Exception, complete_items: int) -> tuple[str, str]:
    text = str(exc)
    if isinstance(exc, UnicodeDecodeError) or "UTF8" in text or "utf-8" in text.lower():
        return "bad_utf8", f"invalid UTF-8 in item {complete_items + 1}"
    if "premature EOF" in text or "Incomplete" in type(exc).__name__:
        return (
            "truncated",
            f"the JSON document ends early after {complete_items} complete items (cut short?)",
        )
    return "bad_json", f"not valid JSON after {complete_items} complete items: {text.strip()}"


def _find_array_key(raw: BinaryIO) -> str | None:
    """The top-level key whose value is the array of rows (first preferred key, else first)."""
    found: list[str] = []
    try:
        for prefix, event, _ in ijson.parse(raw):
            if event == "start_array" and prefix and "." not in prefix:
                if prefix in _ARRAY_KEYS:
                    return str(prefix)
                found.append(prefix)
            if found and event == "end_map" and prefix == "":
                break
    except (ijson.JSONError, UnicodeDecodeError):
        pass
    return found[0] if found else None


def _read_csv(raw: BinaryIO, progress: Progress | None, max_field_chars: int) -> Iterator[Item]:
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(min(sys.maxsize, max_field_chars))
    try:
        yield from _csv_rows(csv.reader(text), raw, progress, max_field_chars)
    finally:
        text.detach()  # the caller closes the file


def _csv_rows(
    reader: Any, raw: BinaryIO, progress: Progress | None, max_field_chars: int
) -> Iterator[Item]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield Problem(1, None, "bad_csv", f"the header row is not valid CSV: {exc}", True)
        return
    if header is None:
        return
    header = [name.strip() for name in header]
    previous_line = reader.line_num
    count = 0
    while True:
        start_line = previous_line + 1
        try:
            values = next(reader)
        except StopIteration:
            break
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


def _read_text(raw: BinaryIO, progress: Progress | None) -> Iterator[Item]:
    for line_no, line in enumerate(raw, start=1):
        if line_no == 1:
            line = line.removeprefix(_BOM)
        _every(progress, raw, line_no)
        text = line.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        if text.strip():
            yield Record(line_no, {"text": text})
    if progress is not None:
        progress(raw.tell())
