"""Piper voices (piper-tts): an ONNX VITS model and its `.onnx.json` config, phonemized
by the espeak-ng library that piper-tts bundles.

In a voice folder they are `model.onnx` and `model.onnx.json` (plus the voice's
`MODEL_CARD` when it has one, which names the data set and its licence). From the
Hub, a voice is named like `fa_IR-amir-medium`: in `rhasspy/piper-voices` it lies at
`fa/fa_IR/amir/medium/`, in any other repository at the top.

piper-tts loads the pair with `PiperVoice.load(model, config_path=...)` and
`PiperVoice.synthesize(text, syn_config)` yields one `AudioChunk` (float samples) per
sentence; speed is its `length_scale` (larger is slower).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lastedocation.errors import InvalidInput, NotFound
from lastedocation.speech.engines import hub_snapshot, problem, read_json
from lastedocation.speech.tts import SpeechUnavailable, Voice

HUB_REPO = "rhasspy/piper-voices"
MODEL, CONFIG, CARD = "model.onnx", "model.onnx.json", "MODEL_CARD"
MAX_CARD_BYTES = 64 * 1024
NOTE = "A Piper voice (VITS, ONNX): natural-sounding and fast on a CPU."
_RHASSPY_NAME = re.compile(
    r"^(?P<lang>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<name>[^-/]+)-(?P<quality>[^-/]+)$"
)
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
_LICENCE_LINE = re.compile(r"^\W*licen[cs]e\W*:?\s*(.+)$", re.IGNORECASE | re.MULTILINE)


class _Audio(BaseModel):
    sample_rate: int = Field(ge=8000, le=48_000)


class _Espeak(BaseModel):
    voice: str = Field(min_length=1, max_length=32)


class _Config(BaseModel):
    model_config = ConfigDict(extra="ignore")
    audio: _Audio
    espeak: _Espeak
    num_symbols: int = Field(ge=1, le=100_000)
    num_speakers: int = Field(default=1, ge=1, le=100_000)
    phoneme_type: Literal["espeak", "text"] = "espeak"
    phoneme_id_map: dict[str, list[int]] = Field(max_length=100_000)


def check_folder(folder: Path) -> int:
    """The voice's sample rate, once its files are there and sane."""
    what = f"Piper voice {folder.name!r}"
    if not (folder / MODEL).is_file() or (folder / MODEL).stat().st_size == 0:
        raise InvalidInput(f"{what}: {MODEL} is missing or empty", file=MODEL)
    config = read_json(folder / CONFIG, _Config, what=what)
    missing = [s for s in ("^", "$", "_") if s not in config.phoneme_id_map]
    if missing:
        raise InvalidInput(
            f"{what}: phoneme_id_map lacks {', '.join(missing)} (start, end, pad)", file=CONFIG
        )
    if any(i < 0 or i >= config.num_symbols for ids in config.phoneme_id_map.values() for i in ids):
        raise InvalidInput(f"{what}: phoneme_id_map has ids outside num_symbols", file=CONFIG)
    return config.audio.sample_rate


def pair_in(folder: Path) -> tuple[Path, Path]:
    """The one `X.onnx` with its `X.onnx.json` in a folder an admin named."""
    models = sorted(p for p in folder.glob("*.onnx") if p.with_name(p.name + ".json").is_file())
    if len(models) != 1:
        found = ", ".join(p.name for p in models) or "none"
        raise InvalidInput(
            f"the folder must hold exactly one Piper voice (X.onnx beside X.onnx.json); "
            f"found {found}",
            field="path",
        )
    return models[0], models[0].with_name(models[0].name + ".json")


def voice_files(folder: Path) -> list[tuple[Path, str]]:
    """(file, its name in the voice folder) to copy from `folder`."""
    model, config = pair_in(folder)
    files = [(model, MODEL), (config, CONFIG)]
    if (folder / CARD).is_file():
        files.append((folder / CARD, CARD))
    return files


def licence_in_card(folder: Path) -> str | None:
    """The licence a MODEL_CARD names ("License: CC0"), if any."""
    card = folder / CARD
    if not card.is_file():
        return None
    with card.open("rb") as handle:
        text = handle.read(MAX_CARD_BYTES).decode("utf-8", "replace")
    found = _LICENCE_LINE.search(text)
    return found.group(1).strip()[:100] if found else None


def download(repo_id: str, *, voice: str | None, revision: str | None, cache_dir: Path) -> Path:
    """A folder holding the voice `voice` (e.g. fa_IR-amir-medium) from the Hub."""
    if not voice or not _FILE_NAME.fullmatch(voice):
        raise InvalidInput(
            "piper_voice: name the voice to download, like fa_IR-amir-medium (letters, "
            "digits, '.', '_' and '-')",
            field="piper_voice",
        )
    voice = voice.removesuffix(".onnx")
    where = ""
    named = _RHASSPY_NAME.fullmatch(voice)
    if repo_id == HUB_REPO and named:
        lang, region = named["lang"], named["region"]
        where = f"{lang}/{lang}_{region}/{named['name']}/{named['quality']}/"
    snapshot = hub_snapshot(
        repo_id,
        revision=revision,
        cache_dir=cache_dir,
        allow_patterns=[f"{where}{voice}.onnx", f"{where}{voice}.onnx.json", f"{where}{CARD}"],
        offline_hint=(
            "download the two files on a machine with access (the voice's .onnx and "
            ".onnx.json), put them in a folder listed in LASTEDOCATION_SERVER_ROOTS and "
            "register it with `path` instead of `repo_id`"
        ),
    )
    folder = snapshot / where if where else snapshot
    if not (folder / f"{voice}.onnx").is_file() or not (folder / f"{voice}.onnx.json").is_file():
        raise NotFound(
            f"{repo_id!r} has no Piper voice {voice!r} ({where}{voice}.onnx and .onnx.json)",
            field="piper_voice",
        )
    return folder


class PiperSpeaker:
    """A piper-tts voice; onnxruntime sessions may run from several threads at once."""

    def __init__(self, voice: Voice) -> None:
        assert voice.folder is not None
        check_folder(voice.folder)
        from piper import PiperVoice

        self.voice = voice
        try:
            self.piper = PiperVoice.load(voice.folder / MODEL, config_path=voice.folder / CONFIG)
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise SpeechUnavailable(
                f"voice {voice.id!r}: its model does not load ({type(exc).__name__}: "
                f"{problem(exc, voice.folder)}); register it again"
            ) from None

    def synthesize(self, sentence: str, *, speed: float = 1.0) -> np.ndarray:
        from piper import SynthesisConfig

        settings = SynthesisConfig(length_scale=self.piper.config.length_scale / speed)
        parts = [chunk.audio_float_array for chunk in self.piper.synthesize(sentence, settings)]
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)
