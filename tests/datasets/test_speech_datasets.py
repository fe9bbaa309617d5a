"""Speech datasets through the real services: archives of espeak-ng Persian clips are
checked, refused with every bad row named, imported into the layout Whisper
fine-tuning reads, and hostile archives are refused with nothing left behind."""

from __future__ import annotations

import io
import json
import tarfile
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from lastedocation.datasets import service, uploads
from lastedocation.datasets.scan import ScanOptions
from lastedocation.db import make_engine, migrate, session_factory
from lastedocation.errors import (
    Conflict,
    DatasetInvalid,
    InvalidInput,
    PayloadTooLarge,
    StudioError,
)
from lastedocation.settings import Settings
from lastedocation.speech.audio import encode
from tests.datasets.conftest import (
    Files,
    good_files,
    make_tar,
    make_zip,
    metadata_csv,
    metadata_jsonl,
)

Clips = list[tuple[bytes, str]]
OPTIONS = ScanOptions()


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings)
    migrate(engine)
    with session_factory(engine)() as db:
        yield db
    engine.dispose()


def _import(session: Session, settings: Settings, archive: Path, **kwargs: Any) -> Any:
    return uploads.import_upload(
        session=session,
        settings=settings,
        path=archive,
        filename=archive.name,
        options=OPTIONS,
        **kwargs,
    )


def _nothing_left(settings: Settings) -> None:
    """No staging folder or extracted file stays behind, and nothing was stored."""
    assert list(settings.tmp_dir.iterdir()) == []
    assert not settings.datasets_dir.exists() or list(settings.datasets_dir.iterdir()) == []


def _wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


