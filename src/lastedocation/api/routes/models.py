"""Model registry routes: list, get, register a server folder, import (archive, Hub),
export (folder + archive + model card), push to the Hub, delete, evaluations."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from lastedocation.api.deps import (
    AdminUser,
    CurrentUser,
    ItemId,
    SessionDep,
    SettingsDep,
    error_responses,
)
from lastedocation.api.upload import FILE_UPLOAD_BODY, receive_upload
from lastedocation.auth.models import User
from lastedocation.datasets.schemas import MAX_DB_INT, RowId
from lastedocation.models import registry, service
from lastedocation.models.entries import ModelEntry
from lastedocation.models.schemas import (
    EvaluationCreate,
    EvaluationPublic,
    ExportRequest,
    FolderRegister,
    HubImport,
    HubPush,
    ModelDetail,
    ModelPublic,
)
from lastedocation.settings import Settings

# every route needs a signed-in user; the errors each route can give are documented
router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(401))
_ONE = error_responses(404, 422)  # a route on one model: not found (or not yours), bad id
# the routes that reach the Hub answer 503 when it cannot be reached
_HUB_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"description": "The Hugging Face Hub cannot be reached; the answer says what to do."}
}


@router.get("", response_model=list[ModelPublic])
def list_models(session: SessionDep, user: CurrentUser) -> Any:
    return registry.list_models(session=session, user=user)


@router.get("/compare", responses=error_responses(400, 404, 409, 422))
def compare_models(
    session: SessionDep,
    user: CurrentUser,
    ids: Annotated[list[RowId], Query(min_length=2, max_length=10)],
    dataset_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT)] = None,
) -> dict[str, Any]:
    """Models side by side (a base and its fine-tuned model, or several runs): each one's
    latest completed evaluation and the change of every metric against the first."""
    return service.compare_models(session=session, user=user, model_ids=ids, dataset_id=dataset_id)


@router.get("/{model_id}", response_model=ModelDetail, responses=_ONE)
def get_model(model_id: ItemId, session: SessionDep, user: CurrentUser) -> Any:
    return registry.get_model(session=session, model_id=model_id, user=user)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelDetail,
    responses=error_responses(400, 403, 409, 422),
)
def register_folder(
    body: FolderRegister, session: SessionDep, settings: SettingsDep, _admin: AdminUser
) -> Any:
    """Register a Hugging Face folder already on the server (admins: it reads server paths).
    Only safetensors weights are accepted; the folder is used in place."""
    return registry.register_folder(
        session=session, settings=settings, path=Path(body.path), name=body.name
    )


@router.post(
    "/import/archive",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelDetail,
    openapi_extra=FILE_UPLOAD_BODY,
    responses=error_responses(400, 409, 413, 422),
)
async def import_archive(request: Request, settings: SettingsDep, user: CurrentUser) -> Any:
    """Upload a .zip or .tar.gz of a model folder (safetensors weights only); paths that
    leave the folder, links, too many files or too many bytes are refused."""
    return await receive_model_archive(request, settings, user)


async def receive_model_archive(request: Request, settings: Settings, user: User) -> ModelEntry:
    """Stream the upload to a file, then import it in a worker thread (extracting and
    hashing copy every byte: never on the event loop). The web page uses this too."""
    settings.ensure_dirs()
    part = settings.tmp_dir / f"model-upload-{uuid.uuid4().hex}.part"
    try:
        upload = await receive_upload(
            request,
            dest=part,
            limit=settings.max_model_upload_bytes,
            setting="LASTEDOCATION_MAX_MODEL_UPLOAD_MB",
        )

        def work() -> ModelEntry:
            with request.app.state.sessions() as session:
                return service.import_archive(
                    session=session,
                    settings=settings,
                    user=user,
                    path=upload.path,
                    filename=upload.filename,
                )

        return await run_in_threadpool(work)
    finally:
        part.unlink(missing_ok=True)


@router.post(
    "/import/hub",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelDetail,
    responses={**error_responses(400, 404, 409, 422), **_HUB_DOWN},
)
def import_hub(
    body: HubImport, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> Any:
    """Download a model from the Hugging Face Hub once, into the studio's cache."""
    return service.import_hub(
        session=session,
        settings=settings,
        user=user,
        repo_id=body.repo_id,
        revision=body.revision,
        name=body.name,
    )


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403, 404, 409, 422),
)
def delete_model(
    model_id: ItemId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> Response:
    entry = registry.get_model(session=session, model_id=model_id, user=user, to_change=True)
    cache = request.app.state.model_cache
    registry.delete_model(session=session, settings=settings, entry=entry, cache=cache)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{model_id}/export", responses=error_responses(400, 404, 409, 422))
def export_model(
    model_id: ItemId,
    body: ExportRequest,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> dict[str, Any]:
    """A clean folder (safetensors, config, tokenizer, generation config, model card),
    checked by loading it fresh and generating; optionally packed as an archive."""
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    return service.export_model(
        session=session,
        settings=settings,
        entry=entry,
        archive_format=body.archive,
        license=body.license,
    )


@router.get("/{model_id}/export/archive", response_class=FileResponse, responses=_ONE)
def download_export(
    model_id: ItemId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> FileResponse:
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    path = service.export_archive(settings=settings, entry=entry)
    return FileResponse(path, filename=path.name, media_type="application/octet-stream")


@router.post("/{model_id}/push", responses={**error_responses(400, 404, 409, 422), **_HUB_DOWN})
def push_model(
    model_id: ItemId, body: HubPush, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> dict[str, Any]:
    """Upload the export to a Hub repository with the user's own token (not stored)."""
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    return service.push(
        session=session,
        settings=settings,
        entry=entry,
        repo_id=body.repo_id,
        token=body.token,
        private=body.private,
    )


@router.post(
    "/{model_id}/evaluations",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EvaluationPublic,
    responses=error_responses(400, 404, 409, 422),
)
def start_evaluation(
    model_id: ItemId,
    body: EvaluationCreate,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
) -> Any:
    """Queue an evaluation on held-out rows: perplexity, then exact match, token F1,
    chrF, BLEU and ROUGE of generated answers after Persian normalization."""
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    evaluation = service.queue_evaluation(session=session, user=user, entry=entry, body=body)
    request.app.state.evaluator.wake()
    return evaluation


@router.get("/{model_id}/evaluations", response_model=list[EvaluationPublic], responses=_ONE)
def list_evaluations(model_id: ItemId, session: SessionDep, user: CurrentUser) -> Any:
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    return service.list_evaluations(session=session, entry=entry)
