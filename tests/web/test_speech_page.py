"""The speech page, in a member's signed-in browser against the real app: the speech
models they may use (the bundled Whisper base), the languages, the server's voices with
their licences, in Persian (right to left) and in English; and every message of the
speech page and the playground's speech buttons in the Persian catalog."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.api.app import create_app
from lastedocation.settings import Settings
from lastedocation.web.i18n import translations
from lastedocation.web.pages import speech
from lastedocation.web.render import LANG_COOKIE, TEMPLATES
from tests.conftest import ADMIN, add_account
from tests.web.conftest import browser_sign_in

MEMBER = "mina"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The studio registers its bundled Whisper base on first start."""
    return Settings(
        data_dir=tmp_path / "studio", import_sample_dataset=False, bundled_speech_model=True
    )


def member_browser(app: FastAPI, settings: Settings) -> Iterator[TestClient]:
    with TestClient(app) as client:
        add_account(settings, ADMIN, role="admin")
        add_account(settings, MEMBER)
        browser_sign_in(client, MEMBER)
        yield client


@pytest.fixture
def member(app: FastAPI, settings: Settings) -> Iterator[TestClient]:
    yield from member_browser(app, settings)


def content(html: str) -> str:
    return html.split('id="content"', 1)[1]


def test_page_lists_speech_models_languages_and_voices_in_persian(member: TestClient) -> None:
    page = member.get("/speech")
    assert page.status_code == 200
    assert '<html lang="fa" dir="rtl"' in page.text
    body = content(page.text)
    assert "گفتار به متن" in body and "متن به گفتار" in body
    # the bundled model, chosen first; Persian first among the languages, then detection
    assert re.search(r'<option value="whisper-base" selected>whisper-base</option>', body)
    languages = re.findall(r'<option value="([a-z]+)">', body.split('id="stt-language"')[1])
    assert languages[:3] == ["fa", "auto", "en"]
    assert ">فارسی</option>" in body and ">تشخیص خودکار زبان</option>" in body
    # espeak-ng's voice, chosen by default, with its licence beside it and its note
    voice = re.search(r'<option value="espeak-fa" selected[^>]*>([^<]+)</option>', body)
    assert voice is not None and "GPL-3.0-or-later" in voice.group(1)
    assert 'data-engine="espeak"' in body
    assert "ساخت صدا با فرمنت‌ها" in body  # the note, translated
    # live parts: the recorder, the upload, the hear button and the script behind them
    for control in ('id="record"', 'id="stt-file"', 'id="hear"', 'id="segments"'):
        assert control in body, control
    assert 'src="/static/js/speech.js"' in page.text
    assert "data-mic-denied=" in body and "میکروفون بسته است" in body
    assert "هنوز مدل گفتاری‌ای نیست" not in body


def test_page_in_english_reads_left_to_right(member: TestClient) -> None:
    member.cookies.set(LANG_COOKIE, "en")
    page = member.get("/speech")
    assert page.status_code == 200 and '<html lang="en" dir="ltr"' in page.text
    body = content(page.text)
    for text in ("Speech to text", "Text to speech", "Speech model", "Hear", "Detect the language"):
        assert text in body, text
    assert "Formant synthesis: clear but robotic" in body
    assert re.search(r'<option value="whisper-base" selected>', body)


def test_without_a_speech_model_the_page_says_so(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "bare", import_sample_dataset=False, bundled_speech_model=False
    )
    for browser in member_browser(create_app(settings), settings):
        body = content(browser.get("/speech").text)
        assert "هنوز مدل گفتاری‌ای نیست" in body
        assert re.search(r'<button type="button" id="record" disabled>', body)
        assert re.search(r'<button type="button" id="stt-upload" disabled>', body)
        assert 'id="hear"' in body and 'id="hear" disabled' not in body  # espeak still speaks


def test_signed_out_visitors_are_sent_to_sign_in(app: FastAPI) -> None:
    with TestClient(app) as anonymous:
        answer = anonymous.get("/speech", follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/speech"


def test_every_message_of_the_speech_page_and_the_playground_is_in_persian() -> None:
    catalog = translations("fa")
    used = {name for _, name in speech.LANGUAGES}
    for template in [
        *(TEMPLATES / "speech").glob("*.html"),
        TEMPLATES / "playground" / "chat.html",
    ]:
        found = re.findall(r"""_\(\s*(?:"([^"]+)"|'([^']+)')\s*\)""", template.read_text())
        used |= {a or b for a, b in found}
    missing = sorted(m for m in used if catalog.gettext(m) == m and m != "Top-p")
    assert not missing


def test_a_speech_model_page_offers_transcription_not_chat(member: TestClient) -> None:
    (whisper,) = member.get("/api/v1/models").json()
    assert (whisper["kind"], whisper["source"], whisper["name"]) == (
        "speech",
        "bundled",
        "whisper-base",
    )
    page = content(member.get(f"/models/{whisper['id']}").text)
    assert f'href="/speech?model={whisper["id"]}"' in page and "/playground?model=" not in page
    assert "/export" not in page and "/push" not in page and "/evaluations" not in page
    assert "همراه استودیو" in page and "MIT" in page  # its source and licence, in Persian
    chosen = member.get(f"/speech?model={whisper['id']}").text
    assert re.search(r'<option value="whisper-base"\s*selected', chosen)
    # the text-only services refuse it with a 400 that says what it is
    chat = member.post(
        "/v1/chat/completions",
        json={"model": "whisper-base", "messages": [{"role": "user", "content": "سلام"}]},
        headers={"X-CSRF-Token": member.cookies.get("ldt_csrf", "")},
    )
    assert chat.status_code == 400 and "speech (Whisper) model" in chat.text


def test_the_speech_page_preselects_the_model_a_link_names(tmp_path: Path) -> None:
    """Two speech models: `?model=ID` picks the one named, not the bundled default."""
    from lastedocation.speech import bundled

    roots = tmp_path / "srv"
    shutil.copytree(bundled.joined_model(), roots / "second-whisper")
    settings = Settings(
        data_dir=tmp_path / "studio",
        import_sample_dataset=False,
        bundled_speech_model=True,
        server_roots=[roots],
    )
    with TestClient(create_app(settings)) as client:
        add_account(settings, ADMIN, role="admin")
        browser_sign_in(client, ADMIN)
        made = client.post(
            "/api/v1/models/register",
            json={"path": str(roots / "second-whisper")},
            headers={"X-CSRF-Token": client.cookies.get("ldt_csrf", "")},
        )
        assert made.status_code == 201, made.text
        default = client.get("/speech").text
        assert re.search(r'<option value="whisper-base"\s*selected', default)
        chosen = client.get(f"/speech?model={made.json()['id']}").text
        assert re.search(r'<option value="second-whisper"\s*selected', chosen)
        assert not re.search(r'<option value="whisper-base"\s*selected', chosen)