def _tone(seconds: float, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return encode((amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000, "wav")


def test_a_good_archive_imports_in_the_layout_whisper_training_reads(
    session: Session, settings: Settings, speech_clips: Clips, tmp_path: Path
) -> None:
    archive = make_zip(tmp_path / "گفتار.zip", good_files(speech_clips))
    dataset, result = _import(session, settings, archive, name="گفتار آزمایشی")

    assert (dataset.kind, dataset.data_format, dataset.file_format) == (
        "speech",
        "audiofolder",
        "zip",
    )
    assert dataset.rows == 8 and dataset.rows_dropped == 0 and result.report.ok
    assert (
        "`transcription`" in dataset.detection_reason and "metadata.csv" in dataset.detection_reason
    )
    folder = service.records_path(settings, dataset).parent
    assert folder == settings.datasets_dir / dataset.sha256
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for n, (record, (data, text)) in enumerate(zip(records, speech_clips, strict=True), start=1):
        assert list(record) == ["audio", "text", "duration_s", "sample_rate", "file_name"]
        assert record["audio"] == f"audio/{n:06d}.wav" and record["text"] == text
        assert record["file_name"] == f"clips/{n - 1:02d}.wav" and record["sample_rate"] == 22050
        assert (folder / record["audio"]).read_bytes() == data  # the original bytes, not re-encoded
        assert abs(record["duration_s"] - _wav_seconds(data)) < 0.002
    assert sorted(p.name for p in folder.iterdir()) == ["audio", "offsets.json", "records.jsonl"]

    stats = dataset.stats
    total = sum(r["duration_s"] for r in records)
    assert stats["total_seconds"] == pytest.approx(total, abs=5e-4)  # to the millisecond
    assert stats["hours"] == round(total / 3600, 4) and stats["rows"] == 8
    assert abs(total - sum(_wav_seconds(d) for d, _ in speech_clips)) < 0.01
    durations = stats["duration_s"]
    assert durations["min"] <= durations["median"] <= durations["p95"] <= durations["max"]
    assert sum(b["count"] for b in durations["histogram"]) == 8
    assert sum(b["count"] for b in stats["chars_per_second"]["histogram"]) == 8
    assert stats["sample_rates"] == {"22050": 8} and stats["channels"] == {"1": 8}
    assert stats["codecs"] == {"pcm_s16le": 8}
    assert stats["characters"] == sum(len(t) for _, t in speech_clips)
    assert stats["script_mix"]["share_of_letters"]["persian"] > 0.99
    assert list(settings.tmp_dir.iterdir()) == []

    # the same clips again share the folder; text-only operations refuse it by name
    again, _ = _import(
        session, settings, make_tar(tmp_path / "again.tar.gz", good_files(speech_clips))
    )
    assert again.sha256 == dataset.sha256 and again.file_format == "tar.gz"
    with pytest.raises(
        Conflict, match=r"is a speech dataset .*: a train/validation split needs a text"
    ):
        service.split_dataset(session=session, settings=settings, dataset=dataset, key=None)
    rows = service.preview(settings=settings, dataset=dataset, offset=6, limit=5)
    assert [r["row"] for r in rows] == [7, 8]
    path, media_type = service.audio_file(settings=settings, dataset=dataset, row=8)
    assert media_type == "audio/wav" and path.read_bytes() == speech_clips[7][0]


def test_each_bad_row_is_named_and_drop_invalid_keeps_the_good_ones(
    session: Session, settings: Settings, speech_clips: Clips, tmp_path: Path
) -> None:
    rows = [("good1.wav", speech_clips[0][1]), ("broken.wav", "این پرونده خراب است"),
            ("absent.wav", "این پرونده نیست"), ("mute.wav", ""), ("good2.wav", speech_clips[1][1])]  # fmt: skip
    files = {"good1.wav": speech_clips[0][0], "broken.wav": b"RIFF not really a wave file" * 10,
             "mute.wav": speech_clips[2][0], "good2.wav": speech_clips[1][0],
             "metadata.csv": metadata_csv(rows)}  # fmt: skip
    archive = make_zip(tmp_path / "mixed.zip", files)
    with pytest.raises(DatasetInvalid) as refused:
        _import(session, settings, archive)
    assert refused.value.status_code == 422
    assert "3 of 5 rows of metadata.csv have problems" in refused.value.detail
    problems = {p["file"]: p for p in refused.value.extra["report"]["problems"]}
    assert (
        problems["broken.wav"]["kind"] == "audio_undecodable" and problems["broken.wav"]["row"] == 3
    )
    assert "'broken.wav' could not be decoded as audio" in problems["broken.wav"]["message"]
    assert problems["absent.wav"]["kind"] == "missing_file"
    assert (
        problems["absent.wav"]["message"]
        == "'absent.wav' is named in metadata.csv but is not in the archive"
    )
    assert problems["mute.wav"]["kind"] == "empty_transcript"
    assert problems["mute.wav"]["field"] == "transcription"
    _nothing_left(settings)

    dataset, result = _import(session, settings, archive, drop_invalid=True)
    assert dataset.rows == 2 and dataset.rows_dropped == 3
    assert result.report.problems_total == 3 and dataset.report["problems_by_kind"] == {
        "audio_undecodable": 1, "missing_file": 1, "empty_transcript": 1}  # fmt: skip
    records = service.preview(settings=settings, dataset=dataset, offset=0, limit=10)
    assert [r["file_name"] for r in records] == ["good1.wav", "good2.wav"]
    assert list(settings.tmp_dir.iterdir()) == []


def test_audio_and_transcript_rules(
    session: Session, settings: Settings, speech_clips: Clips, tmp_path: Path
) -> None:
    """Silent, too short, too long, Latin script, the same file twice, the same audio under
    two names, a file that is not audio, an escaping name; unlisted audio is a warning."""
    clip, text = speech_clips[3]
    rows = [("a.wav", text), ("quiet.wav", "سکوت"), ("short.wav", "کوتاه"), ("long.wav", "بلند"),
            ("latin.wav", "this is English, not Persian"), ("a.wav", text), ("copy.wav", text),
            ("notes.txt", "یادداشت"), ("../escape.wav", "فرار"), ("tone.opus", "صدای بوق"),
            ("year.wav", "۱۴۰۲"), ("dots.wav", "…؟")]  # fmt: skip
    files = {"a.wav": clip, "quiet.wav": encode(np.zeros(16_000, np.float32), 16_000, "wav"),
             "short.wav": _tone(0.2), "long.wav": _tone(31.0), "latin.wav": speech_clips[4][0],
             "copy.wav": clip, "year.wav": speech_clips[5][0], "dots.wav": speech_clips[6][0], "notes.txt": "نه صدا".encode(), "extra/unlisted.mp3": b"x",
             "tone.opus": encode(np.sin(np.arange(16_000) / 8).astype(np.float32) * 0.3, 16_000, "opus"),
             "metadata.csv": metadata_csv(rows)}  # fmt: skip
    archive = make_zip(tmp_path / "rules.zip", files)
    dataset, _ = _import(session, settings, archive, drop_invalid=True)
    by_row = {p["row"]: (p["kind"], p["message"]) for p in dataset.report["problems"]}
    assert by_row[3][0] == "audio_silent" and "'quiet.wav' is silent" in by_row[3][1]
    assert by_row[4][0] == "audio_too_short" and "shorter than the minimum of 0.3 s" in by_row[4][1]
    assert (
        by_row[5][0] == "audio_too_long"
        and "'long.wav' is longer than the limit of 30 s" in by_row[5][1]
    )
    assert by_row[6][0] == "not_persian" and "are not Persian" in by_row[6][1]
    assert by_row[7] == ("duplicate_file", "'a.wav' is named twice (first in row 2)")
    assert by_row[8] == ("duplicate_audio", "'copy.wav' holds the same audio as 'a.wav' (row 2)")
    assert by_row[9][0] == "not_audio" and "'notes.txt' is not an audio file" in by_row[9][1]
    assert by_row[10][0] == "bad_file_name" and "`..`" in by_row[10][1]
    assert by_row[13] == (
        "not_persian",
        "the transcript of 'dots.wav' is not Persian writing: it has no letters; write what is said in Persian letters",
    )
    assert dataset.rows == 3 and dataset.rows_dropped == 9  # digits alone are a transcript
    assert dataset.stats["codecs"] == {"pcm_s16le": 2, "opus": 1}
    assert dataset.stats["sample_rates"] == {"22050": 2, "48000": 1}
    (warning,) = dataset.report["warnings"]
    assert warning["kind"] == "unlisted_audio" and warning["file"] == "extra/unlisted.mp3"
    records = service.preview(settings=settings, dataset=dataset, offset=0, limit=5)
    assert [r["audio"] for r in records] == [
        "audio/000001.wav",
        "audio/000002.opus",
        "audio/000003.wav",
    ]
    assert records[2]["text"] == "۱۴۰۲"


@pytest.mark.parametrize("column", ["text", "sentence"])
def test_jsonl_metadata_in_a_subfolder_with_another_transcript_column(
    session: Session, settings: Settings, speech_clips: Clips, tmp_path: Path, column: str
) -> None:
    inner = good_files(speech_clips[:3], jsonl=True, column=column)
    files = {
        f"corpus/{name}": data for name, data in inner.items()
    }  # paths relative to the metadata
    dataset, result = _import(session, settings, make_tar(tmp_path / "c.tar", files, gz=False))
    assert dataset.rows == 3 and dataset.file_format == "tar"
    assert result.column == column and f"`{column}`" in dataset.detection_reason
    assert "metadata.jsonl" in dataset.detection_reason
    first = service.preview(settings=settings, dataset=dataset, offset=0, limit=1)[0]
    assert first["file_name"] == "corpus/clips/00.wav" and first["text"] == speech_clips[0][1]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.wav": b"x"}, "the archive has no metadata.csv or metadata.jsonl"),
        (
            {"a/metadata.csv": b"file_name,text\n", "b/metadata.jsonl": b""},
            "the archive has 2 metadata files",
        ),
        (
            {"metadata.csv": b"path,transcription\na.wav,x\n"},
            "metadata.csv has no `file_name` column (its columns: `path`, `transcription`)",
        ),
        (
            {"metadata.csv": b"file_name\na.wav\n"},
            "metadata.csv has no transcript column (its columns: `file_name`)",
        ),
        (
            {
                "metadata.jsonl": b'{"file_name": "a.wav", "text": "'
                + "ب".encode() * 40_000
                + b'"}\n'
            },
            "metadata.jsonl: the line is longer than the limit of 65,536 bytes",
        ),
        (
            {"metadata.csv": b'file_name,text\na.wav,"' + b"b" * 70_000 + b'"\n'},
            "metadata.csv: the row is longer than the limit",
        ),
        ({"metadata.csv": b"file_name,text\n"}, "metadata.csv holds no rows"),
    ],
)
def test_unusable_metadata_is_refused_with_the_reason(
    session: Session, settings: Settings, tmp_path: Path, files: Files, message: str
) -> None:
    with pytest.raises(DatasetInvalid) as refused:
        _import(session, settings, make_zip(tmp_path / "m.zip", files))
    assert message in refused.value.detail
    _nothing_left(settings)


