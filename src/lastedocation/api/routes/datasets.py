"""Dataset routes: upload (streamed; an archive is a speech dataset), validate, list,
get, preview, stats, report, a speech dataset's audio, split, delete. Thin: parse,
call the service, map.

Every route needs a signed-in user; the service decides what that user may see
(another member's dataset answers 404)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from lastedocation.api.deps import (
    CurrentUser,
    ItemId,
    SessionDep,
    SettingsDep,
    error_responses,
)
from lastedocation.api.upload import FILE_UPLOAD_BODY, receive_upload
from lastedocation.auth.models import User
from lastedocation.datasets import service, uploads
from lastedocation.datasets.schemas import (
    DatasetImported,
    DatasetPublic,
    ImportOptions,
    PreviewPublic,
    SplitCreate,
    SplitPublic,
    ValidationPublic,
)
from lastedocation.datasets.speech import MEDIA_TYPES
from lastedocation.errors import PayloadTooLarge
from lastedocation.settings import Settings

# every route needs a signed-in user; the errors each route can give are documented
router = APIRouter(prefix="/datasets", tags=["datasets"], responses=error_responses(401))
_ONE = error_responses(404, 422)  # a route on one dataset: not found (or not yours), bad id
_UPLOADED = error_responses(400, 413, 422)  # not multipart, bad options, too big, no valid row


async def _receive(
    request: Request, settings: Settings, *, speech: bool = False
) -> tuple[Path, str]:
    """The upload on disk, under the datasets' limit (`speech`: the speech archives' one)."""
    settings.ensure_dirs()
    dest = settings.tmp_dir / f"upload-{uuid.uuid4().hex}.part"
    speech_limit = uploads.speech_upload_limit(settings)
    try:
        if speech:
            setting = "LASTEDOCATION_MAX_SPEECH_UPLOAD_MB"
            upload = await receive_upload(request, dest=dest, limit=speech_limit, setting=setting)
        else:
            upload = await receive_upload(request, dest=dest, limit=settings.max_upload_bytes)
        return upload.path, service.safe_filename(upload.filename)
    except PayloadTooLarge as exc:
        dest.unlink(missing_ok=True)
        if speech or speech_limit <= settings.max_upload_bytes:
            raise
        hint = (
            f"; a speech dataset archive may be up to {speech_limit:,} bytes at "
            "POST /api/v1/datasets/speech (LASTEDOCATION_MAX_SPEECH_UPLOAD_MB)"
        )
        raise PayloadTooLarge(exc.detail + hint, **exc.extra) from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


async def _upload(
    request: Request,
    user: User,
    settings: Settings,
    options: ImportOptions,
    name: str | None,
    drop_invalid: bool,
    *,
    speech: bool,
) -> Any:
    path, filename = await _receive(request, settings, speech=speech)
    try:
        scan_options = options.scan_options(settings)

        def work() -> DatasetImported:
            with request.app.state.sessions() as session:
                dataset, _ = uploads.import_upload(
                    session=session,
                    settings=settings,
                    path=path,
                    filename=filename,
                    name=name,
                    options=scan_options,
                    drop_invalid=drop_invalid,
                    owner_id=user.id,
                    speech_only=speech,
                )
                return DatasetImported.model_validate(dataset)

        return await run_in_threadpool(work)
    finally:
        path.unlink(missing_ok=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetImported,
    openapi_extra=FILE_UPLOAD_BODY,
    responses=_UPLOADED,
)
async def upload_dataset(
    request: Request,
    user: CurrentUser,
    settings: SettingsDep,
    options: Annotated[ImportOptions, Depends()],
    name: Annotated[str | None, Query(max_length=200)] = None,
    drop_invalid: bool = False,
) -> Any:
    """Upload a file (multipart field `file`), validate it and import it.

    A .zip, .tar or .tar.gz (known by its content) is a speech dataset: audio files and
    one metadata.csv or metadata.jsonl with `file_name` and `transcription` (or `text`,
    `sentence`) columns; the text options do not apply to it."""
    return await _upload(request, user, settings, options, name, drop_invalid, speech=False)


@router.post(
    "/speech",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetImported,
    openapi_extra=FILE_UPLOAD_BODY,
    responses=_UPLOADED,
)
async def upload_speech_dataset(
    request: Request,
    user: CurrentUser,
    settings: SettingsDep,
    name: Annotated[str | None, Query(max_length=200)] = None,
    drop_invalid: bool = False,
) -> Any:
    """Upload a speech dataset archive (.zip, .tar or .tar.gz of audio files and one
    metadata.csv or metadata.jsonl), under the speech archives' own, larger limit."""
    return await _upload(request, user, settings, ImportOptions(), name, drop_invalid, speech=True)


