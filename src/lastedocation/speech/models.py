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

from pathlib import Path

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
