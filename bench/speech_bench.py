"""Speech benchmark: the studio's transcription endpoint against plain faster-whisper,
and text-to-speech time to first audio.

Speech-to-text: a Persian recording (espeak-ng reading `--sentences` sentences, about
4 s each) is transcribed by `POST /v1/audio/transcriptions` of a real `lastedocation
serve` process (through the official `openai` client: upload, decoding, the model cache,
the answer) and by plain `faster_whisper.WhisperModel.transcribe` on the same file, with
the same model folder, compute type, threads and options, in this process. Each side runs
`--repeats` times in mirrored order (studio, plain, plain, studio, ...) after one warm-up
each, and each side's best time counts: these machines are shared and noisy. The figure is
the real-time factor (seconds of work per second of audio) and the ratio plain/studio
(target: at least 0.95x, i.e. the endpoint costs at most 5% over the library). Plain
faster-whisper is also timed in the other CPU compute type (int8 or float32), to show
whether `auto` chose the faster one on this CPU.

Text-to-speech: a 3-sentence Persian text through `POST /v1/audio/speech` (streamed pcm),
timing the first audio bytes and the whole answer, next to espeak-ng reading the whole text
on its own (the engine without the studio).

Run from the repository root: `.venv/bin/python bench/speech_bench.py` (options:
`--sentences`, `--repeats`, `--json PATH`); the defaults take about 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import ADMIN, add_account, sign_in
from tests.server import StudioServer
from tests.speech.conftest import SENTENCES

from lastedocation.settings import Settings
from lastedocation.speech import bundled, stt

TTS_TEXT = "امروز هوا آفتابی است. ما به کتابخانه می‌رویم. شب به خانه برمی‌گردیم."


def recording(folder: Path, sentences: int) -> tuple[Path, float]:
    """One wav of `sentences` sentences read by espeak-ng, and its duration in seconds."""
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(sentences)]
    path = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "fa", "-w", str(path), " ".join(texts)], check=True)
    with wave.open(str(path)) as w:
        return path, w.getnframes() / w.getframerate()


def best_of(times: list[float]) -> float:
    return min(times)


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    audio, duration = recording(work, args.sentences)
    data_dir = work / "studio"
    settings = Settings(data_dir=data_dir, import_sample_dataset=False)
    add_account(settings, ADMIN, role="admin")
    server = StudioServer(
        data_dir, log_path=work / "server.log", LASTEDOCATION_BUNDLED_SPEECH_MODEL="true"
    ).start()
    try:
        import httpx

        with httpx.Client(base_url=server.url) as http:
            token = sign_in(http)["access_token"]
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, timeout=600)

        def studio() -> float:
            started = time.perf_counter()
            with audio.open("rb") as f:
                client.audio.transcriptions.create(model="whisper-1", file=f, language="fa")
            return time.perf_counter() - started

        folder = bundled.joined_model()
        options = stt.library_options()  # the same options the studio passes
        compute_type = stt.choose_compute_type("cpu")
        from faster_whisper import WhisperModel

        model = WhisperModel(
            str(folder), device="cpu", compute_type=compute_type, cpu_threads=os.cpu_count() or 1
        )

        def plain() -> float:
            started = time.perf_counter()
            segments, _info = model.transcribe(str(audio), language="fa", **options)
            list(segments)
            return time.perf_counter() - started

        studio(), plain()  # warm-up: model load, caches
        studio_times: list[float] = []
        plain_times: list[float] = []
        for i in range(args.repeats):
            order = (studio, plain) if i % 2 == 0 else (plain, studio)
            for side in order:
                (studio_times if side is studio else plain_times).append(side())

        # text-to-speech: first audio bytes and the whole answer, streamed pcm
        first, whole = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            got_first = None
            with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input=TTS_TEXT, response_format="pcm"
            ) as response:
                for chunk in response.iter_bytes():
                    if chunk and got_first is None:
                        got_first = time.perf_counter() - started
            whole.append(time.perf_counter() - started)
            first.append(got_first or whole[-1])
        espeak = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            subprocess.run(
                ["espeak-ng", "-v", "fa", "--stdout", TTS_TEXT], check=True, capture_output=True
            )
            espeak.append(time.perf_counter() - started)
        # the other CPU compute type, to show what `auto` chose against (plain library)
        other = "float32" if compute_type == "int8" else "int8"
        other_model = WhisperModel(
            str(folder), device="cpu", compute_type=other, cpu_threads=os.cpu_count() or 1
        )

        def plain_other() -> float:
            started = time.perf_counter()
            segments, _info = other_model.transcribe(str(audio), language="fa", **options)
            list(segments)
            return time.perf_counter() - started

        plain_other()  # warm-up
        other_times = [plain_other() for _ in range(args.repeats)]
    finally:
        server.stop()
    s, p = best_of(studio_times), best_of(plain_times)
    return {
        "audio_s": round(duration, 2),
        "compute_type": compute_type,
        "cpu_count": os.cpu_count(),
        "studio_s": [round(t, 3) for t in studio_times],
        "plain_s": [round(t, 3) for t in plain_times],
        "studio_rtf": round(s / duration, 4),
        "plain_rtf": round(p / duration, 4),
        "ratio": round(p / s, 3),
        "other_compute_type": other,
        "other_rtf": round(best_of(other_times) / duration, 4),
        "tts_first_audio_s": round(best_of(first), 3),
        "tts_whole_s": round(best_of(whole), 3),
        "espeak_whole_s": round(best_of(espeak), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="speech-bench-") as folder:
        result = bench(args, Path(folder))
    print(f"audio: {result['audio_s']} s of espeak-ng Persian; compute type "
          f"{result['compute_type']}, {result['cpu_count']} CPUs")  # fmt: skip
    print(f"transcription, studio endpoint: RTF {result['studio_rtf']} (runs {result['studio_s']})")
    print(f"transcription, plain faster-whisper: RTF {result['plain_rtf']} "
          f"(runs {result['plain_s']})")  # fmt: skip
    print(f"plain faster-whisper in {result['other_compute_type']}: RTF {result['other_rtf']} "
          f"(auto chose {result['compute_type']})")  # fmt: skip
    verdict = "meets" if result["ratio"] >= 0.95 else "misses"
    print(f"ratio plain/studio: {result['ratio']}x ({verdict} the 0.95x target)")
    keys = ("tts_first_audio_s", "tts_whole_s", "espeak_whole_s")
    first, whole, alone = (result[k] for k in keys)
    print(f"text-to-speech, 3 sentences: first audio after {first} s, whole answer {whole} s; "
          f"espeak-ng alone {alone} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
