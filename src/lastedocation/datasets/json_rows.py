"""JSON documents read row by row from ijson's flat event stream: a row is built by
`_RowBuilder` with its own depth count, so a row nested past MAX_DEPTH or longer than
the limit is refused before it is built (ijson's own builders grow with the square of
the depth); a value past the limit stops the parser (`_CountingReader`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import ijson

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
)

# Keys tried first when a JSON document is an object that holds the rows.
_ARRAY_KEYS = ("data", "rows", "examples", "records", "items", "train", "conversations")


_PARSE_ERRORS = (ijson.JSONError, UnicodeDecodeError, OverLimit)
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
            raise OverLimit
        data = self.raw.read(size)
        self.total += len(data)
        return data


def read_json(raw: BinaryIO, progress: Progress | None, limit: int) -> Iterator[Item]:
    if raw.read(3) != BOM:
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
                    every(progress, raw, done)
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
            return too_deep(self.row)
        if self.problem == "too_long":
            message = f"the row is longer than the limit of {limit:,} bytes"
            return Problem(self.row, None, "too_long", message)
        return Record(self.row, self.value)


def _json_failure(exc: Exception, done: int, limit: int) -> Problem:
    """The fatal problem when the parser stops after `done` complete items."""
    if isinstance(exc, OverLimit):
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
