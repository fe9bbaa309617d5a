"""Speech models come into the registry like text ones: from a server folder (admins) or
from the Hub, in faster-whisper's CTranslate2 layout or as a Transformers Whisper, and
are registered with the form faster-whisper serves."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient
from faster_whisper import WhisperModel

from lastedocation.api.app import create_app
from lastedocation.models import service
from lastedocation.models.entries import ModelEntry
from lastedocation.settings import Settings
from lastedocation.speech import bundled
from lastedocation.speech.audio import decode
from lastedocation.speech.models import CT2, HF, whisper_form
from tests.conftest import ADMIN, add_account, sign_in
from tests.models.conftest import FakeHub
from tests.speech.conftest import espeak_wav
from tests.whisper_helpers import tiny_whisper


def test_whisper_folders_are_told_from_text_models(tmp_path: Path, full_run: Path) -> None:
    assert whisper_form(bundled.joined_model()) == CT2
    assert whisper_form(tiny_whisper(tmp_path / "tiny")) == HF
    assert whisper_form(full_run / "model") is None  # a text model
    assert whisper_form(tmp_path) is None  # nothing


def test_admins_register_whisper_folders_in_both_forms(tmp_path: Path) -> None:
    roots = tmp_path / "srv"
    shutil.copytree(bundled.joined_model(), roots / "faster-whisper-base")
    tiny_whisper(roots / "tiny-whisper")
    settings = Settings(data_dir=tmp_path / "studio", server_roots=[roots])
    add_account(settings, ADMIN, role="admin")
    with TestClient(create_app(settings)) as client:
        sign_in(client)
        for folder, form in (("faster-whisper-base", CT2), ("tiny-whisper", HF)):
            made = client.post("/api/v1/models/register", json={"path": str(roots / folder)})
            assert made.status_code == 201, made.text
            entry = made.json()
            assert (entry["kind"], entry["source"], entry["summary"]["format"]) == (
                "speech", "folder", form,
            )  # fmt: skip
            home = settings.data_dir / f"models/{entry['id']:06d}"
            assert (home / CT2 / "model.bin").is_file()  # what faster-whisper serves
            assert (home / HF / "config.json").is_file() == (form == HF)
        # the copy is served: the OpenAI route transcribes with it by name
        clip = espeak_wav("کتاب را روی میز گذاشتم.", tmp_path / "clip.wav")
        with clip.open("rb") as f:
            heard = client.post(
                "/v1/audio/transcriptions",
                files={"file": ("clip.wav", f)},
                data={"model": "faster-whisper-base", "language": "fa"},
            )
        assert heard.status_code == 200 and heard.json()["text"].strip(), heard.text
    # the tiny one's converted CTranslate2 form loads in faster-whisper
    tiny = next((settings.data_dir / "models").glob("*/ctranslate2"))
    assert WhisperModel(str(tiny), device="cpu", compute_type="float32") is not None


def test_a_faster_whisper_repo_on_the_hub_becomes_a_speech_model(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.repo = ("Systran/faster-whisper-base", bundled.joined_model())
    settings = Settings(data_dir=tmp_path / "studio")
    add_account(settings, ADMIN, role="admin")
    app = create_app(settings)
    with app.state.sessions() as session:
        from lastedocation.auth.models import User

        admin = session.query(User).one()
        entry = service.import_hub(
            session=session, settings=settings, user=admin,
            repo_id="Systran/faster-whisper-base", revision=None, name=None,
        )  # fmt: skip
        assert isinstance(entry, ModelEntry)
        assert (entry.kind, entry.source, entry.base_model) == (
            "speech", "hub", "Systran/faster-whisper-base",
        )  # fmt: skip
        folder = settings.data_dir / entry.folder / CT2
    assert (folder / "model.bin").stat().st_size == (
        bundled.joined_model() / "model.bin"
    ).stat().st_size
    samples = decode(espeak_wav("سلام", tmp_path / "s.wav"), max_seconds=30).samples
    segments, info = WhisperModel(str(folder), device="cpu", compute_type="int8").transcribe(
        samples, language="fa", beam_size=1
    )
    assert info.language == "fa" and isinstance(" ".join(s.text for s in segments), str)
    app.state.engine.dispose()
