"""`lastedocation speech ...`: speech commands that work offline, without a server.

    lastedocation speech transcribe talk.mp3 --format srt > talk.srt

The model is the bundled Whisper base unless `--model` names a faster-whisper
(CTranslate2) folder or a speech model registered in the local studio.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from lastedocation.errors import StudioError
from lastedocation.settings import load_settings
from lastedocation.speech import bundled, stt, subtitles
from lastedocation.speech.audio import decode
from lastedocation.speech.models import CT2

app = typer.Typer(help="Speech: transcribe audio files, read text aloud.", no_args_is_help=True)
err = Console(stderr=True)
BUNDLED_NAMES = ("whisper-1", bundled.NAME)


class Format(StrEnum):
    text = "text"
    srt = "srt"
    vtt = "vtt"
    json = "json"


def _fail(exc: StudioError) -> NoReturn:
    err.print(f"[red]error:[/] {exc.detail}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(1)


def model_folder(model: str | None) -> Path:
    """The CTranslate2 folder `--model` means: the bundled model, a folder (a registry
    model folder with ctranslate2/ inside, or a CTranslate2 folder itself), or the name
    or id of a speech model registered in the local studio."""
    if model is None or model in BUNDLED_NAMES:
        return bundled.joined_model()
    path = Path(model).expanduser()
    if path.is_dir():
        return path / CT2 if (path / CT2 / "model.bin").is_file() else path
    from lastedocation.db import make_engine, session_factory
    from lastedocation.speech.intake import model_folder as registered_folder
    from lastedocation.speech.intake import resolve_speech_model

    settings = load_settings()
    if settings.database_url is None and not (settings.data_dir / "studio.db").is_file():
        raise StudioError(
            f"--model {model!r} is neither a folder nor the bundled {bundled.NAME}, and there "
            f"is no studio in {settings.data_dir} to look it up in"
        )
    engine = make_engine(settings)
    try:
        with session_factory(engine)() as session:
            entry = resolve_speech_model(session=session, settings=settings, user=None, name=model)
            return registered_folder(settings, entry)
    finally:
        engine.dispose()


@app.command()
def transcribe(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="An audio file.")
    ],
    model: Annotated[
        str | None,
        typer.Option(help="A model folder, or a registered speech model (default: bundled)."),
    ] = None,
    language: Annotated[
        str, typer.Option(help="Language code (fa, en, ...), or auto to detect it.")
    ] = "fa",
    fmt: Annotated[Format, typer.Option("--format", help="What to print.")] = Format.text,
    vad: Annotated[bool, typer.Option(help="Skip silence with Silero VAD.")] = True,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Transcribe an audio file on this machine (no server needed)."""
    settings = load_settings()
    try:
        options = stt.Options(
            language=stt.check_language(language, field="--language"),
            vad=vad,
            word_timestamps=fmt is Format.json,
        )
        folder = model_folder(model)
        audio = decode(file, max_seconds=settings.max_audio_seconds, name=file.name)
        models = stt.SpeechModels(max_models=1, compute_type=settings.whisper_compute_type)
        with err.status(f"loading the model ({models.device.name}, {models.device.compute_type})"):
            loaded = models.get(folder)
        found: list[stt.Segment] = []
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("transcribing", total=max(audio.duration_s, 0.001))
            result = stt.transcribe(loaded, audio.samples, options)
            for segment in result.segments:
                found.append(segment)
                bar.update(task, completed=segment.end)
    except StudioError as exc:
        _fail(exc)
    style = "verbose_json" if fmt is Format.json else fmt.value
    body = subtitles.render(
        found,
        style,
        language=result.language,
        duration=result.duration,
        language_probability=round(result.language_probability, 4),
        with_words=options.word_timestamps,
    )
    text = json.dumps(body, ensure_ascii=False, indent=1) if isinstance(body, dict) else body
    if output is not None:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        err.print(f"wrote {output} ({len(found)} segments, language {result.language})")
    else:
        typer.echo(text.rstrip("\n"))


@app.command()
def say(
    text: Annotated[str, typer.Argument(help="Persian (or any) text to read aloud.")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Audio file to write: .wav, .mp3, .opus, .flac."),
    ] = Path("speech.wav"),
    voice: Annotated[
        str, typer.Option(help="A voice id (GET /api/v1/speech/voices); default: espeak-fa.")
    ] = "alloy",
    speed: Annotated[float, typer.Option(min=0.25, max=4.0, help="1 is normal.")] = 1.0,
) -> None:
    """Read text aloud into an audio file on this machine (no server needed)."""
    from lastedocation.speech.tts import say as speak

    try:
        chosen = speak(load_settings(), text, output, voice=voice, speed=speed)
    except StudioError as exc:
        _fail(exc)
    err.print(f"wrote {output} with the voice {chosen.id} (licence {chosen.licence})")
