"""Speech dataset archives for tests, built here from espeak-ng's Persian clips (nothing
binary is committed): zip and tar writers that can also write what a hostile archive
holds (`..` names, absolute paths, links)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.speech.conftest import SENTENCES, espeak_wav

Files = dict[str, bytes]


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, str]]:
    """(wav bytes, sentence) for the 8 Persian test sentences (22,050 Hz mono)."""
    folder = tmp_path_factory.mktemp("speech-dataset-clips")
    return [
        (espeak_wav(text, folder / f"{n}.wav").read_bytes(), text)
        for n, text in enumerate(SENTENCES)
    ]


def metadata_csv(rows: list[tuple[str, str]], column: str = "transcription") -> bytes:
    lines = [f"file_name,{column}"] + [f'{name},"{text}"' for name, text in rows]
    return ("\n".join(lines) + "\n").encode()


def metadata_jsonl(rows: list[tuple[str, str]], column: str = "transcription") -> bytes:
    return b"".join(
        json.dumps({"file_name": name, column: text}, ensure_ascii=False).encode() + b"\n"
        for name, text in rows
    )


def good_files(
    clips: list[tuple[bytes, str]], *, jsonl: bool = False, column: str = "transcription"
) -> Files:
    """Every clip under clips/ and a metadata file naming them."""
    files = {f"clips/{n:02d}.wav": data for n, (data, _) in enumerate(clips)}
    rows = [(f"clips/{n:02d}.wav", text) for n, (_, text) in enumerate(clips)]
    name = "metadata.jsonl" if jsonl else "metadata.csv"
    files[name] = (metadata_jsonl if jsonl else metadata_csv)(rows, column)
    return files


def make_zip(path: Path, files: Files, *, stored: bool = False) -> Path:
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, method)
    return path


def make_tar(
    path: Path, files: Files, *, gz: bool = True, links: dict[str, tuple[bytes, str]] | None = None
) -> Path:
    """A tar(.gz) of `files`, and of `links`: name -> (tar type, target)."""
    with tarfile.open(path, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return path
