"""One streaming pass over an uploaded file: parse, detect the format, validate,
convert, optionally normalize, gather statistics and write canonical records.

`scan_file` is the single code path behind `data validate`, `data import`, the
upload API and the bundled sample, so what validates is what gets imported.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from lastedocation.datasets.formats import FormatSpec, convert, detect_format
from lastedocation.datasets.normalize import (
    NormalizationEffect,
    PersianNormalizer,
    normalize_record,
)
from lastedocation.datasets.reader import (
    FileFormat,
    Item,
    Problem,
    Record,
    guess_file_format,
    read_records,
)
from lastedocation.datasets.stats import StatsAccumulator
from lastedocation.errors import InvalidInput

_DETECT_SAMPLE = 50
# A character takes up to 6 bytes in JSON (a \uXXXX escape); the rest of a row (keys,
# other fields) gets the same again, and at least 1 MiB when records are short. Longer
# lines and JSON rows are refused unread, which bounds the memory a row can take.
_BYTES_PER_RECORD_CHAR = 12
_MIN_LINE_BYTES = 1024 * 1024
# Offsets of every Nth canonical row, so a preview page seeks instead of scanning.
INDEX_EVERY = 500


@dataclass(frozen=True)
class ScanOptions:
    file_format: FileFormat | None = None
    spec: FormatSpec | None = None
    normalize: bool = False
    max_record_chars: int = 200_000
    max_errors_shown: int = 20


@dataclass
class Report:
    """The validation report: the first problems in full, and counts of all of them."""

    max_shown: int
    rows_seen: int = 0
    rows_valid: int = 0
    rows_invalid: int = 0
    problems_total: int = 0
    problems: list[Problem] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    empty_answers: int = 0
    fatal: str | None = None
    # worth a look, but they leave the row valid and the report ok
    warnings_total: int = 0
    warnings: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.problems_total += 1
        self.by_kind[problem.kind] += 1
        if len(self.problems) < self.max_shown:
            self.problems.append(problem)
        if problem.fatal:
            self.fatal = problem.message

    def warn(self, warning: Problem) -> None:
        self.warnings_total += 1
        if len(self.warnings) < self.max_shown:
            self.warnings.append(warning)

    @property
    def ok(self) -> bool:
        return self.problems_total == 0 and self.rows_valid > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows_seen": self.rows_seen,
            "rows_valid": self.rows_valid,
            "rows_invalid": self.rows_invalid,
            "problems_total": self.problems_total,
            "problems_shown": len(self.problems),
            "problems_by_kind": dict(self.by_kind),
            "empty_answers": self.empty_answers,
            "fatal": self.fatal,
            "problems": [p.to_dict() for p in self.problems],
            "warnings_total": self.warnings_total,
            "warnings": [w.to_dict() for w in self.warnings],
        }


@dataclass
class ScanResult:
    file_format: FileFormat
    spec: FormatSpec | None
    report: Report
    stats: dict[str, Any] | None
    normalization: dict[str, Any] | None
    sha256: str | None = None
    size_bytes: int = 0
    offsets: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "file_format": self.file_format,
            "data_format": self.spec.data_format if self.spec else None,
            "detection_reason": self.spec.reason if self.spec else None,
            "question_field": self.spec.question_field if self.spec else None,
            "answer_field": self.spec.answer_field if self.spec else None,
            "report": self.report.to_dict(),
        }


def scan_file(
    path: Path,
    *,
    filename: str,
    options: ScanOptions,
    out: IO[bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    max_rows: int | None = None,
) -> ScanResult:
    """Validate `path` in one pass; when `out` is given, write canonical records to it.
    With `max_rows`, stop after that many valid rows (the report covers what was read)."""
    file_format = options.file_format or _file_format(path, filename)
    items = read_records(
        path,
        file_format,
        progress=progress,
        max_field_chars=options.max_record_chars + 1,
        max_line_bytes=max(options.max_record_chars * _BYTES_PER_RECORD_CHAR, _MIN_LINE_BYTES),
    )
    report = Report(options.max_errors_shown)
    head = list(itertools.islice(items, _DETECT_SAMPLE))
    spec = options.spec or detect_format(i.data for i in head if isinstance(i, Record))
    if spec is None:
        for item in itertools.chain(head, items):
            report.rows_seen += isinstance(item, Record)
            if isinstance(item, Problem):
                report.add(item)
        if report.rows_seen:
            report.add(Problem(None, None, "unknown_format", _unknown_format_message(head)))
        elif not report.problems_total:
            report.add(Problem(None, None, "empty_file", "the file holds no rows"))
        return ScanResult(file_format, None, report, None, None)

    stats = StatsAccumulator(spec.content_fields)
    normalizer = PersianNormalizer() if options.normalize else None
    effect = NormalizationEffect()
    digest = hashlib.sha256()
    written = 0
    offsets: list[int] = []
    for item in _chain(head, items):
        if isinstance(item, Problem):
            report.rows_seen += item.row is not None
            report.rows_invalid += item.row is not None
            report.add(item)
            continue
        report.rows_seen += 1
        converted = convert(item.row, item.data, spec, options.max_record_chars)
        for warning in converted.warnings:
            report.warn(warning)
        if converted.problems:
            report.rows_invalid += 1
            for problem in converted.problems:
                report.add(problem)
                if problem.kind == "empty_field" and problem.field == spec.answer_label:
                    report.empty_answers += 1
            continue
        record = converted.record
        assert record is not None
        report.rows_valid += 1
        if normalizer is not None:
            record = normalize_record(record, normalizer, effect)
            converted.texts = _texts_of(record, converted.texts)
        stats.add(item.row, converted.texts)
        if out is not None:
            if (report.rows_valid - 1) % INDEX_EVERY == 0:
                offsets.append(written)
            line = orjson.dumps(record) + b"\n"
            out.write(line)
            digest.update(line)
            written += len(line)
        if max_rows is not None and report.rows_valid >= max_rows:
            break
    if report.rows_seen == 0 and report.problems_total == 0:
        report.add(Problem(None, None, "empty_file", "the file holds no rows"))
    return ScanResult(
        file_format,
        spec,
        report,
        stats.result(),
        effect.to_dict() if normalizer is not None else None,
        sha256=digest.hexdigest() if out is not None else None,
        size_bytes=written,
        offsets=offsets,
    )


def _chain(head: list[Item], rest: Iterator[Item]) -> Iterator[Item]:
    yield from head
    yield from rest


def _texts_of(record: dict[str, Any], before: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (field, text) pairs again, after normalization changed the texts."""
    if "text" in record:
        return [(before[0][0], record["text"])]
    if len(before) == len(record["messages"]):
        return [
            (name, message["content"])
            for (name, _), message in zip(before, record["messages"], strict=True)
        ]
    return before  # alpaca folds input into the prompt: keep the fields as written


def _file_format(path: Path, filename: str) -> FileFormat:
    with path.open("rb") as f:
        head = f.read(4096)
    guessed = guess_file_format(filename, head)
    if guessed is None:
        raise InvalidInput(
            f"cannot tell the file type of {filename!r}: use a .jsonl, .json, .csv or .txt "
            "name, or choose the file format explicitly",
            field="file_format",
        )
    return guessed


def _unknown_format_message(head: list[Item]) -> str:
    # a CSV header keeps invalid UTF-8 as surrogates: shown as "?" so the report can be sent
    keys = sorted(
        {
            str(k).encode(errors="replace").decode()
            for i in head
            if isinstance(i, Record) and isinstance(i.data, dict)
            for k in i.data
        }
    )
    seen = ", ".join(f"`{k}`" for k in keys[:12]) or "no fields"
    return (
        f"cannot tell the data format: the first rows have {seen}; expected question/answer "
        "fields, instruction/output (Alpaca), `messages`, `conversations` or `text`. "
        "Choose the format and field names explicitly."
    )
