"""The OpenAI-compatible API: `POST /v1/chat/completions` (streamed or whole) and
`GET /v1/models`, so OpenAI's clients, and the tools built on them, chat with the
studio's models:

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="ldt_...")

Authentication is the studio's own (an API token, or an access token). Errors come in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so the clients raise
their usual exceptions (AuthenticationError, NotFoundError, BadRequestError).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from lastedocation import ownership
from lastedocation.api.deps import CurrentUser, SessionDep, SettingsDep, StreamingUser
from lastedocation.errors import StudioError
from lastedocation.inference.cache import ModelCache
from lastedocation.inference.generate import Chunk, stream_chat
from lastedocation.inference.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionCreate,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorOut,
    ModelList,
    ModelOut,
    UsageOut,
    unix_time,
)
from lastedocation.models import registry
from lastedocation.runs.live import EventStreamResponse

log = logging.getLogger("lastedocation.api")
BAD_JSON = "invalid_json"  # the `code` of a body that is not JSON (or not UTF-8)


def openai_error(exc: StudioError) -> ErrorOut:
    """A studio error in OpenAI's shape, with the codes OpenAI uses for these cases."""
    code = {401: "invalid_api_key", 404: "model_not_found"}.get(exc.status_code, exc.code)
    body = ErrorBody(
        message=exc.detail,
        type="server_error" if exc.status_code >= 500 else "invalid_request_error",
        param=exc.extra.get("field"),
        code=code,
    )
    return ErrorOut(error=body)


def _bad_request(message: str, *, param: str | None, code: str) -> JSONResponse:
    body = ErrorBody(message=message, type="invalid_request_error", param=param, code=code)
    return JSONResponse(ErrorOut(error=body).model_dump(), status_code=400)


def _invalid_request(exc: RequestValidationError) -> JSONResponse:
    def where(error: Any) -> str:
        return ".".join(str(part) for part in error["loc"][1:])

    errors = exc.errors()
    for e in errors:
        if e["type"] == "json_invalid":
            problem = e.get("ctx", {}).get("error", "")
            message = f"the body is not valid JSON ({problem} at character {e['loc'][-1]})"
            return _bad_request(message, param=None, code=BAD_JSON)
    message = "; ".join(f"{where(e) or 'body'}: {e['msg']}" for e in errors)
    param = (where(errors[0]) or None) if errors else None
    return _bad_request(message, param=param, code="invalid_value")


