"""The model registry: every model the studio can chat with, evaluate and export.

A completed run registers its model (with its base, dataset, config, metrics and
checkpoint lineage); an admin registers a folder already on the server; anyone imports
an archive or a Hub model. Members see their own models and the shared ones (no owner:
registered by an admin from a folder or the Hub); another member's ids answer 404.
Files of registered models live in `DATA_DIR/models/<id>/`, except `local` folders,
which are used where they are and never deleted by the studio.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lastedocation import ownership
from lastedocation.auth.models import User
from lastedocation.datasets.schemas import MAX_DB_INT
from lastedocation.errors import Conflict, InvalidInput, NotFound
from lastedocation.models.entries import ModelEntry
from lastedocation.models.weights import check_model_folder
from lastedocation.paths import server_path
from lastedocation.runs.models import Run
from lastedocation.settings import Settings
from lastedocation.training.events import effective_steps, read_events

if TYPE_CHECKING:
    from lastedocation.inference.cache import ModelCache

log = logging.getLogger("lastedocation.models")
NAME_RE = re.compile(r"^[\w][\w.\-]{0,99}$")


def model_folder(settings: Settings, entry: ModelEntry) -> Path:
    """The Hugging Face folder of a model (weights, config, tokenizer)."""
    folder = Path(entry.folder)
    return folder if folder.is_absolute() else settings.data_dir / folder


def export_folder(settings: Settings, entry: ModelEntry) -> Path:
    """Where the model's exports (folder, archives) are written."""
    return settings.data_dir / "exports" / f"{entry.id:06d}"


def list_models(
    *, session: Session, user: User | None, kind: str | None = None
) -> list[ModelEntry]:
    """The models `user` may see, newest first; only text or speech ones with `kind`."""
    query = select(ModelEntry).where(ownership.visible(user, "model", ModelEntry.owner_id))
    if kind is not None:
        query = query.where(ModelEntry.kind == kind)
    return list(session.scalars(query.order_by(ModelEntry.id.desc())))


def require_text(entry: ModelEntry, *, field: str = "model") -> ModelEntry:
    """Chat, evaluation and export work on text models: a speech model is refused."""
    if entry.kind != "text":
        raise InvalidInput(
            f"model {entry.name!r} is a speech (Whisper) model: use it on the speech page "
            "or with /v1/audio/transcriptions",
            field=field,
            model=entry.name,
        )
    return entry


def get_model(
    *, session: Session, model_id: int, user: User | None, to_change: bool = False
) -> ModelEntry:
    """The model, if `user` may see it (and change or delete it, with `to_change`)."""
    entry = session.get(ModelEntry, model_id)
    if entry is None:
        raise NotFound(f"no model with id {model_id}", model_id=model_id)
    ownership.check(user, "model", model_id, entry.owner_id, "change" if to_change else "see")
    return entry


def resolve_model(*, session: Session, user: User | None, name: str) -> ModelEntry:
    """A model by its name or its numeric id (as clients of the OpenAI API send it)."""
    entry = session.scalars(select(ModelEntry).where(ModelEntry.name == name)).first()
    if entry is None and name.isdigit() and int(name) <= MAX_DB_INT:
        entry = session.get(ModelEntry, int(name))
    if entry is None or not ownership.may_see(user, "model", entry.owner_id):
        raise NotFound(f"no model named {name!r}: GET /v1/models lists yours", model=name)
    return entry


def _free_name(session: Session, wanted: str) -> str:
    base = re.sub(r"[^\w.\-]+", "-", wanted).strip("-.")[:90] or "model"
    name, n = base, 1
    while session.scalars(select(ModelEntry.id).where(ModelEntry.name == name)).first():
        n += 1
        name = f"{base}-{n}"
    return name


def _check_name(session: Session, name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"model name {name!r} is not allowed: use 1-100 letters, digits, '.', '-' or '_'",
            field="name",
        )
    if session.scalars(select(ModelEntry.id).where(ModelEntry.name == name)).first():
        raise Conflict(f"a model named {name!r} exists already: choose another name", name=name)
    return name


def copy_tree(source: Path, dest: Path) -> None:
    """Hard links where the file system allows (a model's weights are large), else copies."""

    def link(src: str, dst: str) -> None:
        try:  # the file itself, not a link to it (the Hub cache's snapshots are links)
            os.link(os.path.realpath(src), dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link)


def _add(
    session: Session, settings: Settings, entry: ModelEntry, staged: Path | None
) -> ModelEntry:
    """Insert the row; move a staged folder into `models/<id>` once the id is known."""
    session.add(entry)
    session.flush()
    if staged is not None:
        entry.folder = f"models/{entry.id:06d}"
        target = settings.data_dir / entry.folder
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    session.commit()
    return entry


def _staging(settings: Settings) -> Path:
    return Path(tempfile.mkdtemp(prefix="model-", dir=settings.tmp_dir))


