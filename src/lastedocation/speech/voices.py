"""Which voices the studio speaks with: espeak-ng's Persian voice, always, and the MMS
and Piper voices an admin registers.

espeak-ng's voice needs no registration; it is listed where the binary is installed.
A registered voice is a folder `DATA_DIR/voices/<id>/` with its model files and a
small `voice.json` (engine, name, language, licence, note, source). An admin fills it
from a Hub repository (downloaded through the studio's Hub cache) or from a server
folder under `server_roots`; members only name voices by id. Whatever is read back
from a voice folder is checked again (bounded JSON, model files present), and a
voice that does not load is refused when it is registered, not when someone listens.

`resolve` maps OpenAI's `model` and `voice` onto a voice: "tts-1" and "tts-1-hd" mean
the default voice's engine, an engine name ("espeak", "mms", "piper") picks that
engine, and OpenAI's voice names ("alloy", "nova", ...) mean the default Persian voice.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lastedocation.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, StudioError
from lastedocation.paths import server_path
from lastedocation.settings import Settings
from lastedocation.speech.engines import espeak, load_speaker, piper, read_json, vits
from lastedocation.speech.engines.espeak import VOICE as ESPEAK_VOICE
from lastedocation.speech.tts import ENGINES, EngineName, Voice

log = logging.getLogger("lastedocation.speech")

VOICE_FILE = "voice.json"
MAX_VOICES = 200  # folders a listing reads
VOICE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
     "verse", "marin", "cedar"}
)  # fmt: skip
OPENAI_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
Registrable = Literal["mms", "piper"]


class VoiceFile(BaseModel):
    """`voice.json` in a voice folder."""

    model_config = ConfigDict(extra="ignore")
    engine: Registrable
    name: str = Field(min_length=1, max_length=100)
    language: str = Field(min_length=2, max_length=16)
    licence: str = Field(min_length=1, max_length=100)
    note: str = Field(default="", max_length=500)
    source: str = Field(default="", max_length=300)


def list_voices(settings: Settings) -> list[Voice]:
    """espeak-ng's voice first (where espeak-ng is installed), then the registered ones
    by id. Asked for by id, espeak-ng's voice is always found, and synthesis says
    clearly that the binary is missing."""
    voices = [ESPEAK_VOICE] if espeak.available() else []
    folder = settings.voices_dir
    if not folder.is_dir():
        return voices
    names = sorted(p.name for p in folder.iterdir() if VOICE_ID.fullmatch(p.name))
    for name in names[:MAX_VOICES]:
        try:
            voices.append(_read_voice(folder / name))
        except StudioError as exc:  # a damaged folder hides that voice, not the list
            log.warning("voice folder %s skipped: %s", name, exc.detail)
    return voices


def _read_voice(folder: Path) -> Voice:
    about = read_json(folder / VOICE_FILE, VoiceFile, what=f"voice {folder.name!r}")
    engine_module = vits if about.engine == "mms" else piper
    return Voice(
        id=folder.name,
        engine=about.engine,
        name=about.name,
        language=about.language,
        sample_rate=engine_module.check_folder(folder),
        licence=about.licence,
        note=about.note,
        folder=folder,
    )


def find_voice(settings: Settings, voice_id: str) -> Voice | None:
    if voice_id == ESPEAK_VOICE.id:
        return ESPEAK_VOICE
    folder = settings.voices_dir / voice_id
    if not VOICE_ID.fullmatch(voice_id) or not (folder / VOICE_FILE).is_file():
        return None
    return _read_voice(folder)


def resolve(settings: Settings, *, model: str, voice: str) -> Voice:
    """The voice an OpenAI-style request means; InvalidInput names `model` or `voice`."""
    engine: EngineName | None = None
    if model in ENGINES:
        engine = model  # type: ignore[assignment]
    elif model not in OPENAI_MODELS:
        raise InvalidInput(
            f"model {model!r} is unknown: use tts-1 or tts-1-hd (the default voice), or an "
            f"engine: {', '.join(ENGINES)}",
            field="model",
        )
    if voice.lower() in OPENAI_VOICES:
        return _default_voice(settings, engine)
    found = find_voice(settings, voice)
    if found is None:
        raise InvalidInput(
            f"voice {voice!r} is unknown: GET /api/v1/speech/voices lists the voices "
            "(OpenAI's names, such as alloy, mean the default Persian voice)",
            field="voice",
        )
    if engine is not None and found.engine != engine:
        raise InvalidInput(
            f"voice {voice!r} is a {found.engine} voice, and model asks for {engine}",
            field="voice",
        )
    return found


def _default_voice(settings: Settings, engine: EngineName | None) -> Voice:
    default = find_voice(settings, settings.tts_default_voice)
    if default is None:
        log.warning("default voice %r is missing; espeak-ng's is used", settings.tts_default_voice)
        default = ESPEAK_VOICE
    if engine is None or default.engine == engine:
        return default
    for voice in list_voices(settings):
        if voice.engine == engine:
            return voice
    raise InvalidInput(
        f"no {engine} voice is registered: an admin adds one with POST /api/v1/speech/voices",
        field="model",
    )


def add_voice(
    settings: Settings,
    *,
    voice_id: str,
    engine: str,
    repo_id: str | None = None,
    path: str | None = None,
    piper_voice: str | None = None,
    revision: str | None = None,
    name: str | None = None,
    licence: str | None = None,
    note: str | None = None,
    language: str = "fa",
) -> Voice:
    """Register a voice from the Hub (`repo_id`) or a server folder (`path`, admins
    only, under `server_roots`). The voice is loaded and tried before it is kept."""
    if not VOICE_ID.fullmatch(voice_id) or voice_id == ESPEAK_VOICE.id:
        raise InvalidInput(
            "id: 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter "
            f"or digit (and not {ESPEAK_VOICE.id!r})",
            field="id",
        )
    if engine not in ("mms", "piper"):
        raise InvalidInput("engine: register an mms or a piper voice", field="engine")
    if (repo_id is None) == (path is None):
        raise InvalidInput("give either repo_id (from the Hub) or path (on the server)")
    target = settings.voices_dir / voice_id
    if target.exists():
        raise Conflict(f"voice {voice_id!r} exists; remove it first", field="id")
    module = vits if engine == "mms" else piper
    if path is not None:
        source = server_path(
            path, roots=settings.server_roots, data_dir=settings.data_dir, field="path",
            kind="folder",
        )  # fmt: skip
    elif engine == "mms":
        source = vits.download(repo_id or "", revision=revision, cache_dir=settings.hub_cache_dir)
    else:
        source = piper.download(
            repo_id or "", voice=piper_voice, revision=revision, cache_dir=settings.hub_cache_dir
        )
    files = module.voice_files(source)
    if path is not None:  # the Hub cache links to its blobs; an admin's folder may not
        links = [f.name for f, _ in files if f.is_symlink()]
        if links:
            raise InvalidInput(f"path: {', '.join(links)} are links; copy the files", field="path")
    limit = settings.max_voice_mb * 1024 * 1024
    size = sum(f.stat().st_size for f, _ in files)
    if size > limit:
        raise PayloadTooLarge(
            f"the voice's files take {size // 1024 // 1024} MB, over the limit of "
            f"{settings.max_voice_mb} MB (LASTEDOCATION_MAX_VOICE_MB)",
            limit_mb=settings.max_voice_mb,
        )
    if engine == "mms":
        licence = vits.licence_for(repo_id, licence)
    elif licence is None:
        licence = piper.licence_in_card(source) or "unknown: check the voice's model card"
    about = VoiceFile(
        engine=engine,  # type: ignore[arg-type]
        name=name or voice_id,
        language=language,
        licence=licence,
        note=note or (vits.NOTE if engine == "mms" else piper.NOTE),
        source=repo_id or "a server folder",
    )
    return _install(settings, voice_id, files, about, field="path" if path else "repo_id")


def _install(
    settings: Settings,
    voice_id: str,
    files: list[tuple[Path, str]],
    about: VoiceFile,
    *,
    field: str,
) -> Voice:
    """Copy into a hidden folder, try the voice there, then rename: a voice is complete
    or absent, and two admins adding one id at once get one voice and one Conflict."""
    settings.voices_dir.mkdir(parents=True, exist_ok=True)
    staging = settings.voices_dir / f".adding-{voice_id}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        for source, name in files:
            shutil.copyfile(source, staging / name)  # follows the Hub cache's links
        (staging / VOICE_FILE).write_text(about.model_dump_json(indent=2), encoding="utf-8")
        voice = _read_voice(staging)
        _try(voice, field=field)
        target = settings.voices_dir / voice_id
        try:
            staging.rename(target)
        except OSError:
            raise Conflict(f"voice {voice_id!r} exists; remove it first", field="id") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _read_voice(target)


def _try(voice: Voice, *, field: str) -> None:
    """Load the voice and say a word with it. Any failure here is the files' fault
    (an admin's folder, a Hub repository), so it is a 400 that says what went wrong."""
    try:
        load_speaker(voice).synthesize("سلام")
    except StudioError as exc:
        raise InvalidInput(f"{field}: the voice does not work: {exc.detail}", field=field) from None
    except Exception as exc:  # a model that loads but cannot run (shapes, ids, ...)
        problem = f"{type(exc).__name__}: {str(exc)[:300]}"
        raise InvalidInput(f"{field}: the voice does not work ({problem})", field=field) from None


def remove_voice(settings: Settings, voice_id: str) -> None:
    if voice_id == ESPEAK_VOICE.id:
        raise InvalidInput("espeak-ng's voice is built in and cannot be removed", field="id")
    folder = settings.voices_dir / voice_id
    if not VOICE_ID.fullmatch(voice_id) or not folder.is_dir():
        raise NotFound(f"no voice {voice_id!r}", field="id")
    shutil.rmtree(folder)
