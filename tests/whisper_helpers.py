"""Speech data and Whisper folders for the speech-run and conversion tests, made here.

    folder = speech_dataset(tmp / "ds", sentences=SENTENCES[:6], voices=("fa",))
    hf = base_transformers(root)    # the bundled Whisper base, as Transformers (once)
    tiny = tiny_whisper(tmp / "tiny")  # a random two-layer Whisper, as Transformers

A speech dataset's folder is what the studio's speech import writes: `records.jsonl`
with `{"audio": "audio/000001.wav", "text": ..., "duration_s": ..., "sample_rate": ...,
"file_name": ...}`, audio paths relative to the folder. The clips are espeak-ng reading
Persian sentences (48 everyday ones), with two voices: one sentence may have several
clips, which must stay on the same side of a split by sentence.
"""

from __future__ import annotations

import functools
import json
import subprocess
import wave
from pathlib import Path

from tests.speech.conftest import SENTENCES as SPEECH_SENTENCES

SENTENCES = [
    *SPEECH_SENTENCES,
    "من هر شب کتاب می‌خوانم.",
    "آسمان امشب پر از ستاره است.",
    "لطفاً یک لیوان آب به من بدهید.",
    "قطار ساعت هشت صبح حرکت می‌کند.",
    "پدرم در یک بیمارستان کار می‌کند.",
    "ما تابستان به کنار دریا رفتیم.",
    "این غذا خیلی خوشمزه است.",
    "خواهرم زبان انگلیسی یاد می‌گیرد.",
    "باران از دیشب شروع شده است.",
    "کلید خانه را گم کرده‌ام.",
    "دوستم فردا از سفر برمی‌گردد.",
    "بازار امروز بسیار شلوغ بود.",
    "گربه روی دیوار نشسته است.",
    "او نامه‌ای برای مادرش نوشت.",
    "کتابخانه تا ساعت شش باز است.",
    "ما شام را با هم خوردیم.",
    "امروز صبح زود از خواب بیدار شدم.",
    "برادرم در دانشگاه پزشکی می‌خواند.",
    "این کتاب را از کتابفروشی خریدم.",
    "هوای پاییز خنک و دلپذیر است.",
    "مادربزرگم در روستا زندگی می‌کند.",
    "ما هر جمعه به کوه می‌رویم.",
    "لطفاً پنجره را باز کنید.",
    "من قهوه را بدون شکر می‌نوشم.",
    "فردا امتحان ریاضی داریم.",
    "اتوبوس امروز دیر رسید.",
    "بچه‌ها در حیاط مدرسه بازی می‌کنند.",
    "این خیابان شب‌ها خیلی آرام است.",
    "دکتر گفت باید بیشتر استراحت کنم.",
    "ما برای تولد او کیک پختیم.",
    "رودخانه از وسط شهر می‌گذرد.",
    "تلفن همراهم را در خانه جا گذاشتم.",
    "معلم درس تازه‌ای به ما داد.",
    "باغ ما پر از درخت سیب است.",
    "او هر روز با دوچرخه به کار می‌رود.",
    "در زمستان برف زیادی می‌بارد.",
    "این فیلم داستان جالبی داشت.",
    "همسایه ما یک سگ کوچک دارد.",
    "نان تازه را از نانوایی خریدیم.",
    "ساعت دیواری ده دقیقه عقب است.",
]
VOICES = ("fa", "fa+m3")


def espeak(text: str, path: Path, voice: str = "fa", speed: int = 150) -> Path:
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def speech_dataset(
    folder: Path,
    sentences: list[str] = SENTENCES,
    voices: tuple[str, ...] = VOICES,
    *,
    every_voice: bool = True,
) -> Path:
    """A speech dataset folder (records.jsonl + audio/); returns records.jsonl. Each
    sentence is read by every voice, or (`every_voice=False`) by the next voice in turn."""
    (folder / "audio").mkdir(parents=True)
    lines = []
    for n, text in enumerate(sentences):
        for voice in voices if every_voice else (voices[n % len(voices)],):
            name = f"{len(lines) + 1:06d}.wav"
            espeak(text, folder / "audio" / name, voice)
            with wave.open(str(folder / "audio" / name)) as w:
                rate, frames = w.getframerate(), w.getnframes()
            record = {
                "audio": f"audio/{name}",
                "text": text,
                "duration_s": round(frames / rate, 3),
                "sample_rate": rate,
                "file_name": f"{voice}-{name}",
            }
            lines.append(json.dumps(record, ensure_ascii=False))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "records.jsonl"


@functools.cache
def base_transformers(root: Path) -> Path:
    """The bundled Whisper base converted to Transformers, once per test session (the
    conversion tests and the fine-tuning test share it)."""
    from lastedocation.models.whisper_convert import convert_once
    from lastedocation.speech import bundled

    return convert_once(bundled.joined_model(), root / "whisper-base-transformers")


def tiny_whisper(folder: Path) -> Path:
    """A tiny random Whisper in Transformers form, with the bundled tokenizer (seeded)."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from lastedocation.models.whisper_convert import generation_config, whisper_tokenizer
    from lastedocation.speech import bundled
    from lastedocation.training.whisper_model import tiny_random_config

    tokenizer = whisper_tokenizer(bundled.joined_model() / "tokenizer.json")
    config = tiny_random_config(tokenizer)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    ct2_config = {"suppress_ids": [1, 2], "suppress_ids_begin": [220, 50257], "lang_ids": [50300]}
    model.generation_config = generation_config(ct2_config, tokenizer, config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder
