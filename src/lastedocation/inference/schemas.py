"""Requests and answers of the OpenAI-compatible API, in OpenAI's wire format
(https://platform.openai.com/docs/api-reference/chat), so OpenAI's clients work
against the studio unchanged.

Fields clients commonly send that the studio cannot honour are refused with a
clear message (`n` above 1, frequency or presence penalties, tools) rather than
silently ignored; other unknown fields are ignored, as OpenAI's clients add new
optional fields over time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from lastedocation.errors import InvalidInput
from lastedocation.inference.generate import MAX_STOP_STRINGS, GenerationSettings

# Most messages in a conversation and parts in a message: far above any real chat.
MAX_MESSAGES = 4096
MAX_PARTS = 256


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_PARTS)]
    name: str | None = None

    def as_turn(self) -> dict[str, str]:
        """The message as a chat template reads it (`developer` is OpenAI's new `system`)."""
        content = self.content
        text = content if isinstance(content, str) else "\n".join(p.text for p in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionCreate(BaseModel):
    """`POST /v1/chat/completions`. `repetition_penalty` is an extension (as in vLLM):
    send it with the OpenAI client as `extra_body={"repetition_penalty": 1.2}`."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="A model's name or id, from GET /v1/models.")
    # bounded, so that a body of many invalid items stops at the first (pydantic would
    # build an error object for each of them on the event loop)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(default=1.0, ge=0, le=2, description="0: greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="The newer name of max_tokens; wins when both are sent."
    )
    stop: str | Annotated[list[str], Field(max_length=64)] | None = None
    seed: int | None = None
    repetition_penalty: float = Field(default=1.0, gt=0)
    n: int = 1
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)

    def turns(self) -> list[dict[str, str]]:
        return [message.as_turn() for message in self.messages]

    def generation_settings(self, *, max_new_tokens_limit: int) -> GenerationSettings:
        """The generation settings this request asks for; InvalidInput names the field."""
        if self.n != 1:
            raise InvalidInput("n: the studio answers with one choice; send n=1", field="n")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) != 0:
                raise InvalidInput(
                    f"{name} is not supported: send repetition_penalty (e.g. 1.2) instead",
                    field=name,
                )
        if self.tools:
            raise InvalidInput("tools are not supported by the studio's models", field="tools")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP_STRINGS or any(not s for s in stop):
            raise InvalidInput(
                f"stop: send up to {MAX_STOP_STRINGS} non-empty strings", field="stop"
            )
        wanted = self.max_completion_tokens or self.max_tokens
        if wanted is not None and wanted > max_new_tokens_limit:
            field = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
            raise InvalidInput(
                f"{field}: at most {max_new_tokens_limit} tokens (the studio's limit), "
                f"got {wanted}",
                field=field,
            )
        return GenerationSettings(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=wanted or max_new_tokens_limit,
            repetition_penalty=self.repetition_penalty,
            stop=stop,
            seed=self.seed,
            max_new_tokens_limit=max_new_tokens_limit,
        )


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer
    def _present(self) -> dict[str, str]:
        # OpenAI leaves out what a delta does not carry: `{}` in the last chunk
        fields = {"role": self.role, "content": self.content}
        return {key: value for key, value in fields.items() if value is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageOut | None = None


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


def unix_time(moment: datetime) -> int:
    """Seconds since 1970; a naive time (SQLite keeps no zone) is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
