"""Datasets pages: the list with the upload form, and one dataset's page (summary,
validation report, paged preview, statistics, duplicates, normalization, splits,
delete). A speech dataset's page shows its clips instead: each row's audio player
beside its transcript, and the hours, durations, speaking rates and sample rates.

The upload goes from the browser straight to the JSON API (`POST /api/v1/datasets`,
see `static/js/datasets.js`) so the page can show the real upload progress; every
other figure here comes from the same dataset services the API routes call.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from lastedocation.api.deps import SessionDep, SettingsDep
from lastedocation.auth import service as accounts
from lastedocation.auth.models import User
from lastedocation.datasets import service
from lastedocation.datasets.formats import DATA_FORMATS
from lastedocation.datasets.models import Dataset
from lastedocation.datasets.reader import FILE_FORMATS
from lastedocation.datasets.schemas import MAX_DB_INT, SplitCreate
from lastedocation.datasets.stats import SCRIPTS
from lastedocation.errors import InvalidInput, NotFound, StudioError
from lastedocation.settings import Settings
from lastedocation.web.deps import CsrfChecked, PageUser
from lastedocation.web.i18n import Language
from lastedocation.web.render import language, render

router = APIRouter(include_in_schema=False)
PAGE_SIZES = (10, 20, 50, 100)
_TOKENS = re.compile(r"\s+|\S+")
# Persian and Arabic digits (and the Persian decimal sign) typed into a form
_LATIN_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩٫", "01234567890123456789.")
# field names the statistics use that have a translation (others are shown as written)
FIELD_LABELS = frozenset(
    ("question", "answer", "system", "user", "assistant", "instruction", "input", "output", "text")
)
DATA_FORMAT_LABELS = {
    "qa": "Question/answer",
    "alpaca": "Alpaca",
    "openai": "OpenAI chat",
    "sharegpt": "ShareGPT chat",
    "text": "Plain text",
    "audiofolder": "Audio files with transcripts",
}
_SPLIT_PROBLEMS = {
    "validation_fraction": "The validation share must be a number between 0 and 1, such as 0.1.",
    "seed": "The seed must be a whole number, 0 or more.",
    "key": "The key must be a field name of at most 100 characters.",
}
SCRIPT_LABELS = {
    "persian": "Persian letters",
    "arabic_forms": "Arabic letter forms",
    "latin": "Latin letters",
    "persian_digits": "Persian digits",
    "arabic_digits": "Arabic digits",
    "latin_digits": "Latin digits",
    "zwnj": "ZWNJ",
    "whitespace": "Spaces",
    "other": "Punctuation and other",
}


def _bounded(raw: str | None, default: int, low: int, high: int) -> int:
    """A query value as a whole number within [low, high]; the default if it is none."""
    if raw is None or not raw.strip().isdigit():
        return default
    return max(low, min(int(raw), high))


def _dataset(session: Session, user: User, raw_id: str, *, to_delete: bool = False) -> Dataset:
    """The dataset named in the path, if this user may see it (else a 404 page)."""
    if not raw_id.isdigit() or not 1 <= int(raw_id) <= MAX_DB_INT:
        raise NotFound(f"no dataset with id {raw_id}")
    return service.get_dataset(
        session=session, dataset_id=int(raw_id), user=user, to_delete=to_delete
    )


def _owner(dataset: Dataset, user: User, names: dict[int, str], lang: Language) -> str:
    if dataset.owner_id is None:
        return lang.gettext("Shared")
    if dataset.owner_id == user.id:
        return lang.gettext("Yours")
    return names.get(dataset.owner_id, f"#{dataset.owner_id}")


def _usernames(session: Session, user: User) -> dict[int, str]:
    """Owners' names, for an admin (the only one who sees other accounts' datasets)."""
    if not user.is_admin:
        return {}
    return {u.id: u.username for u in accounts.list_users(session=session)}


def changes(before: str, after: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Both texts as (segment, changed) pieces, word by word, to mark what normalization
    changed (a word whose spacing, ZWNJ or letter forms changed is marked whole)."""
    old, new = _TOKENS.findall(before), _TOKENS.findall(after)
    left: list[tuple[str, bool]] = []
    right: list[tuple[str, bool]] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        same = op == "equal"
        if i2 > i1:
            left.append(("".join(old[i1:i2]), not same))
        if j2 > j1:
            right.append(("".join(new[j1:j2]), not same))
    return left, right


