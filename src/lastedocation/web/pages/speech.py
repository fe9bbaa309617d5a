"""The speech page: Persian speech to text and text to speech, in the browser.

The page itself holds no speech logic. It lists what the user may choose from (the
speech models they may see, the languages Whisper knows, the server's voices) and its
script (`static/js/speech.js`) calls the same APIs outside clients use: the background
transcription jobs under `/api/v1/speech/transcriptions` (upload, live segments over
SSE, cancel, download) and the OpenAI-compatible `POST /v1/audio/speech`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from lastedocation.api.deps import SessionDep, SettingsDep
from lastedocation.models import registry
from lastedocation.models.entries import ModelEntry
from lastedocation.speech import voices as voice_list
from lastedocation.web.deps import PageUser
from lastedocation.web.render import render

router = APIRouter(include_in_schema=False)

# Whisper's language codes offered first; "auto" lets the model detect the language.
# The names are English here and translated on the page.
LANGUAGES: tuple[tuple[str, str], ...] = (
    ("fa", "Persian"),
    ("auto", "Detect the language"),
    ("en", "English"),
    ("ar", "Arabic"),
    ("tr", "Turkish"),
    ("az", "Azerbaijani"),
    ("ps", "Pashto"),
    ("ur", "Urdu"),
    ("ru", "Russian"),
    ("fr", "French"),
    ("de", "German"),
    ("es", "Spanish"),
)
FORMATS = ("wav", "mp3", "opus", "flac")  # what the page offers of POST /v1/audio/speech's
ENGINE_NAMES = {"espeak": "eSpeak NG", "mms": "MMS-TTS", "piper": "Piper"}
SAMPLE_TEXT = "سلام! این استودیو متن فارسی را با صدای بلند می‌خواند."


@router.get("/speech", response_class=HTMLResponse)
def speech_page(
    request: Request, session: SessionDep, settings: SettingsDep, user: PageUser, model: str = ""
) -> HTMLResponse:
    """`?model=ID` (a speech model's page links here) preselects that model."""
    models = registry.list_models(session=session, user=user, kind="speech")
    voices = voice_list.list_voices(settings)
    context = {
        "speech_models": models,
        "default_model": _default_model(models, model.strip() or settings.default_speech_model),
        "audio_languages": LANGUAGES,
        "voices": voices,
        "default_voice": settings.tts_default_voice,
        "engines": ENGINE_NAMES,
        "formats": FORMATS,
        "sample_text": SAMPLE_TEXT,
        "max_upload_mb": settings.max_audio_upload_mb,
        "max_minutes": settings.max_audio_seconds // 60,
        "max_seconds": settings.max_audio_seconds,
    }
    return render(request, "speech/index.html", context, user=user, nav="speech")


def _default_model(models: list[ModelEntry], configured: str | None) -> int | None:
    """The model chosen first: the one the settings name (by name or id), else the
    bundled one, else the newest."""
    if not models:
        return None
    for entry in models:
        if configured and configured.strip() in (entry.name, str(entry.id)):
            return entry.id
    bundled = [m for m in models if m.source == "bundled"]
    return (bundled or models)[0].id
