"""Run routes: create, list, get, control, delete, metrics, logs, live events (SSE)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from lastedocation.api.deps import (
    CurrentUser,
    ItemId,
    SessionDep,
    SettingsDep,
    StreamingUser,
    error_responses,
)
from lastedocation.datasets.schemas import MAX_DB_INT
from lastedocation.runs import service
from lastedocation.runs.live import EventHub, EventStreamResponse
from lastedocation.runs.schemas import (
    ActionAccepted,
    RunCreate,
    RunCreated,
    RunMetrics,
    RunPublic,
)

# every route needs a signed-in user; the errors each route can give are documented
router = APIRouter(prefix="/runs", tags=["runs"], responses=error_responses(401))
_ONE = error_responses(404, 422)  # a route on one run: not found (or not yours), bad id
_CONTROL = error_responses(404, 409, 422)  # ... or the run's state forbids this


def _supervised(request: Request) -> Any:
    return request.app.state.supervisor.lock


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RunCreated,
    responses=error_responses(400, 404, 422),
)
def create_run(
    body: RunCreate, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> Any:
    """Check the config (all problems at once), run the pre-flight over every row
    (token lengths, truncation, memory estimate) and queue the run."""
    run = service.create_run(
        session=session,
        settings=settings,
        user=user,
        dataset_id=body.dataset_id,
        config=body.config(),
    )
    return {
        **RunPublic.model_validate(run).model_dump(),
        "preflight": service.read_preflight(settings, run),
    }


@router.get("/{run_id}/preflight", responses=_ONE)
def run_preflight(
    run_id: ItemId, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> dict[str, Any]:
    run = service.get_run(session=session, run_id=run_id, user=user)
    return service.read_preflight(settings, run) or {}


@router.get("", response_model=list[RunPublic], responses=error_responses(422))
def list_runs(session: SessionDep, user: CurrentUser, state: str | None = None) -> Any:
    return service.list_runs(session=session, user=user, state=state)


@router.get("/{run_id}", response_model=RunPublic, responses=_ONE)
def get_run(run_id: ItemId, session: SessionDep, user: CurrentUser) -> Any:
    return service.get_run(session=session, run_id=run_id, user=user)


def _act(request: Request, run_id: int, action: str, session: Any, user: Any, settings: Any) -> Any:
    with _supervised(request):
        run = service.get_run(session=session, run_id=run_id, user=user, lock=True)
        request_id = service.request(session=session, settings=settings, run=run, action=action)
        return {"run": RunPublic.model_validate(run), "request_id": request_id}


@router.post("/{run_id}/pause", status_code=202, response_model=ActionAccepted, responses=_CONTROL)
def pause_run(
    run_id: ItemId, request: Request, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> Any:
    """Checkpoint and free the device; resume continues exactly there."""
    return _act(request, run_id, "pause", session, user, settings)


@router.post("/{run_id}/resume", status_code=202, response_model=ActionAccepted, responses=_CONTROL)
def resume_run(
    run_id: ItemId, request: Request, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> Any:
    return _act(request, run_id, "resume", session, user, settings)


@router.post("/{run_id}/stop", status_code=202, response_model=ActionAccepted, responses=_CONTROL)
def stop_run(
    run_id: ItemId, request: Request, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> Any:
    return _act(request, run_id, "stop", session, user, settings)


@router.post(
    "/{run_id}/checkpoint", status_code=202, response_model=ActionAccepted, responses=_CONTROL
)
def checkpoint_run(
    run_id: ItemId, request: Request, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> Any:
    return _act(request, run_id, "checkpoint", session, user, settings)


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_CONTROL)
def delete_run(
    run_id: ItemId, request: Request, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> Response:
    with _supervised(request):
        run = service.get_run(session=session, run_id=run_id, user=user, lock=True)
        service.delete_run(session=session, settings=settings, run=run)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{run_id}/checkpoints", responses=_ONE)
def run_checkpoints(
    run_id: ItemId, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> list[dict[str, Any]]:
    run = service.get_run(session=session, run_id=run_id, user=user)
    return service.list_checkpoints(settings=settings, run=run)


class RestoreBody(BaseModel):
    step: int = Field(ge=0)
    as_new_run: bool = Field(default=False, description="Keep this run; start a copy.")


@router.post(
    "/{run_id}/restore",
    status_code=202,
    response_model=RunPublic,
    responses=error_responses(400, 404, 409, 422),
)
def restore_run(
    run_id: ItemId,
    body: RestoreBody,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
) -> Any:
    """Train on from a checkpoint, in place or as a new run."""
    with _supervised(request):
        run = service.get_run(session=session, run_id=run_id, user=user, lock=True)
        return service.restore(
            session=session, settings=settings, run=run, step=body.step, as_new_run=body.as_new_run
        )


@router.get("/{run_id}/metrics", response_model=RunMetrics, responses=_ONE)
def run_metrics(
    run_id: ItemId,
    session: SessionDep,
    user: CurrentUser,
    max_points: Annotated[int, Query(ge=2, le=100_000)] = 500,
    full: bool = False,
) -> Any:
    """Each series downsampled to `max_points` (or every point with `full=true`)."""
    service.get_run(session=session, run_id=run_id, user=user)
    history = service.metrics_history(
        session=session, run_id=run_id, max_points=None if full else max_points
    )
    return {"run_id": run_id, **history}


@router.get("/{run_id}/logs", responses=_ONE)
def run_logs(
    run_id: ItemId,
    session: SessionDep,
    user: CurrentUser,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    service.get_run(session=session, run_id=run_id, user=user)
    return service.logs(session=session, run_id=run_id, offset=offset, limit=limit)


@router.get("/{run_id}/events", response_class=EventStreamResponse, status_code=200, responses=_ONE)
async def run_events(
    run_id: ItemId,
    request: Request,
    user: StreamingUser,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_DB_INT)] = None,
) -> EventStreamResponse:
    """Server-sent events: every event of the run, live. Event ids are the trainer's
    `seq`; reconnecting with `Last-Event-ID` resumes right after it."""
    sessions = request.app.state.sessions

    def check() -> None:
        with sessions() as session:
            service.get_run(session=session, run_id=run_id, user=user)

    await run_in_threadpool(check)  # 404 before the stream starts
    if after is None:
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    hub: EventHub = request.app.state.event_hub
    return EventStreamResponse(
        hub.stream(run_id, after), send_timeout_s=settings.sse_send_timeout_s
    )
