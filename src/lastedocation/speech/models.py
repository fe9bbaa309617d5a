"""Speech models in the registry: where their two forms live, and the bundled one.

A speech model's folder (`DATA_DIR/models/<id>/`) holds up to two forms of the same
Whisper weights:

    ctranslate2/    what faster-whisper serves (model.bin, config.json, tokenizer.json,
                    vocabulary.txt)
    transformers/   a Hugging Face Whisper folder (safetensors), what fine-tuning starts
                    from and what the Transformers serving path loads

The bundled Whisper base has only `ctranslate2/` until a run needs `transformers/`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from lastedocation.datasets.models import StudioFact
from lastedocation.errors import InvalidInput
from lastedocation.models.entries import ModelEntry
from lastedocation.models.registry import _add, _free_name, _staging, model_folder
from lastedocation.settings import Settings
from lastedocation.speech import bundled

CT2 = "ctranslate2"
HF = "transformers"
_FACT = "bundled_speech_model"


def ctranslate2_folder(settings: Settings, entry: ModelEntry) -> Path:
    return model_folder(settings, entry) / CT2


def transformers_folder(settings: Settings, entry: ModelEntry) -> Path:
    return model_folder(settings, entry) / HF


def require_speech(entry: ModelEntry, *, field: str = "model") -> ModelEntry:
    if entry.kind != "speech":
        raise InvalidInput(
            f"model {entry.name!r} is a text model; choose a speech (Whisper) model",
            field=field,
            model=entry.name,
        )
    return entry


def register_bundled_once(*, session: Session, settings: Settings) -> ModelEntry | None:
    """Register Whisper base as a shared speech model on the studio's first start."""
    if session.get(StudioFact, _FACT) is not None:
        return None
    staged = _staging(settings) / "model"
    bundled.link_into(staged / CT2)
    entry = ModelEntry(
        name=_free_name(session, bundled.NAME),
        source="bundled",
        kind="speech",
        folder="",
        base_model=bundled.HUB_ID,
        summary={
            "architecture": "whisper",
            "format": CT2,
            "parameters": 74_000_000,
            "licence": bundled.LICENCE,
            "dtype": "float16",
            "weight_files": [f"{CT2}/model.bin"],
            "has_tokenizer": True,
            "total_bytes": sum(p.stat().st_size for p in (staged / CT2).iterdir()),
        },
    )
    _add(session, settings, entry, staged)
    staged.parent.rmdir()
    session.add(StudioFact(key=_FACT, value=str(entry.id)))
    session.commit()
    return entry


def whisper_form(folder: Path, *, weights_present: bool = True) -> str | None:
    """`ctranslate2` or `transformers` when `folder` holds a Whisper model in that form,
    else None (a text model, or not a model). `weights_present=False` judges by the
    config alone (before the weights are downloaded)."""
    config = folder / "config.json"
    if not config.is_file() or config.stat().st_size > 1024 * 1024:
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    weights = (folder / "model.bin").is_file() or not weights_present
    if weights and "alignment_heads" in data and "lang_ids" in data:
        return CT2  # faster-whisper's layout (Systran/faster-whisper-*)
    if data.get("model_type") == "whisper":
        return HF
    return None


def stage_speech_model(source: Path, staged: Path) -> dict[str, Any]:
    """Copy a Whisper folder into `staged/<form>/` (hard links where possible) and make
    the CTranslate2 form that faster-whisper serves when only Transformers weights came;
    the summary for the registry."""
    from lastedocation.models.registry import copy_tree
    from lastedocation.models.weights import check_model_folder

    form = whisper_form(source)
    if form is None:
        raise InvalidInput(f"{source.name!r} is not a Whisper model folder", field="path")
    copy_tree(source, staged / form)
    summary: dict[str, Any] = {"architecture": "whisper", "format": form}
    if form == HF:
        summary |= check_model_folder(staged / HF)  # safetensors only, bounded headers
        from lastedocation.models.whisper_convert import transformers_to_ctranslate2

        transformers_to_ctranslate2(staged / HF, staged / CT2)
    files = [p for p in staged.rglob("*") if p.is_file()]
    summary["total_bytes"] = sum(p.stat().st_size for p in files)
    summary["has_tokenizer"] = (staged / CT2 / "tokenizer.json").is_file()
    return summary


def register_speech_folder(
    *,
    session: Session,
    settings: Settings,
    source: Path,
    origin: str,
    name: str | None,
    fallback: str,
    owner_id: int | None,
    base_model: str | None,
) -> ModelEntry:
    """Register a Whisper folder (a Hub snapshot, an admin's server folder) as a speech
    model; its files are copied into the studio (both forms live side by side)."""
    from lastedocation.models.registry import _check_name

    staged = _staging(settings) / "model"
    try:
        summary = stage_speech_model(source, staged)
        entry = ModelEntry(
            name=_check_name(session, name) if name else _free_name(session, fallback),
            source=origin,
            kind="speech",
            folder="",
            base_model=base_model,
            owner_id=owner_id,
            summary=summary,
        )
        return _add(session, settings, entry, staged)
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)