class OpenAIRoute(APIRoute):
    """Answers errors of these routes (their dependencies and bodies included) in
    OpenAI's shape instead of the studio's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except StudioError as exc:
                if exc.status_code >= 500:
                    log.exception("unexpected error", exc_info=exc)
                return JSONResponse(
                    openai_error(exc).model_dump(),
                    status_code=exc.status_code,
                    headers=exc.headers,
                )
            except RequestValidationError as exc:
                return _invalid_request(exc)
            except HTTPException as exc:  # FastAPI's own: a body it could not read at all
                if exc.status_code != 400:
                    raise
                return _bad_request(
                    f"the body cannot be read: {exc.detail}", param=None, code=BAD_JSON
                )

        return route


router = APIRouter(route_class=OpenAIRoute, tags=["openai"])
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A bad parameter; `param` names it."},
    401: {
        "model": ErrorOut,
        "description": "No valid token: send `Authorization: Bearer ldt_...`.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    404: {"model": ErrorOut, "description": "No such model, or not yours."},
}


def _model_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.model_cache
    return cache


ModelCacheDep = Annotated[ModelCache, Depends(_model_cache)]


@router.get("/v1/models", response_model=ModelList, responses={401: OPENAI_ERRORS[401]})
def list_models(user: CurrentUser, session: SessionDep) -> ModelList:
    """The models you can chat with; `id` is what `model` takes."""
    entries = registry.list_models(session=session, user=user)
    owners = ownership.owner_names(session, {entry.owner_id for entry in entries})
    return ModelList(
        data=[
            ModelOut(
                id=entry.name,
                created=unix_time(entry.created_at),
                owned_by=owners.get(entry.owner_id, "studio"),
            )
            for entry in entries
        ]
    )


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {
            "description": "The answer; with `stream: true`, server-sent events: "
            "`chat.completion.chunk` objects, then `data: [DONE]`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **OPENAI_ERRORS,
    },
)
async def create_chat_completion(
    body: ChatCompletionCreate,
    request: Request,
    user: StreamingUser,
    settings: SettingsDep,
    cache: ModelCacheDep,
) -> Any:
    """Chat with a model. Generation stops at the model's end token, at a `stop`
    string or after `max_tokens`, and when the client goes away."""
    generation = body.generation_settings(max_new_tokens_limit=settings.max_new_tokens_limit)
    sessions = request.app.state.sessions

    def find() -> tuple[str, Path]:
        with sessions() as session:  # not held while the answer streams
            entry = registry.resolve_model(session=session, user=user, name=body.model)
            registry.require_text(entry)
            return entry.name, registry.model_folder(settings, entry)

    name, folder = await run_in_threadpool(find)
    loaded = await run_in_threadpool(cache.get, folder)
    cancel = threading.Event()
    # the prompt is checked here (chat template, length), before any answer is sent
    chunks = await run_in_threadpool(
        stream_chat,
        loaded.model,
        loaded.tokenizer,
        body.turns(),
        generation,
        lock=loaded.lock,
        cancel=cancel,
    )
    head: dict[str, Any] = {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "created": int(time.time()),
        "model": name,
    }
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStreamResponse(
            _events(_pieces(chunks, cancel), head, include_usage),
            send_timeout_s=settings.sse_send_timeout_s,
        )
    text: list[str] = []
    async with aclosing(_pieces(chunks, cancel)) as pieces:
        async for chunk in pieces:
            text.append(chunk.text)
            if chunk.finish_reason is not None and chunk.usage is not None:
                choice = Choice(
                    message=AssistantMessage(content="".join(text)),
                    finish_reason=chunk.finish_reason,
                )
                return ChatCompletion(**head, choices=[choice], usage=_usage(chunk))
            if await request.is_disconnected():
                break  # nobody waits for the answer: stop generating it
    return Response(status_code=499)  # "client closed request"; nobody reads it


async def _pieces(chunks: Iterator[Chunk], cancel: threading.Event) -> AsyncGenerator[Chunk]:
    """The chunks, each read in a worker thread (the event loop never waits on the
    model). However the reader ends (done, disconnected, failed), generation stops."""
    try:
        while True:
            # abandon_on_cancel: a client that goes away does not wait for the next token
            chunk = await to_thread.run_sync(next, chunks, None, abandon_on_cancel=True)
            if chunk is None:
                return
            yield chunk
    finally:
        cancel.set()


async def _events(
    pieces: AsyncGenerator[Chunk], head: dict[str, Any], include_usage: bool
) -> AsyncIterator[bytes]:
    def event(choices: list[ChunkChoice], usage: UsageOut | None = None) -> bytes:
        data = ChatCompletionChunk(**head, choices=choices, usage=usage)
        return _sse(data)

    yield event([ChunkChoice(delta=Delta(role="assistant", content=""))])
    try:
        async for chunk in pieces:
            if chunk.text:
                yield event([ChunkChoice(delta=Delta(content=chunk.text))])
            if chunk.finish_reason is not None:
                yield event([ChunkChoice(delta=Delta(), finish_reason=chunk.finish_reason)])
                if include_usage:
                    yield event([], _usage(chunk))
    except StudioError as exc:  # the answer has begun: the error goes in the stream
        yield _sse(openai_error(exc))
        return
    except Exception:
        log.exception("generation failed")
        failure = ErrorBody(
            message="generation failed; the server log has why", type="server_error"
        )
        yield _sse(ErrorOut(error=failure))
        return
    finally:
        await pieces.aclose()
    yield b"data: [DONE]\n\n"


def _sse(data: BaseModel) -> bytes:
    return b"data: " + data.model_dump_json().encode() + b"\n\n"


def _usage(chunk: Chunk) -> UsageOut:
    assert chunk.usage is not None
    usage = chunk.usage
    return UsageOut(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )
