"""Persian speech for tests, made here: espeak-ng (`-v fa`) reads Persian sentences.

espeak-ng's Persian is robotic but real speech. Whisper base transcribes these sentences
read at 140 words a minute with a character error rate of 0.41-0.44 (int8 and float32
alike, measured); at espeak's default 175 it is 0.50-0.52, too close to the tests' 0.5.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SENTENCES = [
    "سلام، امروز هوا بسیار خوب است.",
    "کتاب را روی میز گذاشتم.",
    "ما فردا به تهران می‌رویم.",
    "این شهر خیابان‌های زیبایی دارد.",
    "لطفاً در را ببندید.",
    "او هر روز صبح چای می‌نوشد.",
    "دانشگاه در مرکز شهر است.",
    "بچه‌ها در پارک بازی می‌کنند.",
]


def espeak_wav(text: str, path: Path, *, speed: int = 140) -> Path:
    """`text` read by espeak-ng's Persian voice into a wav file (22,050 Hz, mono)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: `make test` installs it (Debian package)")
    subprocess.run(
        ["espeak-ng", "-v", "fa", "-s", str(speed), "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


@pytest.fixture(scope="session")
def persian_clips(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """(wav file, its sentence) for each of SENTENCES."""
    folder = tmp_path_factory.mktemp("persian-clips")
    return [
        (espeak_wav(text, folder / f"clip-{n:02d}.wav"), text) for n, text in enumerate(SENTENCES)
    ]
