"""Speech datasets: an `audiofolder` archive (.zip, .tar, .tar.gz holding audio files
and one metadata.csv or metadata.jsonl that names each file and its transcript),
checked row by row and stored as Whisper fine-tuning reads it.

The stored form is a contract with the Whisper trainer (`records_path(settings,
dataset).parent`, the same folder as a text dataset's):

    DATA_DIR/datasets/<sha256>/
        records.jsonl   one line per good row, in the metadata's order:
                        {"audio": "audio/000001.wav", "text": "<transcript>",
                         "duration_s": 1.234, "sample_rate": 22050,
                         "file_name": "<its name in the archive>"}
        offsets.json    where every 500th line starts (the preview seeks)
        audio/000001.wav, ...   each file's original bytes under a safe name

<sha256> covers the records and the bytes of every audio file, so the same clips
uploaded twice share a folder and different clips never do.

Every row's problems name the row, the file and the problem: a name that escapes
the archive, a file that is missing or not audio, a file named twice, an empty
transcript or one not in Persian script, audio that cannot be decoded or is empty,
silent, too short or too long (`speech.audio.decode`, bounded by the longest clip
allowed), and the same audio under two names. Audio files no row names are a
warning. Clips are decoded in a small pool of worker threads (the caller already
runs off the event loop).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from lastedocation.datasets import speech_archive
from lastedocation.datasets.scan import INDEX_EVERY, Report, ScanOptions
from lastedocation.datasets.speech_archive import ArchiveLimits
from lastedocation.datasets.speech_metadata import (
    Candidate,
    ClipProblem,
    MetadataReader,
    find_metadata,
)
from lastedocation.datasets.speech_stats import SpeechStats
from lastedocation.errors import AudioInvalid, InvalidInput
from lastedocation.models.archive import archive_kind
from lastedocation.settings import MB, Settings
from lastedocation.speech.audio import decode

DATA_FORMAT = "audiofolder"
MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "oga": "audio/ogg",
               "opus": "audio/ogg", "webm": "audio/webm", "m4a": "audio/mp4",
               "flac": "audio/flac"}  # fmt: skip
_STORED_NAME = re.compile(r"^audio/[0-9]{6,}\.([a-z0-9]{2,4})$")


@dataclass(frozen=True)
class SpeechLimits:
    archive: ArchiveLimits
    min_clip_s: float
    max_clip_s: float
    workers: int = 2

    @classmethod
    def of(cls, settings: Settings) -> SpeechLimits:
        archive = ArchiveLimits(
            max_files=settings.max_speech_files,
            max_total_bytes=settings.max_speech_extracted_mb * MB,
            max_ratio=settings.max_archive_ratio,
        )
        workers = max(1, min(4, os.cpu_count() or 1))
        return cls(archive, settings.min_speech_clip_s, settings.max_speech_clip_s, workers)


@dataclass
class SpeechScan:
    kind: str
    report: Report
    metadata: str | None = None
    column: str | None = None
    stats: dict[str, Any] | None = None
    sha256: str | None = None
    size_bytes: int = 0
    offsets: list[int] = field(default_factory=list)
    normalization: None = None  # transcripts are stored as written

    @property
    def reason(self) -> str | None:
        if self.metadata is None or self.column is None:
            return None
        return (
            f"{self.metadata} names each audio file in `file_name` and its transcript in "
            f"`{self.column}`"
        )

    def summary(self) -> dict[str, Any]:
        """The same keys as a text file's scan summary, so both answer alike."""
        return {
            "file_format": self.kind,
            "data_format": DATA_FORMAT,
            "detection_reason": self.reason,
            "question_field": None,
            "answer_field": None,
            "metadata_file": self.metadata,
            "transcript_column": self.column,
            "report": self.report.to_dict(),
        }


@dataclass(frozen=True)
class _Clip:
    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    audio_digest: bytes
    file_sha256: bytes


def is_archive(path: Path) -> bool:
    """Whether the upload is a .zip, .tar or .tar.gz (by its content, not its name)."""
    try:
        archive_kind(path)
    except InvalidInput:
        return False
    return True


def check_options(options: ScanOptions) -> None:
    """Refuse the options that only make sense for a text file."""
    for name, given in (
        ("file_format", options.file_format is not None),
        ("data_format", options.spec is not None),
        ("normalize", options.normalize),
    ):
        if given:
            raise InvalidInput(
                f"the upload is a speech dataset archive: `{name}` applies to text datasets "
                "only; leave it out (transcripts are stored as written)",
                field=name,
            )


def stored_audio(folder: Path, record: dict[str, Any]) -> tuple[Path, str]:
    """The file of a stored record and its media type (the name is ours; checked anyway)."""
    match = _STORED_NAME.match(str(record.get("audio", "")))
    if match is None or match.group(1) not in MEDIA_TYPES:
        raise InvalidInput(f"the stored record names no audio file: {record.get('audio')!r}")
    return folder / record["audio"], MEDIA_TYPES[match.group(1)]