def register_run(*, session: Session, settings: Settings, run: Run) -> ModelEntry | None:
    """Register a completed run's model (once; a second call returns the same entry)."""
    existing = session.scalars(select(ModelEntry).where(ModelEntry.run_id == run.id)).first()
    if existing is not None or run.state != "completed":
        return existing
    run_dir = settings.data_dir / run.folder
    staging = _staging(settings)
    speech = run.config.get("task") == "speech"
    weights = staging / "model"
    try:
        if speech:  # both forms: Transformers (trained) and CTranslate2 (faster-whisper)
            from lastedocation.models.whisper_convert import CT2, HF, transformers_to_ctranslate2

            weights = staging / "model" / HF
            copy_tree(run_dir / "model", weights)
            transformers_to_ctranslate2(weights, staging / "model" / CT2)
        elif (run_dir / "model" / "config.json").is_file():
            copy_tree(run_dir / "model", staging / "model")
        elif (run_dir / "adapter").is_dir():  # LoRA without merge: merge for serving
            from lastedocation.models.export import merge_lora
            from lastedocation.training.config import load_config
            from lastedocation.training.model_source import resolve_folder

            # the trainer's config (in the run folder) has the base model's path
            base = resolve_folder(load_config(run_dir / "config.yaml").model)
            merge_lora(run_dir / "adapter", base, staging / "model")
        else:
            raise InvalidInput(f"run {run.id} completed without a model folder")
        summary = check_model_folder(weights)
        entry = ModelEntry(
            name=_free_name(session, f"{run.name}-run{run.id}"),
            source="run",
            kind="speech" if speech else "text",
            folder="",
            base_model=_base_name(session, run.config),
            run_id=run.id,
            dataset_id=run.dataset_id,
            owner_id=run.owner_id,
            config=run.config,
            metrics=_run_metrics(run_dir, speech=speech),
            lineage=_lineage(run_dir, run),
            summary=summary,
        )
        return _add(session, settings, entry, staging / "model")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _base_name(session: Session, config: dict[str, Any]) -> str:
    """What the run started from, by name: never a path on the server."""
    model = config.get("model", {})
    source = model.get("source", "scratch")
    if source == "scratch":
        return f"scratch:{model.get('preset', 'llama-tiny')}"
    if source == "hub":
        return str(model.get("hub_id"))
    if source == "registry":
        base = session.get(ModelEntry, model.get("model_id") or 0)
        return base.name if base is not None else f"model {model.get('model_id')}"
    return Path(str(model.get("path"))).name  # an admin's folder: its name only


def _run_metrics(run_dir: Path, *, speech: bool = False) -> dict[str, Any]:
    events = list(read_events(run_dir / "events.jsonl"))
    evals = effective_steps(events, "eval")
    metrics = effective_steps(events)
    out: dict[str, Any] = {}
    if evals:
        last, best = evals[-1], min(evals, key=lambda e: e.get("val_loss", float("inf")))
        out["final_eval"] = {k: v for k, v in last.items() if k not in ("seq", "type", "time")}
        out["best_eval"] = {k: v for k, v in best.items() if k not in ("seq", "type", "time")}
        if speech and evals[0]["step"] == 0:  # the base model on the same validation clips
            out["base_eval"] = {
                k: v for k, v in evals[0].items() if k not in ("seq", "type", "time")
            }
    if metrics:
        out["final_train_loss"] = metrics[-1].get("loss")
        out["steps"] = metrics[-1].get("step")
    return out


def _lineage(run_dir: Path, run: Run) -> dict[str, Any]:
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*") if p.is_dir())
    manifest = run_dir / "checkpoints" / (checkpoints[-1] if checkpoints else "") / "manifest.json"
    final: dict[str, Any] = {}
    if checkpoints and manifest.is_file():
        final = json.loads(manifest.read_text(encoding="utf-8")).get("state", {})
    return {
        "run_id": run.id,
        "run_name": run.name,
        "checkpoints": checkpoints,
        "final_step": final.get("step", run.step),
        "best_step": final.get("best_step"),
    }


def register_folder(
    *, session: Session, settings: Settings, path: Path, name: str | None
) -> ModelEntry:
    """An admin registers a Hugging Face folder on the server (under the allowed roots);
    it is used in place."""
    folder = server_path(
        path, roots=settings.server_roots, data_dir=settings.data_dir, field="path", kind="folder"
    )
    from lastedocation.speech.models import register_speech_folder, whisper_form

    if whisper_form(folder) is not None:  # a speech model: copied, to hold both its forms
        return register_speech_folder(
            session=session, settings=settings, source=folder, origin="folder", name=name,
            fallback=folder.name, owner_id=None, base_model=folder.name,
        )  # fmt: skip
    summary = check_model_folder(folder)
    entry = ModelEntry(
        name=_check_name(session, name) if name else _free_name(session, folder.name),
        source="local",
        folder=str(folder),
        base_model=folder.name,
        summary=summary,
    )
    return _add(session, settings, entry, None)


def register_staged(
    *,
    session: Session,
    settings: Settings,
    staged: Path,
    source: str,
    name: str | None,
    fallback: str,
    owner_id: int | None,
    base_model: str | None = None,
) -> ModelEntry:
    """A model folder the studio prepared (an extracted archive, a Hub download).
    A `name` the user chose must be free; otherwise `fallback` (the file name, the
    repo id) is made free with a number."""
    summary = check_model_folder(staged)
    entry = ModelEntry(
        name=_check_name(session, name) if name else _free_name(session, fallback),
        source=source,
        folder="",
        base_model=base_model,
        owner_id=owner_id,
        summary=summary,
    )
    return _add(session, settings, entry, staged)


def delete_model(
    *, session: Session, settings: Settings, entry: ModelEntry, cache: ModelCache | None = None
) -> None:
    """Forget the model (unloading it from the chat cache) and delete its files, except a
    `local` folder, which the studio never owned."""
    if cache is not None:
        cache.unload(model_folder(settings, entry))
    folder = None if entry.source == "local" else model_folder(settings, entry)
    exports = export_folder(settings, entry)
    session.delete(entry)
    session.commit()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(exports, ignore_errors=True)  # its archives go with it
