"""Dataset services: validate, import, list, get, preview, split, delete.

Imported datasets are immutable and stored once by content: the canonical
records live in DATA_DIR/datasets/<sha256>/, and several dataset rows (two
uploads of the same data) may point at one folder, which is removed with the
last of them. Speech datasets (kind "speech": audio clips with transcripts, imported
from an archive by `uploads.import_upload`, laid out as `speech.py` describes) live in
the same folders and follow the same rules; operations made for one kind refuse the
other (`require_kind`, 409).

Who sees what: a dataset belongs to the account that imported it. A member sees
their own and the shared ones (no owner: the bundled sample, command-line
imports); an admin sees all. Another member's dataset answers "not found", as if
it did not exist. Shared datasets are read-only for members: they can preview
and split them (a split is derived data; the records never change) but not
delete them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lastedocation import ownership
from lastedocation.auth.models import User
from lastedocation.datasets import speech
from lastedocation.datasets.models import Dataset, DatasetSplit, StudioFact
from lastedocation.datasets.scan import INDEX_EVERY, ScanOptions, ScanResult, scan_file
from lastedocation.datasets.split import split_records
from lastedocation.errors import Conflict, DatasetInvalid, InvalidInput, NotFound
from lastedocation.settings import Settings

MAX_PREVIEW_ROWS = 200
SAMPLE_FILE = "persian_qa.jsonl"


def safe_filename(filename: str) -> str:
    """The upload's file name, refused when it tries to name a path."""
    name = filename.strip()
    if not name:
        raise InvalidInput("the upload has no file name", field="file")
    if "/" in name or "\\" in name or name in {".", ".."} or "\x00" in name:
        raise InvalidInput(
            f"the file name {filename!r} contains a path; send a plain file name",
            field="file",
        )
    if len(name) > 255:
        raise InvalidInput("the file name is longer than 255 characters", field="file")
    return name


