"""What the API takes and returns for datasets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from lastedocation.datasets.formats import DataFormat, FormatSpec
from lastedocation.datasets.reader import FileFormat
from lastedocation.datasets.scan import ScanOptions
from lastedocation.errors import InvalidInput
from lastedocation.settings import Settings


def _utc(value: datetime) -> datetime:
    # SQLite drops the zone of stored times: they are written in UTC
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

# The database stores 64-bit integers: a larger id, offset or seed is refused as
# input (422) instead of failing in the database driver.
MAX_DB_INT = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_DB_INT, description="An id (1 or more).")]


class ImportOptions(BaseModel):
    """How to read an upload. Leave the formats empty to detect them."""

    file_format: FileFormat | None = None
    data_format: DataFormat | None = None
    question_field: str | None = None
    answer_field: str | None = None
    text_field: str | None = None
    normalize: bool = False

    def scan_options(self, settings: Settings) -> ScanOptions:
        spec = None
        if self.data_format is not None:
            spec = FormatSpec(
                self.data_format,
                question_field=self.question_field or "question",
                answer_field=self.answer_field or "answer",
                text_field=self.text_field or "text",
            )
        elif self.question_field or self.answer_field:
            if not (self.question_field and self.answer_field):
                raise InvalidInput(
                    "give both question_field and answer_field, or neither",
                    field="question_field" if not self.question_field else "answer_field",
                )
            spec = FormatSpec(
                "qa", question_field=self.question_field, answer_field=self.answer_field
            )
        return ScanOptions(
            file_format=self.file_format,
            spec=spec,
            normalize=self.normalize,
            max_record_chars=settings.max_record_chars,
            max_errors_shown=settings.max_errors_shown,
        )


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str = Field(description='"text" or "speech" (audio clips with transcripts).')
    filename: str
    file_format: str
    data_format: str
    detection_reason: str
    question_field: str | None
    answer_field: str | None
    sha256: str
    size_bytes: int
    upload_bytes: int
    rows: int
    rows_dropped: int
    normalized: bool
    owner_id: int | None = Field(description="The account it belongs to; none: shared.")
    created_at: UtcDatetime


class DatasetImported(DatasetPublic):
    report: dict[str, Any]
    normalization: dict[str, Any] | None


class ValidationPublic(BaseModel):
    file_format: str
    data_format: str | None
    detection_reason: str | None
    question_field: str | None
    answer_field: str | None
    report: dict[str, Any]
    stats: dict[str, Any] | None
    normalization: dict[str, Any] | None


class PreviewPublic(BaseModel):
    dataset_id: int
    offset: int
    limit: int
    total: int
    rows: list[dict[str, Any]] = Field(
        description="The stored records. A speech dataset's also carry `row` (from 1) and "
        "`audio_url`, where that row's audio is served."
    )


class SplitCreate(BaseModel):
    key: str | None = Field(
        default=None, description="Field whose groups stay together (e.g. qid); none: by row."
    )
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = Field(default=0, ge=0, le=MAX_DB_INT)


class SplitPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: int
    key: str | None
    seed: int
    validation_fraction: float
    train_rows: int
    validation_rows: int
    train_groups: int
    validation_groups: int
    created_at: UtcDatetime