def scan_archive(
    path: Path, *, staging: Path, limits: SpeechLimits, max_shown: int, out: IO[bytes] | None
) -> SpeechScan:
    """Check the archive at `path`; with `out`, write records.jsonl to it and move the good
    clips to `staging/audio/`. The extracted files go to `staging/.extract` (removed here)."""
    extracted = staging / ".extract"
    try:
        members = speech_archive.extract(path, extracted, limits=limits.archive)
        result = SpeechScan(members.kind, Report(max_shown))
        found = find_metadata(members, result.report)
        if found is None:
            return result
        metadata = MetadataReader(
            extracted, members, found, result.report, max_rows=limits.archive.max_files
        )
        result.metadata = metadata.label
        entries = list(metadata.rows())
        result.column = metadata.column
        if result.report.fatal is None:
            _check_audio(entries, staging, limits, result, out)
            for warning in metadata.unlisted():
                result.report.warn(warning)
        if result.report.rows_seen == 0 and result.report.problems_total == 0:
            message = f"{metadata.label} holds no rows"
            result.report.add(ClipProblem(None, None, "empty_file", message))
        return result
    finally:
        shutil.rmtree(extracted, ignore_errors=True)


def _probe(candidate: Candidate, limits: SpeechLimits) -> _Clip | AudioInvalid:
    """Decode one clip (in a worker thread) and fingerprint it; its problem, if any."""
    try:
        audio = decode(
            candidate.disk,
            max_seconds=limits.max_clip_s,
            min_seconds=limits.min_clip_s,
            name=repr(candidate.name),
        )
    except AudioInvalid as exc:
        return exc
    except Exception as exc:  # a hostile file may trip the decoder in ways of its own
        return AudioInvalid(
            f"{candidate.name!r} could not be decoded as audio ({type(exc).__name__})",
            problem="undecodable",
        )
    file_hash = hashlib.sha256()
    with candidate.disk.open("rb") as f:
        while chunk := f.read(1 << 20):
            file_hash.update(chunk)
    return _Clip(
        duration_s=round(audio.duration_s, 3),
        sample_rate=audio.source_rate,
        channels=audio.source_channels,
        codec=audio.codec,
        audio_digest=hashlib.blake2b(audio.samples.tobytes(), digest_size=16).digest(),
        file_sha256=file_hash.digest(),
    )


def _check_audio(
    entries: list[Candidate | list[ClipProblem]],
    staging: Path,
    limits: SpeechLimits,
    result: SpeechScan,
    out: IO[bytes] | None,
) -> None:
    report, stats = result.report, SpeechStats()
    candidates = [e for e in entries if isinstance(e, Candidate)]
    digest, written = hashlib.sha256(), 0
    first_of: dict[bytes, tuple[int, str]] = {}  # audio digest -> (row, name)
    (staging / "audio").mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="speech-decode") as pool:
        clips = pool.map(lambda c: _probe(c, limits), candidates)
        for entry in entries:
            if not isinstance(entry, Candidate):
                report.rows_invalid += 1
                for problem in entry:
                    report.add(problem)
                continue
            clip, row, name = next(clips), entry.row, entry.name
            if isinstance(clip, AudioInvalid):
                problem = ClipProblem(
                    row, "file_name", f"audio_{clip.problem}", clip.detail, file=name
                )
            elif clip.audio_digest in first_of:
                same_row, same = first_of[clip.audio_digest]
                message = f"{name!r} holds the same audio as {same!r} (row {same_row})"
                problem = ClipProblem(row, "file_name", "duplicate_audio", message, file=name)
            else:
                first_of[clip.audio_digest] = (row, name)
                report.rows_valid += 1
                stats.add(
                    row, entry.text, clip.duration_s, clip.sample_rate, clip.channels, clip.codec
                )
                if out is None:
                    continue
                stored = f"audio/{report.rows_valid:06d}.{speech_archive.extension(name)}"
                os.replace(entry.disk, staging / stored)
                record = {"audio": stored, "text": entry.text, "duration_s": clip.duration_s,
                          "sample_rate": clip.sample_rate, "file_name": entry.member}  # fmt: skip
                if (report.rows_valid - 1) % INDEX_EVERY == 0:
                    result.offsets.append(written)
                line = orjson.dumps(record) + b"\n"
                out.write(line)
                digest.update(line + clip.file_sha256)
                written += len(line)
                result.size_bytes += len(line) + (staging / stored).stat().st_size
                continue
            report.rows_invalid += 1
            report.add(problem)
    result.stats = stats.result()
    result.sha256 = digest.hexdigest() if out is not None else None
