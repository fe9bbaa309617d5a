"""What the API takes and returns for runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from lastedocation.datasets.schemas import RowId, UtcDatetime
from lastedocation.runs.states import allowed_actions


class RunCreate(BaseModel):
    """A run config (see the README) without `data.train`: the dataset gives it."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: RowId
    name: str = Field(default="run", max_length=200)
    task: Literal["text", "speech"] = Field(
        default="text", description="speech: fine-tune Whisper on a speech dataset."
    )
    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    lora: dict[str, Any] = Field(default_factory=dict)
    speech: dict[str, Any] = Field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "data": self.data,
            "model": self.model,
            "training": self.training,
            "lora": self.lora,
            **({"speech": self.speech} if self.task == "speech" or self.speech else {}),
        }


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    state: str
    dataset_id: int | None
    step: int
    total_steps: int | None
    message: str | None
    exit_code: int | None
    config: dict[str, Any]
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def allowed_actions(self) -> list[str]:
        return allowed_actions(self.state)


class RunCreated(RunPublic):
    preflight: dict[str, Any]


class ActionAccepted(BaseModel):
    run: RunPublic
    request_id: str | None


class RunMetrics(BaseModel):
    run_id: int
    metrics: list[dict[str, Any]]
    eval: list[dict[str, Any]]