def _preview(settings: Settings, dataset: Dataset, request: Request) -> dict[str, Any]:
    """The page of rows the query asks for (`offset`, `limit`; odd values are ignored)."""
    offset = _bounded(request.query_params.get("offset"), 0, 0, max(dataset.rows - 1, 0))
    limit = _bounded(request.query_params.get("limit"), 10, 1, service.MAX_PREVIEW_ROWS)
    rows = service.preview(settings=settings, dataset=dataset, offset=offset, limit=limit)
    return {
        "rows": rows,
        "offset": offset,
        "limit": limit,
        "total": dataset.rows,
        "previous": max(offset - limit, 0) if offset > 0 else None,
        "next": offset + limit if offset + limit < dataset.rows else None,
        "sizes": PAGE_SIZES,
    }


def _meta_keys(settings: Settings, dataset: Dataset) -> list[str]:
    """The fields kept beside the first rows (what a split can group by)."""
    rows = service.preview(settings=settings, dataset=dataset, offset=0, limit=20)
    return sorted({key for row in rows for key in row.get("meta", {})})


def _chart_data(stats: dict[str, Any], lang: Language) -> dict[str, Any]:
    """What the charts draw, straight from the stored statistics, with their labels."""
    fields = []
    for name, field in (stats.get("fields") or {}).items():
        if not field.get("rows_with_text"):
            continue
        label = lang.gettext(name) if name in FIELD_LABELS else name
        for unit in ("chars", "words"):
            fields.append(
                {
                    "id": f"{name}-{unit}",
                    "field": label,
                    "unit": unit,
                    "title": lang.gettext("characters" if unit == "chars" else "words"),
                    "histogram": field[unit].get("histogram", []),
                }
            )
    counts = (stats.get("script_mix") or {}).get("counts", {})
    scripts = [
        {"key": k, "label": lang.gettext(SCRIPT_LABELS[k]), "count": counts.get(k, 0)}
        for k in SCRIPTS
    ]
    return {
        "lengths": fields,
        "scripts": scripts,
        "labels": {
            "characters": lang.gettext("characters"),
            "bin": lang.gettext("%(from)s to %(to)s %(unit)s · rows: %(count)s"),
        },
    }


def _speech_charts(stats: dict[str, Any], lang: Language) -> dict[str, Any]:
    """What a speech dataset's charts draw: durations, speaking rates, transcript lengths."""
    transcripts = stats.get("transcripts") or {}
    sources = (
        ("duration", "Duration", "seconds", stats.get("duration_s") or {}),
        ("rate", "Speaking rate", "characters per second", stats.get("chars_per_second") or {}),
        ("chars", "Transcript length", "characters", transcripts.get("chars") or {}),
    )
    counts = (stats.get("script_mix") or {}).get("counts", {})
    return {
        "lengths": [
            {
                "id": chart_id,
                "field": lang.gettext(label),
                "title": lang.gettext(unit),
                "histogram": figures.get("histogram", []),
            }
            for chart_id, label, unit, figures in sources
        ],
        "scripts": [
            {"key": k, "label": lang.gettext(SCRIPT_LABELS[k]), "count": counts.get(k, 0)}
            for k in SCRIPTS
        ],
        "labels": {
            "characters": lang.gettext("characters"),
            "bin": lang.gettext("%(from)s to %(to)s %(unit)s · clips: %(count)s"),
        },
    }


def _detail_context(
    request: Request, session: Session, settings: Settings, user: User, dataset: Dataset
) -> dict[str, Any]:
    lang = language(request)
    names = _usernames(session, user)
    preview = _preview(settings, dataset, request)
    if dataset.kind == "speech":
        return {
            "dataset": dataset,
            "owner": _owner(dataset, user, names, lang),
            "may_delete": user.is_admin or dataset.owner_id == user.id,
            "report": dataset.report,
            "stats": dataset.stats,
            "charts": _speech_charts(dataset.stats, lang),
            "format_labels": DATA_FORMAT_LABELS,
            "preview": preview,
            "min_clip_s": settings.min_speech_clip_s,
            "max_clip_s": settings.max_speech_clip_s,
        }
    normalization = dataset.normalization or {}
    examples = [
        {**example, "parts": changes(example["before"], example["after"])}
        for example in normalization.get("examples", [])
    ]
    return {
        "dataset": dataset,
        "owner": _owner(dataset, user, names, lang),
        "may_delete": user.is_admin or dataset.owner_id == user.id,
        "report": dataset.report,
        "stats": dataset.stats,
        "charts": _chart_data(dataset.stats, lang),
        "field_labels": FIELD_LABELS,
        "format_labels": DATA_FORMAT_LABELS,
        "normalization": normalization,
        "examples": examples,
        "preview": preview,
        "splits": dataset.splits,
        "split_form": {"key": "", "fraction": "0.1", "seed": "0"},
        "meta_keys": _meta_keys(settings, dataset),
        "split_error": None,
        "new_split": None,
    }


