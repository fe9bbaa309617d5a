"""Uploads to the datasets: an archive (by its content) becomes a speech dataset, any
other file a text dataset.

Both arrive at POST /api/v1/datasets under the text limit (`max_upload_mb`); speech
archives, whose audio barely compresses, may also go to POST /api/v1/datasets/speech
under their own larger limit (`max_speech_upload_mb`), which takes archives only. The
limit is applied while the body streams in, before its content is known, which is
why the larger one has its own route.

The speech path mirrors the text one (`service.import_file`): the archive is checked
into a staging folder under DATA_DIR/tmp, refused with every row's problem named (or
imported without the bad rows, with `drop_invalid`), moved into place by content
(`service.store`), and the staging folder is removed whatever happens.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from lastedocation.datasets import service, speech
from lastedocation.datasets.models import Dataset
from lastedocation.datasets.scan import ScanOptions, ScanResult
from lastedocation.datasets.speech import SpeechLimits, SpeechScan
from lastedocation.errors import DatasetInvalid, InvalidInput
from lastedocation.settings import MB, Settings


def import_upload(
    *,
    session: Session,
    settings: Settings,
    path: Path,
    filename: str,
    name: str | None = None,
    options: ScanOptions,
    drop_invalid: bool = False,
    owner_id: int | None = None,
    speech_only: bool = False,
) -> tuple[Dataset, ScanResult | SpeechScan]:
    """Import an upload: a speech dataset when it is an archive (by its content), else a
    text file (refused with `speech_only`)."""
    if not speech.is_archive(path):
        if speech_only:
            raise InvalidInput(
                f"{filename!r} is not a .zip, .tar or .tar.gz archive: this route takes speech "
                "dataset archives; send text datasets to POST /api/v1/datasets",
                field="file",
            )
        return service.import_file(
            session=session,
            settings=settings,
            path=path,
            filename=filename,
            name=name,
            options=options,
            drop_invalid=drop_invalid,
            owner_id=owner_id,
        )
    filename = service.safe_filename(filename)
    speech.check_options(options)
    settings.ensure_dirs()
    staging = Path(tempfile.mkdtemp(prefix="import-", dir=settings.tmp_dir))
    try:
        with (staging / "records.jsonl").open("wb") as out:
            result = speech.scan_archive(
                path,
                staging=staging,
                limits=SpeechLimits.of(settings),
                max_shown=options.max_errors_shown,
                out=out,
            )
            out.flush()
            os.fsync(out.fileno())
        report = result.report
        if report.fatal or report.rows_valid == 0 or (report.problems_total and not drop_invalid):
            raise DatasetInvalid(_speech_refusal(result, drop_invalid), **result.summary())
        assert result.sha256 is not None and result.reason is not None
        service.store(staging, settings.datasets_dir / result.sha256, result.offsets)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    dataset = Dataset(
        name=(name or filename.split(".", 1)[0] or filename)[:200],
        kind="speech",
        filename=filename,
        file_format=result.kind,
        data_format=speech.DATA_FORMAT,
        detection_reason=result.reason,
        question_field=None,
        answer_field=None,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        upload_bytes=path.stat().st_size,
        rows=report.rows_valid,
        rows_dropped=report.rows_invalid,
        normalized=False,
        report=report.to_dict(),
        stats=result.stats or {},
        normalization=None,
        owner_id=owner_id,
    )
    session.add(dataset)
    session.commit()
    return dataset, result


def validate_upload(
    *, settings: Settings, path: Path, filename: str, options: ScanOptions
) -> ScanResult | SpeechScan:
    """Check an upload without importing it (an archive: its clips are decoded too)."""
    if not speech.is_archive(path):
        return service.validate_file(
            path=path, filename=service.safe_filename(filename), options=options
        )
    service.safe_filename(filename)
    speech.check_options(options)
    settings.ensure_dirs()
    staging = Path(tempfile.mkdtemp(prefix="validate-", dir=settings.tmp_dir))
    try:
        limits = SpeechLimits.of(settings)
        return speech.scan_archive(
            path, staging=staging, limits=limits, max_shown=options.max_errors_shown, out=None
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def speech_upload_limit(settings: Settings) -> int:
    return settings.max_speech_upload_mb * MB


def _speech_refusal(result: SpeechScan, drop_invalid: bool) -> str:
    report = result.report
    if report.fatal:
        return f"the archive cannot be used: {report.fatal}"
    if report.rows_valid == 0:
        first = report.problems[0].message if report.problems else "no rows"
        return f"no usable row in the archive ({first})"
    return (
        f"{report.rows_invalid} of {report.rows_seen} rows of {result.metadata} have problems "
        f"({report.problems_total} in all); fix them, or import with drop_invalid to leave "
        "those rows out"
    )
