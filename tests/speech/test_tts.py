"""Text to speech through each engine's real code path: espeak-ng's Persian voice, and
MMS-TTS (transformers' VitsModel) and Piper (piper-tts over onnxruntime) with small
random-weight models built here, since no Persian weights can be had offline. Also:
sentence streaming, the voice cache, the voice folders, the Hub failing offline, and
the streaming encoders."""

from __future__ import annotations

import io
import json
import threading
import time
import warnings
import wave
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch

from lastedocation.errors import Conflict, InvalidInput, NotFound
from lastedocation.models.hub import HubUnavailable
from lastedocation.paths import PathRefused
from lastedocation.settings import Settings
from lastedocation.speech import voices
from lastedocation.speech.audio import decode
from lastedocation.speech.audio_stream import PCM_RATE, encode_stream
from lastedocation.speech.engines import espeak, load_speaker, piper, vits
from lastedocation.speech.tts import (
    SpeakerCache,
    SpeechUnavailable,
    Voice,
    say,
    stream,
    synthesize,
)

PERSIAN_LETTERS = "آابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی"
SENTENCE = "امروز هوا بسیار خوب است و ما به پارک می‌رویم."
HOP = 256  # samples per frame, in both test models


def build_vits_voice(folder: Path) -> Path:
    """A random-weight MMS-style VITS voice: a Persian letter vocabulary read without a
    phonemizer (as facebook/mms-tts-fas's tokenizer), saved as transformers saves it."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"_": 0, " ": 1, **{c: i + 2 for i, c in enumerate(PERSIAN_LETTERS)}}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    VitsTokenizer(
        str(folder / "vocab.json"), pad_token="_", language="fas", phonemize=False
    ).save_pretrained(folder)
    config = VitsConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        ffn_dim=64, flow_size=16, spectrogram_bins=65, upsample_initial_channel=64,
        upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
        duration_predictor_filter_channels=32, duration_predictor_num_flows=1,
        depth_separable_num_layers=1, sampling_rate=16_000,
    )  # fmt: skip
    torch.manual_seed(0)
    VitsModel(config).save_pretrained(folder)
    return folder


class _PiperLike(torch.nn.Module):
    """Piper's signature: phoneme ids [1, n], their length [1], scales [3] (noise,
    length, noise_w) -> audio [1, 1, samples]; ceil(2 * length_scale) frames per id."""

    def __init__(self, symbols: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(symbols, 16)
        self.frame = torch.nn.Linear(16, HOP)

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, scales: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.embed(ids) * (lengths > 0).float().unsqueeze(-1)
        hidden = torch.repeat_interleave(hidden, torch.ceil(scales[1] * 2).long(), dim=1)
        return torch.tanh(self.frame(hidden)).reshape(1, 1, -1) * scales[0]


def build_piper_voice(folder: Path, name: str = "fa_IR-tiny-x_low") -> Path:
    """A random-weight Piper voice (`name`.onnx and .onnx.json) with espeak's "fa"."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    folder.mkdir(parents=True, exist_ok=True)
    symbols = 256
    torch.manual_seed(0)
    example = (
        torch.zeros(1, 5, dtype=torch.long),
        torch.tensor([5]),
        torch.tensor([0.667, 1.0, 0.8]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated (it still works)
        torch.onnx.export(
            _PiperLike(symbols).eval(), example, str(folder / f"{name}.onnx"),
            input_names=["input", "input_lengths", "scales"], output_names=["output"],
            dynamic_axes={"input": {1: "phonemes"}, "output": {2: "time"}}, dynamo=False,
        )  # fmt: skip
    config = {
        "audio": {"sample_rate": 22_050, "quality": "x_low"},
        "espeak": {"voice": "fa"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "num_symbols": symbols,
        "num_speakers": 1,
        "speaker_id_map": {},
        "piper_version": "1.8.0",
    }
    (folder / f"{name}.onnx.json").write_text(json.dumps(config, ensure_ascii=False), "utf-8")
    (folder / "MODEL_CARD").write_text("# tiny\n* License: CC0-1.0 (test voice)\n", "utf-8")
    return folder


@pytest.fixture(scope="module")
def vits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_vits_voice(tmp_path_factory.mktemp("vits") / "mms-tiny")


@pytest.fixture(scope="module")
def piper_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_piper_voice(tmp_path_factory.mktemp("piper") / "piper-tiny")


@pytest.fixture
def studio(tmp_path: Path, vits_folder: Path, piper_folder: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "studio",
        server_roots=[vits_folder.parent, piper_folder.parent],
        import_sample_dataset=False,
        bundled_speech_model=False,
    )


# --- espeak-ng ----------------------------------------------------------------------


def test_espeak_reads_persian() -> None:
    speaker = load_speaker(espeak.VOICE)
    samples = speaker.synthesize(SENTENCE)
    assert samples.dtype == np.float32 and samples.ndim == 1
    seconds = len(samples) / espeak.SAMPLE_RATE
    assert 1.0 < seconds < 10.0, seconds  # a sentence of nine words
    assert 0.1 < float(np.abs(samples).max()) <= 1.0
    slow = speaker.synthesize(SENTENCE, speed=0.5)
    fast = speaker.synthesize(SENTENCE, speed=2.0)
    assert len(fast) < len(samples) < len(slow)


def test_espeak_reads_text_that_looks_like_options(tmp_path: Path) -> None:
    speaker = load_speaker(espeak.VOICE)
    tricky = speaker.synthesize(f"--help -s 999 -w {tmp_path / 'x.wav'} سلام")
    assert len(tricky) / espeak.SAMPLE_RATE > 1.0  # read aloud, not taken as options
    assert not (tmp_path / "x.wav").exists()


def test_espeak_missing_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a server without the binary
    assert not espeak.available()
    with pytest.raises(SpeechUnavailable, match="apt-get install espeak-ng") as caught:
        load_speaker(espeak.VOICE)
    assert caught.value.status_code == 503


# --- MMS-TTS (VitsModel) ----------------------------------------------------------------


def _mms_voice(folder: Path) -> Voice:
    return Voice(
        id="mms-tiny", engine="mms", name="tiny", language="fa",
        sample_rate=vits.check_folder(folder), licence=vits.LICENCE, folder=folder,
    )  # fmt: skip


def test_vits_voice_reads_persian_with_plausible_length(vits_folder: Path) -> None:
    speaker = load_speaker(_mms_voice(vits_folder))
    assert speaker.voice.sample_rate == 16_000
    short = speaker.synthesize("سلام")
    long = speaker.synthesize(SENTENCE)
    for text, samples in (("سلام", short), (SENTENCE, long)):
        tokens = 2 * sum(c in PERSIAN_LETTERS or c == " " for c in text) + 1  # blanks between
        assert samples.dtype == np.float32 and samples.ndim == 1
        # each token lasts at least one frame; random durations stay near one or two
        assert tokens * HOP <= len(samples) <= tokens * HOP * 20, (text, len(samples))
    assert len(long) > 3 * len(short)
    slow, fast = speaker.synthesize(SENTENCE, speed=0.25), speaker.synthesize(SENTENCE, speed=4.0)
    assert len(slow) > 2 * len(fast)


def test_vits_voice_skips_what_it_cannot_read(vits_folder: Path) -> None:
    speaker = load_speaker(_mms_voice(vits_folder))
    assert speaker.synthesize("Python").size == 0  # no Persian letter: nothing to say
    mixed = speaker.synthesize("من Python را دوست دارم")
    assert mixed.size > 0


def test_vits_folder_is_checked(tmp_path: Path, vits_folder: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "vocab.json", "tokenizer_config.json"):
        (broken / name).write_bytes((vits_folder / name).read_bytes())
    with pytest.raises(InvalidInput, match=r"no \.safetensors weights"):
        vits.check_folder(broken)
    (broken / "config.json").write_text("[" * 100_000, encoding="utf-8")  # deep nesting
    with pytest.raises(InvalidInput, match=r"config\.json is not valid"):
        vits.check_folder(broken)
    (broken / "config.json").write_bytes(b" " * (2 * 1024 * 1024))
    with pytest.raises(InvalidInput, match="over the limit"):
        vits.check_folder(broken)


# --- Piper --------------------------------------------------------------------------


def test_piper_voice_drives_the_model_through_piper(piper_folder: Path, tmp_path: Path) -> None:
    from piper import PiperVoice

    model, config = piper.pair_in(piper_folder)
    folder = tmp_path / "voice"
    folder.mkdir()
    for source, name in piper.voice_files(piper_folder):
        (folder / name).write_bytes(source.read_bytes())
    voice = Voice(
        id="piper-tiny", engine="piper", name="tiny", language="fa",
        sample_rate=piper.check_folder(folder), licence="CC0-1.0", folder=folder,
    )  # fmt: skip
    assert voice.sample_rate == 22_050
    speaker = load_speaker(voice)
    samples = speaker.synthesize(SENTENCE)
    # the ids piper's own phonemizer (espeak-ng "fa") makes, each two frames long
    reference = PiperVoice.load(model, config_path=config)
    ids = sum(len(reference.phonemes_to_ids(p)) for p in reference.phonemize(SENTENCE))
    assert ids > len(SENTENCE) // 2
    assert len(samples) == ids * 2 * HOP
    assert samples.dtype == np.float32 and float(np.abs(samples).max()) == pytest.approx(1.0)
    assert len(speaker.synthesize(SENTENCE, speed=0.5)) == ids * 4 * HOP  # length_scale 2


def test_piper_folder_is_checked(tmp_path: Path, piper_folder: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="exactly one Piper voice"):
        piper.pair_in(empty)
    with pytest.raises(InvalidInput, match=r"model\.onnx is missing"):
        piper.check_folder(empty)
    assert piper.licence_in_card(piper_folder) == "CC0-1.0 (test voice)"


# --- streaming and the cache ----------------------------------------------------------


class _Counting:
    """A real voice, counting the sentences it was asked for."""

    def __init__(self, speaker: object) -> None:
        self.inner = speaker
        self.voice = espeak.VOICE
        self.calls: list[str] = []

    def synthesize(self, sentence: str, *, speed: float = 1.0) -> np.ndarray:
        self.calls.append(sentence)
        return self.inner.synthesize(sentence, speed=speed)  # type: ignore[attr-defined]


def test_stream_yields_each_sentence_before_the_next_is_made() -> None:
    speaker = _Counting(load_speaker(espeak.VOICE))
    chunks = stream("جمله‌ی اول. جمله‌ی دوم! جمله‌ی سوم؟", speaker)
    assert speaker.calls == []  # prepared, nothing synthesised yet
    first = next(chunks)
    assert len(speaker.calls) == 1 and first.size > 0
    assert len(list(chunks)) == 2 and len(speaker.calls) == 3

    cancel = threading.Event()
    chunks = stream("یک. دو. سه.", speaker, cancel=cancel)
    next(chunks)
    cancel.set()
    assert list(chunks) == []  # the listener went away: no more sentences

    with pytest.raises(InvalidInput, match="input is empty"):
        stream("  ", speaker)  # bad input fails at the call, before any audio
    whole = synthesize("یک. دو.", load_speaker(espeak.VOICE))
    assert whole.ndim == 1 and whole.size > 0


def test_speaker_cache_loads_once_and_drops_the_least_recent() -> None:
    loads: list[str] = []
    gate = threading.Event()

    def load(voice: Voice) -> espeak.EspeakSpeaker:
        loads.append(voice.id)
        gate.wait(5)
        return espeak.EspeakSpeaker(voice)

    cache = SpeakerCache(max_voices=2, load=load)
    one, two, three = (Voice(f"v{n}", "espeak", "v", "fa", 22_050, "GPL") for n in (1, 2, 3))
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(one))) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join()
    assert loads == ["v1"] and len({id(s) for s in got}) == 1  # one load for four requests
    cache.get(two)
    cache.get(one)  # v1 is now the most recent
    cache.get(three)
    assert cache.loaded() == ["v1", "v3"]
    cache.drop("v1")
    assert cache.loaded() == ["v3"]


# --- voice folders ------------------------------------------------------------------


def test_voices_registered_from_server_folders(
    studio: Settings, vits_folder: Path, piper_folder: Path
) -> None:
    mms = voices.add_voice(studio, voice_id="mms-fa", engine="mms", path=str(vits_folder))
    assert (mms.engine, mms.sample_rate, mms.licence) == ("mms", 16_000, "CC-BY-NC-4.0")
    assert "non-commercial" in mms.note
    fa = voices.add_voice(studio, voice_id="piper-fa", engine="piper", path=str(piper_folder))
    assert (fa.sample_rate, fa.licence) == (22_050, "CC0-1.0 (test voice)")
    assert sorted(p.name for p in fa.folder.iterdir()) == [  # type: ignore[union-attr]
        "MODEL_CARD", "model.onnx", "model.onnx.json", "voice.json",
    ]  # fmt: skip
    assert [v.id for v in voices.list_voices(studio)] == ["espeak-fa", "mms-fa", "piper-fa"]

    # OpenAI's names: tts-1 means the default voice; an engine name picks that engine
    assert voices.resolve(studio, model="tts-1", voice="alloy").id == "espeak-fa"
    assert voices.resolve(studio, model="mms", voice="nova").id == "mms-fa"
    assert voices.resolve(studio, model="piper", voice="piper-fa").id == "piper-fa"
    assert voices.resolve(studio, model="tts-1-hd", voice="mms-fa").id == "mms-fa"
    for model, voice, field in (("tts-2", "alloy", "model"), ("tts-1", "nobody", "voice"),
                                ("piper", "mms-fa", "voice")):  # fmt: skip
        with pytest.raises(InvalidInput) as caught:
            voices.resolve(studio, model=model, voice=voice)
        assert caught.value.extra["field"] == field

    with pytest.raises(Conflict):
        voices.add_voice(studio, voice_id="mms-fa", engine="mms", path=str(vits_folder))
    voices.remove_voice(studio, "mms-fa")
    assert [v.id for v in voices.list_voices(studio)] == ["espeak-fa", "piper-fa"]
    with pytest.raises(NotFound):
        voices.remove_voice(studio, "mms-fa")
    with pytest.raises(InvalidInput, match="built in"):
        voices.remove_voice(studio, "espeak-fa")
    assert not any(p.name.startswith(".") for p in studio.voices_dir.iterdir())


def test_voice_registration_refuses_bad_sources(
    studio: Settings, tmp_path: Path, piper_folder: Path
) -> None:
    with pytest.raises(PathRefused, match="outside the folders admins may name"):
        voices.add_voice(studio, voice_id="x", engine="mms", path=str(tmp_path))
    with pytest.raises(InvalidInput, match="id: 1 to 63"):
        voices.add_voice(studio, voice_id="../x", engine="mms", path=str(piper_folder))
    with pytest.raises(InvalidInput, match="either repo_id"):
        voices.add_voice(studio, voice_id="x", engine="mms")
    with pytest.raises(InvalidInput, match=r"config\.json is missing"):  # a Piper folder as MMS
        voices.add_voice(studio, voice_id="x", engine="mms", path=str(piper_folder))
    garbage = piper_folder.parent / "garbage"  # under the roots, but not a model
    garbage.mkdir(exist_ok=True)
    (garbage / "x.onnx").write_bytes(b"not onnx")
    (garbage / "x.onnx.json").write_bytes(
        (piper_folder / "fa_IR-tiny-x_low.onnx.json").read_bytes()
    )
    with pytest.raises(InvalidInput, match="the voice does not work") as caught:
        voices.add_voice(studio, voice_id="x", engine="piper", path=str(garbage))
    assert str(garbage) not in caught.value.detail
    assert not (studio.voices_dir / "x").exists()
    assert not list(studio.voices_dir.glob(".adding-*"))  # nothing half-made is left
    # a damaged voice folder hides that voice, not the list
    bad = studio.voices_dir / "bad"
    bad.mkdir(parents=True)
    (bad / "voice.json").write_text('{"engine": "piper"', encoding="utf-8")
    assert [v.id for v in voices.list_voices(studio)] == ["espeak-fa"]


def test_the_hub_offline_fails_fast_and_says_what_to_do(
    studio: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as caught:
        voices.add_voice(studio, voice_id="mms", engine="mms", repo_id=vits.HUB_REPO)
    assert "Hugging Face Hub" in caught.value.detail and "HF_HUB_OFFLINE" in caught.value.detail
    assert "register it with `path`" in caught.value.detail
    with pytest.raises(HubUnavailable, match="Hugging Face Hub"):
        voices.add_voice(
            studio, voice_id="amir", engine="piper", repo_id=piper.HUB_REPO,
            piper_voice="fa_IR-amir-medium",
        )  # fmt: skip
    assert time.monotonic() - started < 10
    with pytest.raises(InvalidInput, match="piper_voice"):
        voices.add_voice(studio, voice_id="amir", engine="piper", repo_id=piper.HUB_REPO)
    with pytest.raises(InvalidInput, match="not a valid Hub repository id"):
        voices.add_voice(studio, voice_id="x", engine="mms", repo_id="not a repo")


def test_say_writes_a_file(studio: Settings, tmp_path: Path, piper_folder: Path) -> None:
    voice = say(studio, "سلام. امروز ۱۴۰۲/۰۵/۱۲ است.", tmp_path / "hello.mp3")
    assert voice.id == "espeak-fa"
    assert decode(tmp_path / "hello.mp3", max_seconds=60).duration_s > 1.0
    voices.add_voice(studio, voice_id="piper-fa", engine="piper", path=str(piper_folder))
    say(studio, "سلام.", tmp_path / "piper.wav", model="piper", voice="alloy")
    with wave.open(str(tmp_path / "piper.wav")) as w:
        assert w.getframerate() == 22_050
    with pytest.raises(InvalidInput, match="name the file"):
        say(studio, "سلام", tmp_path / "hello.txt")


# --- streaming encoders ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus", "flac", "pcm"])
def test_each_format_streams_per_sentence_and_decodes(fmt: str) -> None:
    rate = 22_050
    tone = (0.3 * np.sin(np.arange(rate) * 2 * np.pi * 220 / rate)).astype(np.float32)
    pieces = list(encode_stream([tone, tone, tone], rate=rate, fmt=fmt))  # type: ignore[arg-type]
    assert len(pieces) >= 3 and all(pieces), [len(p) for p in pieces]  # bytes per sentence
    data = b"".join(pieces)
    if fmt == "pcm":
        assert abs(len(data) / 2 / PCM_RATE - 3.0) < 0.05
        return
    if fmt == "wav":
        with wave.open(io.BytesIO(data)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (rate, 1, 2)
            assert len(w.readframes(10 * rate)) == 3 * rate * 2
    heard = decode(io.BytesIO(data), max_seconds=60)
    assert abs(heard.duration_s - 3.0) < 0.15, heard.duration_s
