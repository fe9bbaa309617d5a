"""What the readers yield: records and row problems, and the limits they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

BOM = b"\xef\xbb\xbf"
# Records of the supported formats nest 3 or 4 levels deep (a row, its `messages`
# list, a turn); anything far deeper is hostile, and parsers that build it cost
# memory (ijson's prefixes grow with the square of the depth).
MAX_DEPTH = 64


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


def every(progress: Progress | None, raw: BinaryIO, row: int) -> None:
    if progress is not None and row % 2048 == 0:
        progress(raw.tell())


def too_long(row: int, limit: int) -> Problem:
    return Problem(row, None, "too_long", f"the line is longer than the limit of {limit:,} bytes")


def too_deep(row: int) -> Problem:
    return Problem(row, None, "too_deep", f"the row is nested deeper than {MAX_DEPTH} levels")


class OverLimit(Exception):
    """A JSON value or a CSV row passed the byte limit before it ended."""
