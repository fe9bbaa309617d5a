"""API shapes of the model registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lastedocation.datasets.schemas import RowId


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    source: Literal["run", "local", "hub", "upload", "bundled", "folder"]
    kind: Literal["text", "speech"] = "text"
    base_model: str | None
    run_id: int | None
    dataset_id: int | None
    owner_id: int | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    summary: dict[str, Any] = Field(description="Architecture, parameters, dtype, size, files.")
    created_at: datetime


class ModelDetail(ModelPublic):
    config: dict[str, Any]


class FolderRegister(BaseModel):
    path: str = Field(min_length=1, max_length=1024, description="A folder on the server.")
    name: str | None = Field(default=None, max_length=100)


class HubImport(BaseModel):
    repo_id: str = Field(min_length=3, max_length=200, description="e.g. owner/model-name")
    revision: str | None = Field(default=None, max_length=100)
    name: str | None = Field(default=None, max_length=100)


class ExportRequest(BaseModel):
    archive: Literal["zip", "tar.gz"] | None = Field(
        default="tar.gz", description="Also pack the export as a downloadable archive."
    )
    license: str | None = Field(default=None, max_length=50)


class HubPush(BaseModel):
    repo_id: str = Field(min_length=3, max_length=200)
    token: str = Field(min_length=1, max_length=500, description="A Hub token with write access.")
    private: bool = True


class EvaluationCreate(BaseModel):
    dataset_id: RowId = Field(description="Held-out rows to evaluate on.")
    max_rows: int = Field(default=50, ge=1, le=10_000)
    max_new_tokens: int = Field(default=64, ge=1, le=1024)


class EvaluationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model_id: int
    dataset_id: int | None
    state: Literal["queued", "running", "completed", "failed"]
    options: dict[str, Any]
    results: dict[str, Any] | None
    message: str | None
    created_at: datetime
    finished_at: datetime | None
