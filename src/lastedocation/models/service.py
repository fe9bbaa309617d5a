"""Model operations beyond the registry rows: import (archive, Hub), export, push,
evaluations. Routes call these; the file-level work lives in archive / weights /
export / card / hub, and the evaluation metrics in `lastedocation.inference`."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lastedocation.auth.models import User
from lastedocation.datasets.service import get_dataset, records_path
from lastedocation.errors import Conflict, InvalidInput, NotFound
from lastedocation.models import archive, hub, registry
from lastedocation.models import export as exporting
from lastedocation.models.entries import ModelEntry, ModelEvaluation
from lastedocation.models.schemas import EvaluationCreate
from lastedocation.paths import hide_data_dir
from lastedocation.settings import MB, Settings

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def import_archive(
    *, session: Session, settings: Settings, user: User, path: Path, filename: str
) -> ModelEntry:
    """An uploaded archive of a model folder (the route received it into `path`, named
    `filename` by the client), extracted safely and checked. It reads and writes every
    byte of the model: call it in a worker thread, never on the event loop."""
    name = Path(filename).name
    if not name.lower().endswith(ARCHIVE_SUFFIXES):
        raise InvalidInput(
            f"{name!r} is not a model archive: upload a .zip or .tar.gz of a model folder",
            field="file",
        )
    settings.ensure_dirs()
    staging = settings.tmp_dir / f"model-import-{uuid.uuid4().hex}"
    try:
        folder = archive.extract_archive(
            path,
            staging,
            max_total_bytes=settings.max_model_extracted_mb * MB,
            max_files=settings.max_archive_files,
            max_ratio=settings.max_archive_ratio,
        )
        suffix = next(s for s in ARCHIVE_SUFFIXES if name.lower().endswith(s))
        return registry.register_staged(
            session=session,
            settings=settings,
            staged=folder,
            source="upload",
            name=None,
            fallback=name[: -len(suffix)],
            owner_id=user.id,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def import_hub(
    *,
    session: Session,
    settings: Settings,
    user: User,
    repo_id: str,
    revision: str | None,
    name: str | None,
) -> ModelEntry:
    """Download once into the studio's Hub cache and register the snapshot (hard links
    to the cached files where the file system allows)."""
    snapshot = hub.download_model(repo_id, revision, settings.hub_cache_dir)
    from lastedocation.speech.models import register_speech_folder, whisper_form

    if whisper_form(snapshot) is not None:  # e.g. Systran/faster-whisper-small, openai/whisper-*
        return register_speech_folder(
            session=session, settings=settings, source=snapshot, origin="hub", name=name,
            fallback=repo_id.replace("/", "--"), owner_id=None if user.is_admin else user.id,
            base_model=repo_id,
        )  # fmt: skip
    staging = settings.tmp_dir / f"model-hub-{uuid.uuid4().hex}"
    try:
        registry.copy_tree(snapshot, staging)
        return registry.register_staged(
            session=session,
            settings=settings,
            staged=staging,
            source="hub",
            name=name,
            fallback=repo_id.replace("/", "--"),
            owner_id=None if user.is_admin else user.id,
            base_model=repo_id,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_model(
    *,
    session: Session,
    settings: Settings,
    entry: ModelEntry,
    archive_format: str | None,
    license: str | None,
) -> dict[str, Any]:
    """Write `exports/<id>/<name>/` (and its archive), then load it fresh and generate."""
    registry.require_text(entry)
    out_root = registry.export_folder(settings, entry)
    shutil.rmtree(out_root, ignore_errors=True)
    out_root.mkdir(parents=True)
    folder = out_root / entry.name
    source = registry.model_folder(settings, entry)
    exporting.export_model(source, folder, card_info=_card_info(session, entry, license))
    smoke = exporting.smoke_test(folder, expected_chat_template=_chat_template(source))
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    # names, never the server's path: the export is fetched as an archive or pushed
    result: dict[str, Any] = {"name": entry.name, "files": files, "smoke_test": smoke}
    result["archive"] = None
    if archive_format is not None:
        path = out_root / f"{entry.name}.{archive_format}"
        archive.make_archive(folder, path)
        result["archive"] = {"name": path.name, "bytes": path.stat().st_size}
    return result


def _chat_template(folder: Path) -> str | None:
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(folder).chat_template
    return template if isinstance(template, str) else None


def _card_info(session: Session, entry: ModelEntry, license: str | None) -> dict[str, Any]:
    evaluations = list_evaluations(session=session, entry=entry)
    done = [e for e in evaluations if e.state == "completed" and e.results]
    return {
        "name": entry.name,
        "base_model": entry.base_model,
        "dataset_id": entry.dataset_id,
        "config": entry.config,
        "metrics": entry.metrics,
        "evaluation": done[0].results if done else None,
        "license": license,
    }


def export_archive(*, settings: Settings, entry: ModelEntry) -> Path:
    folder = registry.export_folder(settings, entry)
    found = sorted(p for p in folder.glob(f"{entry.name}.*") if p.is_file())
    if not found:
        raise NotFound(
            f"model {entry.id} has no exported archive yet: POST /api/v1/models/{entry.id}/export",
            model_id=entry.id,
        )
    return found[-1]


def push(
    *,
    session: Session,
    settings: Settings,
    entry: ModelEntry,
    repo_id: str,
    token: str,
    private: bool,
) -> dict[str, Any]:
    folder = registry.export_folder(settings, entry) / entry.name
    if not folder.is_dir():
        export_model(
            session=session, settings=settings, entry=entry, archive_format=None, license=None
        )
    url = hub.push_to_hub(
        folder,
        repo_id,
        token=token,
        private=private,
        commit_message=f"Upload {entry.name} from LASTEDOCATION",
    )
    return {"url": url, "repo_id": repo_id}


def queue_evaluation(
    *, session: Session, user: User, entry: ModelEntry, body: EvaluationCreate
) -> ModelEvaluation:
    registry.require_text(entry)
    get_dataset(session=session, dataset_id=body.dataset_id, user=user)
    evaluation = ModelEvaluation(
        model_id=entry.id,
        dataset_id=body.dataset_id,
        state="queued",
        options={"max_rows": body.max_rows, "max_new_tokens": body.max_new_tokens},
    )
    session.add(evaluation)
    session.commit()
    return evaluation


def list_evaluations(*, session: Session, entry: ModelEntry) -> list[ModelEvaluation]:
    query = (
        select(ModelEvaluation)
        .where(ModelEvaluation.model_id == entry.id)
        .order_by(ModelEvaluation.id.desc())
    )
    return list(session.scalars(query))


def compare_models(
    *, session: Session, user: User, model_ids: list[int], dataset_id: int | None
) -> dict[str, Any]:
    """The latest completed evaluation of each model side by side (on `dataset_id`,
    when given), with each metric's change against the first model (the baseline)."""
    from lastedocation.inference.evaluate import compare

    if len(model_ids) < 2:
        raise InvalidInput("give at least two model ids to compare", field="ids")
    rows: list[dict[str, Any]] = []
    for model_id in model_ids:
        entry = registry.get_model(session=session, model_id=model_id, user=user)
        done = [
            e
            for e in list_evaluations(session=session, entry=entry)
            if e.state == "completed" and (dataset_id is None or e.dataset_id == dataset_id)
        ]
        if not done:
            raise Conflict(
                f"model {model_id} has no completed evaluation"
                + (f" on dataset {dataset_id}" if dataset_id is not None else "")
                + f": POST /api/v1/models/{model_id}/evaluations first",
                model_id=model_id,
            )
        rows.append(
            {
                "model_id": model_id,
                "name": entry.name,
                "evaluation_id": done[0].id,
                "dataset_id": done[0].dataset_id,
                "results": done[0].results,
            }
        )
    baseline = rows[0]["results"] or {}
    for row in rows[1:]:
        row["against_baseline"] = compare(baseline, row["results"] or {})
    return {"baseline": rows[0]["model_id"], "models": rows}


def run_next_evaluation(*, session: Session, settings: Settings) -> ModelEvaluation | None:
    """Run the oldest queued evaluation to its end (the evaluator thread calls this)."""
    from lastedocation.inference.evaluate import evaluate_folder

    query = select(ModelEvaluation).where(ModelEvaluation.state == "queued")
    evaluation = session.scalars(query.order_by(ModelEvaluation.id)).first()
    if evaluation is None:
        return None
    evaluation.state = "running"
    session.commit()
    try:
        entry = session.get(ModelEntry, evaluation.model_id)
        dataset = get_dataset(session=session, dataset_id=evaluation.dataset_id or -1)
        assert entry is not None
        evaluation.results = evaluate_folder(
            registry.model_folder(settings, entry),
            records_path(settings, dataset),
            **evaluation.options,
        )
        evaluation.state = "completed"
    except Exception as exc:  # stored for the user: the evaluation failed, not the studio
        session.rollback()
        message = hide_data_dir(str(exc) or type(exc).__name__, settings.data_dir)
        evaluation.state, evaluation.message = "failed", message
    evaluation.finished_at = datetime.now(UTC)
    session.commit()
    return evaluation