@router.get("/datasets", response_class=HTMLResponse)
def list_page(
    request: Request, session: SessionDep, settings: SettingsDep, user: PageUser
) -> HTMLResponse:
    lang = language(request)
    datasets = service.list_datasets(session=session, user=user)
    names = _usernames(session, user)
    context = {
        "datasets": [(d, _owner(d, user, names, lang)) for d in datasets],
        "file_formats": FILE_FORMATS,
        "data_formats": DATA_FORMATS,
        "format_labels": DATA_FORMAT_LABELS,
        "max_upload_bytes": settings.max_upload_bytes,
        "max_speech_upload_bytes": settings.max_speech_upload_mb * 1024 * 1024,
        "deleted": _bounded(request.query_params.get("deleted"), 0, 0, MAX_DB_INT) or None,
    }
    return render(request, "datasets/list.html", context, user=user, nav="datasets")


@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def detail_page(
    request: Request, dataset_id: str, session: SessionDep, settings: SettingsDep, user: PageUser
) -> HTMLResponse:
    dataset = _dataset(session, user, dataset_id)
    context = _detail_context(request, session, settings, user, dataset)
    return render(request, "datasets/detail.html", context, user=user, nav="datasets")


@router.get("/datasets/{dataset_id}/preview", response_class=HTMLResponse)
def preview_fragment(
    request: Request, dataset_id: str, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    """One page of rows (htmx swaps it in); a plain visit goes to the dataset's page."""
    dataset = _dataset(session, user, dataset_id)
    if not request.headers.get("HX-Request"):
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/datasets/{dataset.id}{query}#preview", status_code=303)
    context = {"dataset": dataset, "preview": _preview(settings, dataset, request)}
    return render(request, "datasets/_preview.html", context, user=user)


@router.post("/datasets/{dataset_id}/splits", dependencies=[CsrfChecked])
def split_submit(
    request: Request,
    dataset_id: str,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    key: Annotated[str, Form(max_length=100)] = "",
    validation_fraction: Annotated[str, Form(max_length=40)] = "",
    seed: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Make a train/validation split; htmx gets the splits section back."""
    lang = language(request)
    dataset = _dataset(session, user, dataset_id)
    form = {"key": key.strip(), "fraction": validation_fraction.strip(), "seed": seed.strip()}
    error, created, status = None, None, 201
    try:
        body = SplitCreate.model_validate(
            {"key": form["key"] or None,
             "validation_fraction": form["fraction"].translate(_LATIN_DIGITS) or "0.1",
             "seed": form["seed"].translate(_LATIN_DIGITS) or "0"}
        )  # fmt: skip
        created = service.split_dataset(
            session=session,
            settings=settings,
            dataset=dataset,
            key=body.key,
            validation_fraction=body.validation_fraction,
            seed=body.seed,
        )
    except ValidationError as exc:
        error, status = lang.gettext(_SPLIT_PROBLEMS[str(exc.errors()[0]["loc"][0])]), 400
    except StudioError as exc:
        if not request.headers.get("HX-Request"):
            raise  # a page with the message
        reason = lang.gettext("The split could not be made: %(reason)s")
        error, status = reason % {"reason": exc.detail}, exc.status_code
    if not request.headers.get("HX-Request"):
        if error is not None:
            raise InvalidInput(error)
        return RedirectResponse(f"/datasets/{dataset.id}#splits", status_code=303)
    session.refresh(dataset)
    context = {
        "dataset": dataset,
        "splits": dataset.splits,
        "split_form": form,
        "meta_keys": _meta_keys(settings, dataset),
        "split_error": error,
        "new_split": created.id if created else None,
    }
    return render(request, "datasets/_splits.html", context, user=user, status_code=status)


@router.post("/datasets/{dataset_id}/delete", dependencies=[CsrfChecked])
def delete_submit(
    dataset_id: str, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    dataset = _dataset(session, user, dataset_id, to_delete=True)
    deleted = dataset.id
    service.delete_dataset(session=session, settings=settings, dataset=dataset)
    return RedirectResponse(f"/datasets?deleted={deleted}", status_code=303)
