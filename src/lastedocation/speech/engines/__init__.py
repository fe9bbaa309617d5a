"""The text-to-speech engines, and what they share: bounded reads of the JSON files in
a voice folder, and downloads from the Hugging Face Hub that fail fast and clearly.

    espeak.py   espeak-ng's Persian voice (a binary; nothing to download)
    vits.py     MMS-TTS (facebook/mms-tts-fas) and other VITS voices, through transformers
    piper.py    Piper voices (an .onnx model and its .onnx.json), through piper-tts

Each engine module is imported only when one of its voices is used: a server that
speaks only with espeak-ng never loads torch for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from pydantic import BaseModel, ValidationError

from lastedocation.errors import InvalidInput, NotFound
from lastedocation.models.hub import HTTPError, HubUnavailable, check_repo_id
from lastedocation.speech.tts import Speaker, Voice

MAX_JSON_BYTES = 1024 * 1024  # a voice's configs are a few KB; a tokenizer vocab a few more
Model = TypeVar("Model", bound=BaseModel)


def load_speaker(voice: Voice, *, espeak_timeout_s: float = 60.0) -> Speaker:
    """A loaded `voice`, ready to synthesise."""
    if voice.engine == "espeak":
        from lastedocation.speech.engines.espeak import EspeakSpeaker

        return EspeakSpeaker(voice, timeout_s=espeak_timeout_s)
    if voice.folder is None:
        raise InvalidInput(f"voice {voice.id!r} has no model folder", field="voice")
    if voice.engine == "mms":
        from lastedocation.speech.engines.vits import VitsSpeaker

        return VitsSpeaker(voice)
    from lastedocation.speech.engines.piper import PiperSpeaker

    return PiperSpeaker(voice)


def read_json(path: Path, model: type[Model], *, what: str) -> Model:
    """`path` parsed into `model`, if it is at most MAX_JSON_BYTES (pydantic's parser
    bounds the nesting depth too). Problems name the file and the field."""
    try:
        size = path.stat().st_size
    except OSError:
        raise InvalidInput(f"{what}: {path.name} is missing", file=path.name) from None
    if size > MAX_JSON_BYTES:
        raise InvalidInput(
            f"{what}: {path.name} is {size} bytes, over the limit of {MAX_JSON_BYTES}",
            file=path.name,
        )
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "the file"
        raise InvalidInput(
            f"{what}: {path.name} is not valid ({where}: {problem['msg']})",
            file=path.name,
            field=where,
        ) from None


def hub_snapshot(
    repo_id: str,
    *,
    revision: str | None,
    cache_dir: Path,
    allow_patterns: list[str],
    offline_hint: str,
) -> Path:
    """Files of a Hub repository, downloaded into `cache_dir` (once) with huggingface_hub.
    Offline this fails within a second or so, naming the Hub and what to do instead."""
    from huggingface_hub import snapshot_download

    check_repo_id(repo_id)
    try:
        folder = snapshot_download(
            repo_id=repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=allow_patterns,
        )
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError):
        raise NotFound(
            f"{repo_id!r} (revision {revision or 'main'}) is not on the Hugging Face Hub, or "
            "is private or gated; check the id",
            field="repo_id",
        ) from None
    except (OSError, ValueError, HfHubHTTPError, HTTPError) as exc:  # offline, DNS, the Hub failing
        raise HubUnavailable(
            f"cannot download {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: "
            f"{_first_line(exc)}). If this server is offline (or HF_HUB_OFFLINE=1 is set), "
            f"{offline_hint}",
            repo_id=repo_id,
        ) from None
    return Path(folder)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def problem(exc: BaseException, folder: Path) -> str:
    """A library's error message, without the server path of the voice folder: the
    OpenAI-compatible routes show messages to members as they are."""
    text = str(exc).replace(str(folder.resolve()), "<voice>").replace(str(folder), "<voice>")
    return text[:300]