@router.post(
    "/validate",
    response_model=ValidationPublic,
    openapi_extra=FILE_UPLOAD_BODY,
    responses=_UPLOADED,
)
async def validate_dataset(
    request: Request,
    _user: CurrentUser,
    settings: SettingsDep,
    options: Annotated[ImportOptions, Depends()],
) -> Any:
    """Check a file without importing it: the report, statistics and normalization effect."""
    path, filename = await _receive(request, settings)
    try:
        scan_options = options.scan_options(settings)
        result = await run_in_threadpool(
            uploads.validate_upload,
            settings=settings,
            path=path,
            filename=filename,
            options=scan_options,
        )
        return {**result.summary(), "stats": result.stats, "normalization": result.normalization}
    finally:
        path.unlink(missing_ok=True)


@router.get("", response_model=list[DatasetPublic])
def list_datasets(user: CurrentUser, session: SessionDep) -> Any:
    return service.list_datasets(session=session, user=user)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=_ONE)
def get_dataset(dataset_id: ItemId, user: CurrentUser, session: SessionDep) -> Any:
    return service.get_dataset(session=session, dataset_id=dataset_id, user=user)


@router.get("/{dataset_id}/preview", response_model=PreviewPublic, responses=_ONE)
def preview_dataset(
    request: Request,
    dataset_id: ItemId,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PREVIEW_ROWS)] = 20,
) -> Any:
    dataset = service.get_dataset(session=session, dataset_id=dataset_id, user=user)
    rows = service.preview(settings=settings, dataset=dataset, offset=offset, limit=limit)
    if dataset.kind == "speech":
        for row in rows:
            row["audio_url"] = request.app.url_path_for(
                "dataset_audio", dataset_id=str(dataset.id), row=str(row["row"])
            )
    return {
        "dataset_id": dataset.id,
        "offset": offset,
        "limit": limit,
        "total": dataset.rows,
        "rows": rows,
    }


_AUDIO = {
    200: {
        "description": "The row's audio file, the bytes as uploaded.",
        "content": {media_type: {} for media_type in sorted(set(MEDIA_TYPES.values()))},
    },
    **error_responses(404, 409, 422),
}


@router.get(
    "/{dataset_id}/audio/{row}",
    name="dataset_audio",
    response_class=FileResponse,
    responses=_AUDIO,
)
def dataset_audio(
    dataset_id: ItemId, row: ItemId, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> FileResponse:
    """The audio of a speech dataset's row (`row` counts from 1, as the preview shows)."""
    dataset = service.get_dataset(session=session, dataset_id=dataset_id, user=user)
    path, media_type = service.audio_file(settings=settings, dataset=dataset, row=row)
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get("/{dataset_id}/stats", responses=_ONE)
def dataset_stats(dataset_id: ItemId, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    return service.get_dataset(session=session, dataset_id=dataset_id, user=user).stats


@router.get("/{dataset_id}/report", responses=_ONE)
def dataset_report(dataset_id: ItemId, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    dataset = service.get_dataset(session=session, dataset_id=dataset_id, user=user)
    return {"report": dataset.report, "normalization": dataset.normalization}


@router.post(
    "/{dataset_id}/splits",
    status_code=status.HTTP_201_CREATED,
    response_model=SplitPublic,
    responses=error_responses(400, 404, 409, 422),
)
def split_dataset(
    dataset_id: ItemId,
    body: SplitCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> Any:
    dataset = service.get_dataset(session=session, dataset_id=dataset_id, user=user)
    return service.split_dataset(
        session=session,
        settings=settings,
        dataset=dataset,
        key=body.key,
        validation_fraction=body.validation_fraction,
        seed=body.seed,
    )


@router.get("/{dataset_id}/splits", response_model=list[SplitPublic], responses=_ONE)
def list_splits(dataset_id: ItemId, user: CurrentUser, session: SessionDep) -> Any:
    return service.get_dataset(session=session, dataset_id=dataset_id, user=user).splits


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403, 404, 409, 422),
)
def delete_dataset(
    dataset_id: ItemId, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    dataset = service.get_dataset(session=session, dataset_id=dataset_id, user=user, to_delete=True)
    service.delete_dataset(session=session, settings=settings, dataset=dataset)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
