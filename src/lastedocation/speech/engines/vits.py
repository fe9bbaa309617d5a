"""MMS-TTS (Meta's Massively Multilingual Speech, `facebook/mms-tts-fas` for Persian) and
other VITS voices in Hugging Face form, through transformers' `VitsModel`.

A voice folder holds `config.json`, `vocab.json`, `tokenizer_config.json` (and
`special_tokens_map.json`) and `.safetensors` weights; pickled weights
(`pytorch_model.bin`) are never loaded. MMS-TTS's Persian tokenizer reads Persian
letters (no phonemizer, no romanizer): digits must be words already (`text.py` sees
to that) and Latin words are skipped by the tokenizer.

MMS-TTS weights are licensed CC BY-NC 4.0: non-commercial use only. A voice from
`facebook/mms-tts-*` always carries that licence, so the UI and the API show it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, RootModel

from lastedocation.errors import InvalidInput
from lastedocation.speech.engines import hub_snapshot, problem, read_json
from lastedocation.speech.tts import SpeechUnavailable, Voice

HUB_REPO = "facebook/mms-tts-fas"
LICENCE = "CC-BY-NC-4.0"
NOTE = (
    "Meta's MMS-TTS: natural-sounding Persian; non-commercial use only (CC BY-NC 4.0). "
    "Reads Persian letters only: Latin words are skipped."
)
FILES = ("config.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json")
WEIGHTS = "*.safetensors"
OFFLINE_HINT = (
    f"download the voice on a machine with access (`hf download {HUB_REPO} --local-dir "
    "FOLDER`), copy FOLDER to a folder listed in LASTEDOCATION_SERVER_ROOTS and register "
    "it with `path` instead of `repo_id`"
)


def licence_for(repo_id: str | None, given: str | None) -> str:
    """Meta's MMS-TTS weights are non-commercial whatever the admin typed."""
    if repo_id and repo_id.lower().startswith("facebook/mms-tts"):
        return LICENCE
    return given or LICENCE  # a VITS voice here is most likely an MMS-TTS fine-tune


class _Config(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_type: Literal["vits"]
    sampling_rate: int = Field(ge=8000, le=48_000)
    vocab_size: int = Field(ge=2, le=100_000)


class _TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    phonemize: bool = False
    is_uroman: bool = False


class _Vocab(RootModel[dict[str, int]]):
    pass


def check_folder(folder: Path) -> int:
    """The voice's sample rate, once its files are there and sane."""
    what = f"MMS voice {folder.name!r}"
    config = read_json(folder / "config.json", _Config, what=what)
    vocab = read_json(folder / "vocab.json", _Vocab, what=what).root
    if not vocab or max(vocab.values()) >= config.vocab_size:
        raise InvalidInput(
            f"{what}: vocab.json does not fit config.json's vocab_size {config.vocab_size}",
            file="vocab.json",
        )
    tokenizer = _TokenizerConfig()
    if (folder / "tokenizer_config.json").is_file():
        tokenizer = read_json(folder / "tokenizer_config.json", _TokenizerConfig, what=what)
    if tokenizer.phonemize:
        raise InvalidInput(
            f"{what}: its tokenizer needs the `phonemizer` package (English VITS voices); "
            "the studio serves MMS-TTS voices that read letters",
            file="tokenizer_config.json",
        )
    if tokenizer.is_uroman:
        raise InvalidInput(
            f"{what}: its tokenizer needs text romanized with uroman, which the studio "
            "does not do; Persian (facebook/mms-tts-fas) reads Persian letters",
            file="tokenizer_config.json",
        )
    if not any(folder.glob(WEIGHTS)):
        raise InvalidInput(
            f"{what}: no .safetensors weights; pickled weights (pytorch_model.bin) are "
            "never loaded",
            file="model.safetensors",
        )
    return config.sampling_rate


def voice_files(folder: Path) -> list[tuple[Path, str]]:
    """(file, its name in the voice folder): what a voice needs from a download or a
    server folder, and nothing else."""
    named = [folder / name for name in FILES if (folder / name).is_file()]
    return [(path, path.name) for path in named + sorted(folder.glob(WEIGHTS))]


def download(repo_id: str, *, revision: str | None, cache_dir: Path) -> Path:
    """The voice's files from the Hub, into the studio's Hub cache."""
    return hub_snapshot(
        repo_id,
        revision=revision,
        cache_dir=cache_dir,
        allow_patterns=[*FILES, WEIGHTS],
        offline_hint=OFFLINE_HINT,
    )


class VitsSpeaker:
    """A VitsModel and its tokenizer; one sentence at a time per voice."""

    def __init__(self, voice: Voice) -> None:
        assert voice.folder is not None
        check_folder(voice.folder)
        from transformers import VitsModel, VitsTokenizer
        from transformers.utils import logging as hf_logging

        self.voice = voice
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a server log, not a terminal
        try:
            self.tokenizer = VitsTokenizer.from_pretrained(voice.folder)
            model = VitsModel.from_pretrained(voice.folder, use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise SpeechUnavailable(
                f"voice {voice.id!r}: its model does not load ({type(exc).__name__}: "
                f"{problem(exc, voice.folder)}); register it again"
            ) from None
        self.model = model.eval()  # type: ignore[no-untyped-call]
        self.lock = threading.Lock()

    def synthesize(self, sentence: str, *, speed: float = 1.0) -> np.ndarray:
        import torch

        readable, _ = self.tokenizer.prepare_for_tokenization(sentence)
        if not readable.strip():
            return np.zeros(0, dtype=np.float32)  # nothing this voice can read
        inputs = self.tokenizer(sentence, return_tensors="pt")
        with self.lock, torch.inference_mode():
            waveform = self.model(**inputs, speaking_rate=speed).waveform
        return np.asarray(waveform[0].float().numpy(), dtype=np.float32).copy()