def validate_file(
    *,
    path: Path,
    filename: str,
    options: ScanOptions,
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    return scan_file(path, filename=filename, options=options, progress=progress)


def import_file(
    *,
    session: Session,
    settings: Settings,
    path: Path,
    filename: str,
    name: str | None = None,
    options: ScanOptions,
    drop_invalid: bool = False,
    owner_id: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Dataset, ScanResult]:
    """Validate and store a file as a new dataset of `owner_id` (None: shared); refuse
    it if it has problems (unless `drop_invalid`) or no usable row."""
    filename = safe_filename(filename)
    settings.ensure_dirs()
    staging = Path(tempfile.mkdtemp(prefix="import-", dir=settings.tmp_dir))
    try:
        with (staging / "records.jsonl").open("wb") as out:
            result = scan_file(path, filename=filename, options=options, out=out, progress=progress)
            out.flush()
            os.fsync(out.fileno())
        report = result.report
        if report.fatal or report.rows_valid == 0 or (report.problems_total and not drop_invalid):
            raise DatasetInvalid(_refusal(result, drop_invalid), **result.summary())
        assert result.sha256 is not None and result.spec is not None
        store(staging, settings.datasets_dir / result.sha256, result.offsets)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    dataset = Dataset(
        name=(name or Path(filename).stem)[:200],
        filename=filename,
        file_format=result.file_format,
        data_format=result.spec.data_format,
        detection_reason=result.spec.reason,
        question_field=result.spec.question_field if result.spec.data_format == "qa" else None,
        answer_field=result.spec.answer_field if result.spec.data_format == "qa" else None,
        sha256=result.sha256,
        size_bytes=result.size_bytes,
        upload_bytes=path.stat().st_size,
        rows=report.rows_valid,
        rows_dropped=report.rows_invalid,
        normalized=options.normalize,
        report=report.to_dict(),
        stats=result.stats or {},
        normalization=result.normalization,
        owner_id=owner_id,
    )
    session.add(dataset)
    session.commit()
    return dataset, result


def require_kind(dataset: Dataset, kind: str, operation: str) -> None:
    """Refuse (409) an operation made for the other kind of dataset, naming both."""
    if dataset.kind != kind:
        what = (
            "a speech dataset (audio with transcripts)"
            if dataset.kind == "speech"
            else "a text dataset"
        )
        raise Conflict(
            f"dataset {dataset.id} is {what}: {operation} needs a {kind} dataset",
            dataset_id=dataset.id,
            kind=dataset.kind,
        )


def _refusal(result: ScanResult, drop_invalid: bool) -> str:
    report = result.report
    if report.fatal:
        return f"the file cannot be read: {report.fatal}"
    if report.rows_valid == 0:
        first = report.problems[0].message if report.problems else "no rows"
        return f"no usable row in the file ({first})"
    return (
        f"{report.rows_invalid} of {report.rows_seen} rows have problems "
        f"({report.problems_total} in all); fix them, or import with drop_invalid to leave "
        "those rows out"
    )


def store(staging: Path, target: Path, offsets: list[int]) -> None:
    """Move a staged dataset into place atomically; identical content is kept once."""
    if target.exists():
        return
    with (staging / "offsets.json").open("wb") as f:
        f.write(orjson.dumps({"every": INDEX_EVERY, "offsets": offsets}))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():  # else: the same content was stored meanwhile
            raise
        return
    staging.mkdir()  # the caller removes it
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_leftovers(settings: Settings, *, older_than_s: float = 300) -> int:
    """Remove uploads and staging folders that a killed process left in DATA_DIR/tmp."""
    removed = 0
    cutoff = time.time() - older_than_s
    for entry in settings.tmp_dir.iterdir() if settings.tmp_dir.is_dir() else ():
        if entry.lstat().st_mtime < cutoff:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


def list_datasets(*, session: Session, user: User | None = None) -> list[Dataset]:
    """The datasets `user` may see (all of them for user None: the studio itself)."""
    query = select(Dataset).where(ownership.visible(user, "dataset", Dataset.owner_id))
    query = query.order_by(Dataset.id.desc())
    return list(session.scalars(query))


def get_dataset(
    *, session: Session, dataset_id: int, user: User | None = None, to_delete: bool = False
) -> Dataset:
    """The dataset, if `user` may see it (and delete it, with `to_delete`).

    user None is the studio itself (no ownership check); routes always pass the user."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id}", dataset_id=dataset_id)
    action: ownership.Action = "change" if to_delete else "see"
    ownership.check(user, "dataset", dataset_id, dataset.owner_id, action)
    return dataset


def records_path(settings: Settings, dataset: Dataset) -> Path:
    return settings.datasets_dir / dataset.sha256 / "records.jsonl"


def preview(
    *, settings: Settings, dataset: Dataset, offset: int = 0, limit: int = 20
) -> list[dict[str, Any]]:
    """Rows `offset`..`offset+limit` of the stored records (seeking, not scanning)."""
    if offset < 0:
        raise InvalidInput("offset must be 0 or more", field="offset")
    if not 1 <= limit <= MAX_PREVIEW_ROWS:
        raise InvalidInput(f"limit must be between 1 and {MAX_PREVIEW_ROWS}", field="limit")
    folder = settings.datasets_dir / dataset.sha256
    index = orjson.loads((folder / "offsets.json").read_bytes())
    block = offset // index["every"]
    if block >= len(index["offsets"]):
        return []
    rows: list[dict[str, Any]] = []
    with (folder / "records.jsonl").open("rb") as f:
        f.seek(index["offsets"][block])
        position = block * index["every"]
        for line in f:
            if position >= offset:
                rows.append(orjson.loads(line))
                if dataset.kind == "speech":  # its records have no row: number them from 1
                    rows[-1]["row"] = position + 1
                if len(rows) == limit:
                    break
            position += 1
    return rows


def audio_file(*, settings: Settings, dataset: Dataset, row: int) -> tuple[Path, str]:
    """The stored audio file of a speech dataset's row (from 1) and its media type."""
    require_kind(dataset, "speech", "audio")
    if not 1 <= row <= dataset.rows:
        raise NotFound(
            f"dataset {dataset.id} has {dataset.rows} rows; there is no row {row}",
            dataset_id=dataset.id,
            row=row,
        )
    (record,) = preview(settings=settings, dataset=dataset, offset=row - 1, limit=1)
    return speech.stored_audio(records_path(settings, dataset).parent, record)


def split_dataset(
    *,
    session: Session,
    settings: Settings,
    dataset: Dataset,
    key: str | None,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> DatasetSplit:
    require_kind(dataset, "text", "a train/validation split")
    fraction = round(validation_fraction, 6)
    folder = settings.datasets_dir / dataset.sha256 / "splits" / uuid.uuid4().hex
    result = split_records(
        records_path(settings, dataset),
        folder,
        key=key,
        validation_fraction=fraction,
        seed=seed,
    )
    split = DatasetSplit(
        dataset_id=dataset.id,
        key=key,
        seed=seed,
        validation_fraction=fraction,
        train_rows=result.train_rows,
        validation_rows=result.validation_rows,
        train_groups=result.train_groups,
        validation_groups=result.validation_groups,
        folder=str(folder.relative_to(settings.data_dir)),
    )
    session.add(split)
    session.commit()
    return split


def get_split(*, session: Session, dataset: Dataset, split_id: int) -> DatasetSplit:
    split = session.get(DatasetSplit, split_id)
    if split is None or split.dataset_id != dataset.id:
        raise NotFound(f"dataset {dataset.id} has no split {split_id}", split_id=split_id)
    return split


def delete_dataset(*, session: Session, settings: Settings, dataset: Dataset) -> None:
    """Delete the dataset's row, its splits, and its files unless another row shares them.
    Refused while a run that may still train (queued, active, paused, interrupted) reads it."""
    from lastedocation.runs.models import Run  # runs depend on datasets, not the reverse
    from lastedocation.runs.states import FINAL

    users = session.scalars(
        select(Run.id).where(Run.dataset_id == dataset.id, Run.state.not_in(FINAL))
    ).all()
    if users:
        listed = ", ".join(str(run_id) for run_id in users)
        raise Conflict(
            f"dataset {dataset.id} is used by run(s) {listed}, which may still train on it: "
            "stop or delete those runs first",
            dataset_id=dataset.id,
            runs=list(users),
        )
    sha = dataset.sha256
    split_folders = [settings.data_dir / s.folder for s in dataset.splits]
    session.delete(dataset)
    session.commit()
    others = session.scalar(select(func.count()).select_from(Dataset).where(Dataset.sha256 == sha))
    if not others:
        shutil.rmtree(settings.datasets_dir / sha, ignore_errors=True)
    else:
        for folder in split_folders:
            shutil.rmtree(folder, ignore_errors=True)


def import_sample_once(*, session: Session, settings: Settings) -> Dataset | None:
    """Import the bundled Persian sample on the studio's first start (never again)."""
    if session.get(StudioFact, "sample_imported") is not None:
        return None
    sample = resources.files("lastedocation") / "samples" / SAMPLE_FILE
    with resources.as_file(sample) as path:
        dataset, _ = import_file(
            session=session,
            settings=settings,
            path=path,
            filename=SAMPLE_FILE,
            name="نمونهٔ پرسش و پاسخ فارسی (sample)",
            options=ScanOptions(max_record_chars=settings.max_record_chars),
        )
    session.add(StudioFact(key="sample_imported", value=str(dataset.id)))
    session.commit()
    return dataset
