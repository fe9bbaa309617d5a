"""The model registry's pages: the list with the three ways in (archive upload, a
server folder, the Hub), and each model's page: summary, metrics, lineage, config,
export, evaluations, comparison, Hub push and delete.

Long actions (export, evaluate, compare, push) answer htmx fragments; a failure
shows its message in the fragment, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request, status
from fastapi import Path as InPath
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from lastedocation.api.deps import SessionDep, SettingsDep
from lastedocation.api.routes.models import receive_model_archive
from lastedocation.auth.models import User
from lastedocation.datasets import service as datasets
from lastedocation.errors import Forbidden, InvalidInput, StudioError
from lastedocation.models import registry, service
from lastedocation.models.entries import ModelEntry
from lastedocation.models.schemas import EvaluationCreate, ExportRequest, HubImport, HubPush
from lastedocation.web.deps import CsrfChecked, PageUser
from lastedocation.web.render import language, render

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Form(max_length=1024)]
# a model's number in a path; larger ones would overflow the database's integer
ModelId = Annotated[int, InPath(ge=1, le=2**63 - 1)]
M = TypeVar("M", bound=BaseModel)


def _parse(schema: type[M], **fields: Any) -> M:
    """A form's fields checked by the API's own schema; InvalidInput names each field."""
    try:
        return schema.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(problems) from None


def _failure(request: Request, exc: StudioError) -> tuple[str, int]:
    """The message of a failed action and the status its fragment answers with (htmx
    swaps no 5xx answer, see app.js, so a Hub outage answers 200 with its message)."""
    message = language(request).gettext(exc.detail)
    return message, exc.status_code if exc.status_code < 500 else status.HTTP_200_OK


def _list_page(
    request: Request, session: Session, user: User, *, errors: dict[str, str], code: int = 200
) -> HTMLResponse:
    models = registry.list_models(session=session, user=user)
    context = {"models": models, "errors": errors}
    return render(request, "models/list.html", context, user=user, nav="models", status_code=code)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, session: SessionDep, user: PageUser) -> HTMLResponse:
    return _list_page(request, session, user, errors={})


@router.post("/models/register", dependencies=[CsrfChecked])
def register_folder(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    path: Text = "",
    name: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """An admin registers a model folder already on the server (used in place)."""
    if not user.is_admin:
        raise Forbidden("only an admin can register a folder on the server")
    try:
        if not path.strip():
            raise InvalidInput("give the folder's path on the server", field="path")
        entry = registry.register_folder(
            session=session, settings=settings, path=Path(path.strip()), name=name or None
        )
    except StudioError as exc:
        message, code = _failure(request, exc)
        return _list_page(request, session, user, errors={"register": message}, code=code)
    return RedirectResponse(f"/models/{entry.id}", status_code=303)


@router.post("/models/import/hub", dependencies=[CsrfChecked])
def import_hub(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    repo_id: Text = "",
    revision: Text = "",
    name: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    try:
        body = _parse(HubImport, repo_id=repo_id, revision=revision or None, name=name or None)
        entry = service.import_hub(
            session=session, settings=settings, user=user, **body.model_dump()
        )
    except StudioError as exc:
        message = language(request).gettext(exc.detail)
        return _list_page(request, session, user, errors={"hub": message}, code=exc.status_code)
    return RedirectResponse(f"/models/{entry.id}", status_code=303)


@router.post("/models/import/archive", dependencies=[CsrfChecked])
async def import_archive(request: Request, settings: SettingsDep, user: PageUser) -> Response:
    """The page's script uploads here (with progress); the answer names the new model's
    page, or is an alert the script shows."""
    try:
        entry = await receive_model_archive(request, settings, user)
    except StudioError as exc:
        context = {"message": language(request).gettext(exc.detail)}
        return render(request, "models/_problem.html", context, status_code=exc.status_code)
    return Response(
        status_code=status.HTTP_201_CREATED, headers={"Location": f"/models/{entry.id}"}
    )


def _archive_name(settings: SettingsDep, entry: ModelEntry) -> str | None:
    try:
        return service.export_archive(settings=settings, entry=entry).name
    except StudioError:  # not exported yet
        return None


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(
    model_id: ModelId, request: Request, session: SessionDep, settings: SettingsDep, user: PageUser
) -> HTMLResponse:
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    others = [m for m in registry.list_models(session=session, user=user) if m.id != entry.id]
    context = {
        "model": entry,
        "others": others,
        "datasets": datasets.list_datasets(session=session, user=user),
        "evaluations": service.list_evaluations(session=session, entry=entry),
        "archive": _archive_name(settings, entry),
        "config_json": json.dumps(entry.config, ensure_ascii=False, indent=2),
    }
    return render(request, "models/detail.html", context, user=user, nav="models")


@router.post("/models/{model_id}/export", dependencies=[CsrfChecked])
def export_model(
    model_id: ModelId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    archive: Annotated[str, Form(max_length=10)] = "tar.gz",
    license: Annotated[str, Form(max_length=50)] = "",
) -> HTMLResponse:
    """Export, with the smoke test's report (and the archive's download link)."""
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    context: dict[str, Any] = {"model": entry, "result": None, "error": None}
    code = 200
    try:
        body = _parse(ExportRequest, archive=archive or None, license=license or None)
        context["result"] = service.export_model(
            session=session,
            settings=settings,
            entry=entry,
            archive_format=body.archive,
            license=body.license,
        )
    except StudioError as exc:
        context["error"], code = _failure(request, exc)
    return render(request, "models/_export.html", context, user=user, status_code=code)


def _evaluations(
    request: Request, session: Session, user: User, entry: ModelEntry, error: str | None, code: int
) -> HTMLResponse:
    context = {
        "model": entry,
        "evaluations": service.list_evaluations(session=session, entry=entry),
        "error": error,
    }
    return render(request, "models/_evaluations.html", context, user=user, status_code=code)


@router.get("/models/{model_id}/evaluations", response_class=HTMLResponse)
def evaluations(
    model_id: ModelId, request: Request, session: SessionDep, user: PageUser
) -> HTMLResponse:
    """The evaluations list (the page polls it while one is queued or running)."""
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    return _evaluations(request, session, user, entry, None, 200)


@router.post("/models/{model_id}/evaluations", dependencies=[CsrfChecked])
def evaluate(
    model_id: ModelId,
    request: Request,
    session: SessionDep,
    user: PageUser,
    dataset_id: Annotated[str, Form(max_length=20)] = "",
    max_rows: Annotated[str, Form(max_length=20)] = "50",
    max_new_tokens: Annotated[str, Form(max_length=20)] = "64",
) -> HTMLResponse:
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    try:
        if not dataset_id:
            raise InvalidInput("choose a dataset to evaluate on", field="dataset_id")
        body = _parse(
            EvaluationCreate,
            dataset_id=dataset_id,
            max_rows=max_rows,
            max_new_tokens=max_new_tokens,
        )
        service.queue_evaluation(session=session, user=user, entry=entry, body=body)
    except StudioError as exc:
        message, code = _failure(request, exc)
        return _evaluations(request, session, user, entry, message, code)
    request.app.state.evaluator.wake()
    return _evaluations(request, session, user, entry, None, status.HTTP_202_ACCEPTED)


@router.get("/models/{model_id}/compare", response_class=HTMLResponse)
def compare(
    model_id: ModelId,
    request: Request,
    session: SessionDep,
    user: PageUser,
    other: str = "",
    dataset_id: str = "",
) -> HTMLResponse:
    """This model (the baseline) and another, side by side: their latest evaluations."""
    context: dict[str, Any] = {"comparison": None, "error": None}
    code = 200
    try:
        if not other.isdigit():
            raise InvalidInput("choose a model to compare with", field="other")
        if dataset_id and not dataset_id.isdigit():
            raise InvalidInput("dataset_id must be a dataset's number", field="dataset_id")
        context["comparison"] = service.compare_models(
            session=session,
            user=user,
            model_ids=[model_id, int(other)],
            dataset_id=int(dataset_id) if dataset_id else None,
        )
    except StudioError as exc:
        context["error"], code = _failure(request, exc)
    return render(request, "models/_compare.html", context, user=user, status_code=code)


@router.post("/models/{model_id}/push", dependencies=[CsrfChecked])
def push(
    model_id: ModelId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    repo_id: Annotated[str, Form(max_length=200)] = "",
    token: Annotated[str, Form(max_length=500)] = "",
    private: Annotated[str, Form(max_length=10)] = "",
) -> HTMLResponse:
    """Upload the export to the Hub with the user's token (used once, never stored)."""
    entry = registry.get_model(session=session, model_id=model_id, user=user)
    context: dict[str, Any] = {"result": None, "error": None}
    code = 200
    try:
        body = _parse(HubPush, repo_id=repo_id, token=token, private=bool(private))
        context["result"] = service.push(
            session=session, settings=settings, entry=entry, **body.model_dump()
        )
    except StudioError as exc:
        context["error"], code = _failure(request, exc)
    return render(request, "models/_push.html", context, user=user, status_code=code)


@router.post("/models/{model_id}/delete", dependencies=[CsrfChecked])
def delete(
    model_id: ModelId, request: Request, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    entry = registry.get_model(session=session, model_id=model_id, user=user, to_change=True)
    cache = request.app.state.model_cache
    registry.delete_model(session=session, settings=settings, entry=entry, cache=cache)
    return RedirectResponse("/models", status_code=303)
