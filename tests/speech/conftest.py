"""Persian speech for tests, made here: espeak-ng (`-v fa`) reads Persian sentences.

espeak-ng's Persian is robotic but real speech; Whisper base transcribes it with a
character error rate around 0.35, which is what the round-trip tests allow for.
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


def espeak_wav(text: str, path: Path, *, speed: int = 150) -> Path:
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
