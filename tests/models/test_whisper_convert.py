"""Whisper between CTranslate2 and Transformers: the bundled base, read back from its
CTranslate2 weights, transcribes Persian exactly as faster-whisper does (the same token
ids); Transformers -> CTranslate2 -> Transformers gives back every float32 weight
bit for bit; damaged model.bin files are refused, naming the problem."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.feature_extractor import FeatureExtractor
from transformers import WhisperForConditionalGeneration

from lastedocation.models.ct2_file import ConversionError, read_ctranslate2
from lastedocation.models.whisper_convert import (
    ctranslate2_to_transformers,
    ensure_transformers,
    transformers_to_ctranslate2,
)
from lastedocation.speech import bundled
from lastedocation.speech.audio import decode
from tests.whisper_helpers import SENTENCES, base_transformers, espeak, tiny_whisper


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_whisper(tmp_path_factory.mktemp("tiny") / "hf")


def test_bundled_base_transcribes_like_faster_whisper(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    hf = base_transformers(tmp_path_factory.getbasetemp())
    model = WhisperForConditionalGeneration.from_pretrained(hf).eval()
    assert model.config.d_model == 512 and model.config.encoder_layers == 6
    assert model.generation_config.lang_to_id["<|fa|>"] == 50300
    served = WhisperModel(str(bundled.joined_model()), device="cpu", compute_type="float32")
    for n, sentence in enumerate(SENTENCES[:2]):
        audio = decode(espeak(sentence, tmp_path / f"{n}.wav"), max_seconds=30).samples
        # the features exactly as faster-whisper computes them for a short clip
        mel = FeatureExtractor()(audio)
        window = torch.from_numpy(pad_or_trim(mel[:, : mel.shape[-1] - 1]))[None]
        with torch.no_grad():
            ours = model.generate(window, language="fa", task="transcribe")[0].tolist()
        segments, _ = served.transcribe(
            audio,
            language="fa",
            beam_size=1,
            temperature=0,
            without_timestamps=True,
            condition_on_previous_text=False,
            no_speech_threshold=None,
            log_prob_threshold=None,
            compression_ratio_threshold=None,
        )
        theirs = [token for segment in segments for token in segment.tokens]
        assert len(theirs) > 5 and ours == theirs  # greedy, token for token


def test_transformers_to_ctranslate2_and_back_is_exact(tiny_hf: Path, tmp_path: Path) -> None:
    ct2 = transformers_to_ctranslate2(tiny_hf, tmp_path / "ct2", quantization="float32")
    assert {"model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in ct2.iterdir()
    }
    back = ctranslate2_to_transformers(ct2, tmp_path / "back")
    want = WhisperForConditionalGeneration.from_pretrained(tiny_hf).state_dict()
    have = WhisperForConditionalGeneration.from_pretrained(back).state_dict()
    assert want.keys() == have.keys()
    assert all(torch.equal(want[k], have[k]) for k in want)  # every bit
    # and faster-whisper serves the converted folder
    served = WhisperModel(str(ct2), device="cpu", compute_type="float32")
    segments, info = served.transcribe(
        np.zeros(16_000, dtype=np.float32) + 0.01, language="fa", beam_size=1, temperature=0
    )
    list(segments)
    assert info.language == "fa"


def test_converting_once_under_a_lock(tiny_hf: Path, tmp_path: Path) -> None:
    """Two runs that start together convert a registry model's CTranslate2 form once."""
    model = tmp_path / "model"
    model.mkdir()
    transformers_to_ctranslate2(tiny_hf, model / "ctranslate2", quantization="float32")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_transformers(model)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [model / "transformers"] * 2
    assert sorted(p.name for p in model.iterdir()) == [
        ".transformers.lock",
        "ctranslate2",
        "transformers",
    ]  # no staging folder left behind


def _header(name: bytes, shape: list[int], dtype: int, nbytes: int) -> bytes:
    out = struct.pack("<I", 6) + struct.pack("<H", 12) + b"WhisperSpec\0" + struct.pack("<I", 3)
    out += struct.pack("<I", 1) + struct.pack("<H", len(name) + 1) + name + b"\0"
    out += struct.pack("<B", len(shape)) + b"".join(struct.pack("<I", d) for d in shape)
    return out + struct.pack("<B", dtype) + struct.pack("<I", nbytes)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (_header(b"w", [4, 4], 0, 64) + b"\0" * 10, "cut short"),
        (_header(b"w", [4, 4], 0, 60) + b"\0" * 60, "says 60 bytes"),
        (_header(b"w", [2], 9, 8) + b"\0" * 8, "unknown dtype"),
        (_header(b"w", [1 << 20, 1 << 20], 0, 0), "says 0 bytes"),
        (_header(b"w", [2], 0, 8) + b"\0" * 8 + struct.pack("<I", 0) + b"extra", "after the last"),
        (struct.pack("<I", 99), "unknown CTranslate2 binary version"),
    ],
)
def test_damaged_model_bin_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match=problem):
        read_ctranslate2(path)
