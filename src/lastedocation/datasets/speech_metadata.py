"""The metadata file of a speech dataset archive (metadata.csv or metadata.jsonl),
read row by row: each row names an audio file (`file_name`, a path relative to the
metadata file) and its transcript (`transcription`, or `text` or `sentence`; the
first row decides which, and the dataset says which was used).

A row either becomes a `Candidate` (its file exists and is audio, its transcript is
Persian writing), or the list of its problems, each naming the row, the file and
what is wrong. The file is read through the text datasets' streaming reader with a
short line limit, so a hostile line costs at most `MAX_METADATA_LINE_BYTES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lastedocation.datasets.reader import FileFormat, read_records
from lastedocation.datasets.rows import Problem, Record
from lastedocation.datasets.scan import Report
from lastedocation.datasets.speech_archive import (
    AUDIO_EXTENSIONS,
    METADATA_NAMES,
    Members,
    extension,
    key,
)
from lastedocation.errors import InvalidInput
from lastedocation.models.archive import member_parts

TRANSCRIPT_COLUMNS = ("transcription", "text", "sentence")
MAX_METADATA_LINE_BYTES = 64 * 1024  # a 30 s clip's transcript is a few hundred characters
_EXTENSIONS = ", ".join(f".{e}" for e in sorted(AUDIO_EXTENSIONS))


@dataclass(frozen=True, slots=True)
class ClipProblem(Problem):
    """A problem of one row, with the audio file it names (as the metadata writes it)."""

    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**Problem.to_dict(self), "file": self.file}


@dataclass(frozen=True)
class Candidate:
    """A row whose file and transcript passed; its audio is checked next."""

    row: int
    name: str  # as the metadata writes it
    member: str  # its path in the archive
    disk: Path
    text: str


def find_metadata(members: Members, report: Report) -> str | None:
    """The archive's one metadata file (its path inside the archive), or None with a
    fatal problem in the report."""
    found = sorted(d for k, d in members.files.items() if k.rsplit("/", 1)[-1] in METADATA_NAMES)
    if len(found) == 1:
        return found[0]
    if found:
        listed = ", ".join(found[:5])
        message = f"the archive has {len(found)} metadata files ({listed}); keep exactly one"
    else:
        message = (
            "the archive has no metadata.csv or metadata.jsonl: add one with a `file_name` "
            "column (each audio file's path beside it) and a `transcription` column"
        )
    report.add(ClipProblem(None, None, "no_metadata", message, True))
    return None


@dataclass
class MetadataReader:
    """Reads the metadata file at `path` (inside the archive) of the extracted `root`."""

    root: Path
    members: Members
    path: str
    report: Report
    max_rows: int
    column: str | None = None
    named: dict[str, int] = field(default_factory=dict)  # each file named -> its first row

    @property
    def label(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def rows(self) -> Iterator[Candidate | list[ClipProblem]]:
        """Each row in order: a candidate clip, or the row's problems. A fatal problem
        (unreadable CSV, no `file_name` column, too many rows) goes to the report and
        ends the reading."""
        report = self.report
        fmt: FileFormat = "csv" if self.path.endswith(".csv") else "jsonl"
        items = read_records(
            self.root / self.path,
            fmt,
            max_field_chars=MAX_METADATA_LINE_BYTES,
            max_line_bytes=MAX_METADATA_LINE_BYTES,
        )
        for item in items:
            if report.rows_seen >= self.max_rows:
                fatal = (
                    f"{self.label} has more than {self.max_rows:,} rows "
                    "(LASTEDOCATION_MAX_SPEECH_FILES)"
                )
                report.add(ClipProblem(None, None, "too_many_rows", fatal, True))
                return
            if isinstance(item, Problem):
                report.rows_seen += item.row is not None
                message = f"{self.label}: {item.message}"
                problem = ClipProblem(item.row, item.field, item.kind, message, item.fatal)
                if item.row is None or item.fatal:
                    report.add(problem)
                    if item.fatal:
                        return
                    continue
                yield [problem]
                continue
            report.rows_seen += 1
            if self.column is None:
                self.column = self._transcript_column(item, fmt)
                if self.column is None:
                    return
            yield self._row(item, self.column)

    def _transcript_column(self, item: Record, fmt: FileFormat) -> str | None:
        keys = [str(k) for k in item.data] if isinstance(item.data, dict) else []
        column = next((c for c in TRANSCRIPT_COLUMNS if c in keys), None)
        if "file_name" in keys and column is not None:
            return column
        what = "column" if fmt == "csv" else "field"
        lacking = "`file_name`" if "file_name" not in keys else "transcript"
        has = ", ".join(f"`{k}`" for k in keys[:12]) or "none"
        message = (
            f"{self.label} has no {lacking} {what} (its {what}s: {has}); it needs `file_name` "
            "and one of " + ", ".join(f"`{c}`" for c in TRANSCRIPT_COLUMNS)
        )
        self.report.add(ClipProblem(item.row, None, "missing_column", message, True))
        return None

    def _row(self, item: Record, column: str) -> Candidate | list[ClipProblem]:
        row, data = item.row, item.data
        if not isinstance(data, dict):
            message = f"expected an object, got {type(data).__name__}"
            return [ClipProblem(row, None, "wrong_type", message)]
        name, text = data.get("file_name"), data.get(column)
        file = name if isinstance(name, str) else None
        problems: list[ClipProblem] = []

        def add(kind: str, message: str, at: str = "file_name") -> None:
            problems.append(ClipProblem(row, at, kind, message, file=file))

        disk: str | None = None
        if not isinstance(name, str) or not name.strip():
            add("missing_field", "the row names no audio file (`file_name` is empty or missing)")
        elif not _utf8(name):
            add("bad_utf8", "the file name holds invalid UTF-8")
        else:
            disk, problem = self._resolve(name, row)
            if problem is not None:
                add(*problem)
        if not isinstance(text, str):
            add("missing_field", f"the row has no transcript (`{column}`)", column)
        elif not _utf8(text):
            add("bad_utf8", f"the transcript of {name!r} holds invalid UTF-8", column)
        elif not text.strip():
            add("empty_transcript", f"the transcript of {name!r} is empty", column)
        elif (why := not_persian(text)) is not None:
            add("not_persian", f"the transcript of {name!r} is not Persian writing: {why}", column)
        if problems or disk is None or file is None or not isinstance(text, str):
            return problems
        return Candidate(row, file, disk, self.root / disk, text.strip())

    def _resolve(self, name: str, row: int) -> tuple[str | None, tuple[str, str] | None]:
        """The extracted file a row names (relative to the metadata file), or its problem
        as (kind, message)."""
        try:
            parts = member_parts(name)
        except InvalidInput as exc:
            return None, ("bad_file_name", f"{name!r} cannot be used: {exc.extra['rule']}")
        wanted = key("/".join((*self.path.split("/")[:-1], *parts)))
        if wanted in self.named:
            return None, (
                "duplicate_file",
                f"{name!r} is named twice (first in row {self.named[wanted]})",
            )
        self.named[wanted] = row
        if wanted in self.members.files and extension(wanted) in AUDIO_EXTENSIONS:
            return self.members.files[wanted], None
        if wanted in self.members.files or wanted in self.members.others:
            return None, ("not_audio", f"{name!r} is not an audio file: use {_EXTENSIONS}")
        return None, (
            "missing_file",
            f"{name!r} is named in {self.label} but is not in the archive",
        )

    def unlisted(self) -> Iterator[ClipProblem]:
        """A warning for every audio file of the archive that no row names."""
        for wanted in sorted(self.members.files):
            if wanted not in self.named and extension(wanted) in AUDIO_EXTENSIONS:
                name = self.members.files[wanted]
                message = (
                    f"{name!r} is in the archive but no row of {self.label} names it; left out"
                )
                yield ClipProblem(None, None, "unlisted_audio", message, file=name)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _persian_letter(ch: str) -> bool:
    code = ord(ch)
    return 0x0600 <= code <= 0x06FF or 0x0750 <= code <= 0x077F or 0xFB50 <= code <= 0xFEFF


def not_persian(text: str) -> str | None:
    """Why a transcript is not Persian writing (most of its letters in another script)."""
    letters = [ch for ch in text if ch.isalpha()]
    persian = sum(map(_persian_letter, letters))
    if not letters:  # a number said aloud may be written in digits alone
        if any(ch.isdigit() for ch in text):
            return None
        return "it has no letters; write what is said in Persian letters"
    if persian * 2 >= len(letters):
        return None
    return f"{len(letters) - persian} of its {len(letters)} letters are not Persian ({text[:40]!r})"