def _tar_with_long_pax_header(folder: Path) -> Path:
    path = folder / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("a.wav")
        info.pax_headers = {"comment": "x" * 100_000}
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    return path


def _zip_with_symlink(folder: Path) -> Path:
    path = folder / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link.wav")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    return path


HOSTILE = {
    "traversal": (
        lambda p: make_zip(p / "t.zip", {"../x.wav": b"x", "metadata.csv": b""}),
        InvalidInput,
        "`..` path components are not allowed",
    ),
    "absolute": (
        lambda p: make_tar(p / "a.tar.gz", {"/etc/x.wav": b"x"}),
        InvalidInput,
        "absolute paths are not allowed",
    ),
    "zip symlink": (_zip_with_symlink, InvalidInput, "symlinks are not allowed"),
    "tar symlink": (
        lambda p: make_tar(
            p / "s.tar.gz", {}, links={"clip.wav": (tarfile.SYMTYPE, "/etc/passwd")}
        ),
        InvalidInput,
        "symlinks are not allowed (it points to /etc/passwd)",
    ),
    "hard link": (
        lambda p: make_tar(
            p / "h.tar", {"a.wav": b"x"}, gz=False, links={"b.wav": (tarfile.LNKTYPE, "a.wav")}
        ),
        InvalidInput,
        "hard links are not allowed",
    ),
    "bomb": (
        lambda p: make_zip(p / "b.zip", {"big.wav": bytes(8 << 20), "metadata.csv": b""}),
        PayloadTooLarge,
        "expands the archive more than 20 times its size (a zip bomb?)",
    ),
    "too many files (zip)": (
        lambda p: make_zip(p / "n.zip", {f"{i}.wav": b"x" for i in range(7)}),
        PayloadTooLarge,
        "more than 6 members",
    ),
    "too many files (tar)": (
        lambda p: make_tar(p / "n.tar.gz", {f"{i}.wav": b"x" for i in range(7)}),
        PayloadTooLarge,
        "more than 6 members",
    ),
    "huge pax header": (_tar_with_long_pax_header, InvalidInput, "its extended header is"),
    "damaged": (
        lambda p: (p / "d.zip").write_bytes(b"PK\x03\x04" + b"\0" * 100) and p / "d.zip",
        InvalidInput,
        "is damaged",
    ),
    "duplicate member": (
        lambda p: make_tar(p / "d.tar", {"a.wav": b"1", "./a.wav": b"2"}, gz=False),
        InvalidInput,
        "it appears twice",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archives_are_refused_cleanly(
    session: Session, settings: Settings, tmp_path: Path, case: str
) -> None:
    build, error, message = HOSTILE[case]
    strict = settings.model_copy(update={"max_speech_files": 6})
    archive = build(tmp_path)
    with pytest.raises(StudioError) as refused:
        _import(session, strict, archive)
    assert type(refused.value) is error and message in refused.value.detail, refused.value.detail
    assert refused.value.status_code in (400, 413)
    _nothing_left(strict)


def test_the_extracted_size_is_capped(session: Session, settings: Settings, tmp_path: Path) -> None:
    small = settings.model_copy(update={"max_speech_extracted_mb": 1})
    noise = np.random.default_rng(0).bytes(3 << 19)  # 1.5 MiB that does not compress
    with pytest.raises(PayloadTooLarge, match="LASTEDOCATION_MAX_SPEECH_EXTRACTED_MB"):
        _import(session, small, make_zip(tmp_path / "big.zip", {"noise.wav": noise}))
    _nothing_left(small)


def test_text_options_and_validation_without_import(
    session: Session, settings: Settings, speech_clips: Clips, tmp_path: Path
) -> None:
    archive = make_zip(tmp_path / "v.zip", good_files(speech_clips[:2], jsonl=True))
    with pytest.raises(InvalidInput, match="`normalize` applies to text datasets only") as refused:
        uploads.import_upload(session=session, settings=settings, path=archive, filename="v.zip",
                              options=ScanOptions(normalize=True))  # fmt: skip
    assert refused.value.status_code == 400
    result = uploads.validate_upload(
        settings=settings, path=archive, filename="v.zip", options=OPTIONS
    )
    assert result.report.ok and result.stats is not None and result.stats["rows"] == 2
    _nothing_left(settings)
    assert metadata_jsonl([("a", "b")]).endswith(b"\n")
