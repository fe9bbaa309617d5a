"""Speech in Chromium against a real studio with the bundled Whisper base: recording on
the speech page and in the playground (Chromium's fake microphone plays an espeak-ng
Persian sentence), uploading a file with live segments and an srt download, hearing
text and answers, a refused microphone, and the page on a phone.

Chromium's fake capture device reads the wav itself and resamples it to the stream's
rate, so espeak-ng's 22,050 Hz 16-bit mono file is used as it is (checked with
Chromium 156: the recording decodes to the sentence; no conversion is needed).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from playwright.sync_api import Browser, Page, Playwright, StorageState, ViewportSize, expect

from lastedocation.web.render import LANG_COOKIE, THEME_COOKIE
from tests.conftest import ADMIN, PASSWORD, add_account
from tests.e2e.conftest import CHROMIUM, DESKTOP, PHONE, PageProblems, Studio, new_context
from tests.inference.test_generate import untrained_model
from tests.speech.conftest import SENTENCES, espeak_wav

MEMBER = "mina"
PERSIAN = re.compile(r"[\u0600-\u06ff]{2}")  # two Persian letters in a row
TRANSCRIBED_S = 60_000  # ms: upload, load Whisper base, decode a few seconds on 2 cores


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny text model with random weights: its answers are nonsense, but they are
    Persian-looking text a voice can read."""
    torch.set_num_threads(1)
    return untrained_model(tmp_path_factory.mktemp("models") / "tiny-chat", context=256)


@contextlib.contextmanager
def studio_with(folder: Path, tiny_chat: Path, *, speech_model: bool) -> Iterator[Studio]:
    """A studio with (or without) the bundled Whisper base, and the tiny text model to
    chat with, so the playground's answers can be heard."""
    env = {
        "LASTEDOCATION_BUNDLED_SPEECH_MODEL": str(speech_model).lower(),
        "LASTEDOCATION_SERVER_ROOTS": json.dumps([str(tiny_chat.parent)]),
    }
    server = Studio(folder / "data", **env).start()
    try:
        add_account(server.settings, ADMIN, role="admin")
        add_account(server.settings, MEMBER)
        with server.api() as api:
            body = {"path": str(tiny_chat), "name": "tiny-chat"}
            registered = api.post("/api/v1/models/register", json=body)
            assert registered.status_code == 201, registered.text
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def speech_studio(tmp_path_factory: pytest.TempPathFactory, tiny_chat: Path) -> Iterator[Studio]:
    with studio_with(tmp_path_factory.mktemp("speech-studio"), tiny_chat, speech_model=True) as s:
        yield s


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak_wav(SENTENCES[0], tmp_path_factory.mktemp("mic") / "sentence.wav")


def launch(driver: Playwright, wav: Path, *, allow: bool = True) -> Browser:
    ui = "--use-fake-ui-for-media-stream" + ("" if allow else "=deny")
    args = [
        "--no-sandbox",
        ui,
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]
    return driver.chromium.launch(executable_path=CHROMIUM, args=args)


@pytest.fixture(scope="module")
def microphone_browser(playwright_driver: Playwright, microphone_wav: Path) -> Iterator[Browser]:
    browser = launch(playwright_driver, microphone_wav)
    yield browser
    browser.close()


def sign_in(browser: Browser, studio: Studio, username: str) -> StorageState:
    problems = PageProblems()
    context = new_context(browser, studio.url, problems)
    page = context.new_page()
    page.goto("/login")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form[action='/login'] button").click()
    page.wait_for_url(f"{studio.url}/")
    state = context.storage_state()
    context.close()
    problems.check()
    return state


@pytest.fixture(scope="module")
def member_state(microphone_browser: Browser, speech_studio: Studio) -> StorageState:
    return sign_in(microphone_browser, speech_studio, MEMBER)


@pytest.fixture
def tab(
    microphone_browser: Browser, speech_studio: Studio, member_state: StorageState
) -> Iterator[Callable[..., Page]]:
    """Tabs signed in as the member, with the fake microphone; any console error in
    them fails the test."""
    problems = PageProblems()
    contexts = []

    def open_tab(lang: str = "fa", viewport: ViewportSize = DESKTOP, theme: str = "light") -> Page:
        context = new_context(
            microphone_browser, speech_studio.url, problems, storage_state=member_state,
            viewport=viewport, accept_downloads=True,
        )  # fmt: skip
        chosen = {LANG_COOKIE: lang, THEME_COOKIE: theme}
        cookies = [{"name": k, "value": v, "url": speech_studio.url} for k, v in chosen.items()]
        context.add_cookies(cookies)  # type: ignore[arg-type]
        contexts.append(context)
        return context.new_page()

    yield open_tab
    for context in contexts:
        context.close()
    problems.check()


def record(page: Page, start: str, stop: str, seconds: float = 3.2) -> None:
    page.locator(start).click()
    page.wait_for_timeout(seconds * 1000)  # the fake microphone plays the sentence
    page.locator(stop).click()


def screenshot(page: Page, factory: pytest.TempPathFactory, name: str) -> None:
    """A full-page picture, for people to look at (its path is printed)."""
    path = factory.getbasetemp() / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


def audio_duration(page: Page, selector: str) -> float:
    """The audio element's duration once its data loaded (0 if it never does)."""
    page.wait_for_function(
        "s => { const a = document.querySelector(s); return a && a.duration > 0; }",
        arg=selector,
        timeout=30_000,
    )
    return float(page.evaluate("s => document.querySelector(s).duration", selector))


def test_recording_on_the_speech_page_shows_a_persian_transcript(
    tab: Callable[..., Page], tmp_path_factory: pytest.TempPathFactory
) -> None:
    page = tab("fa")
    page.goto("/speech")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.locator("#stt-model")).to_have_value("whisper-base")
    expect(page.locator("#stt-language")).to_have_value("fa")
    record(page, "#record", "#record-stop")
    segment = page.locator("#segments li span").first
    expect(segment).to_have_text(PERSIAN, timeout=TRANSCRIBED_S)
    expect(segment).to_have_attribute("dir", "auto")
    expect(page.locator("#job-state")).to_have_text("کامل‌شده", timeout=TRANSCRIBED_S)
    expect(page.locator("#segments time").first).to_have_text(re.compile("^۰:۰۰"))
    expect(page.locator("#job-downloads")).to_be_visible()
    expect(page.locator("#job-cancel")).to_be_hidden()
    expect(page.locator("#jobs-body tr")).to_have_count(1)
    screenshot(page, tmp_path_factory, "speech-desktop-fa")


def test_upload_shows_live_segments_and_downloads_an_srt(
    tab: Callable[..., Page], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    clip = espeak_wav(" ".join(SENTENCES[:3]), tmp_path / "three sentences.wav")
    page = tab("en", theme="dark")
    page.goto("/speech")
    page.locator("#stt-file").set_input_files(clip)
    page.get_by_role("button", name="Transcribe", exact=True).click()
    expect(page.locator("#job-name")).to_have_text("three sentences.wav")
    expect(page.locator("#segments li").first).to_be_visible(timeout=TRANSCRIBED_S)
    expect(page.locator("#job-state")).to_have_text("completed", timeout=TRANSCRIBED_S)
    assert PERSIAN.search(page.locator("#segments").inner_text())
    with page.expect_download() as download:
        page.locator("#job-downloads a[data-format=srt]").click()
    srt = Path(download.value.path()).read_text(encoding="utf-8")
    assert re.search(r"^1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n", srt, re.M), srt
    assert PERSIAN.search(srt)
    screenshot(page, tmp_path_factory, "speech-desktop-en")


def test_a_long_transcription_can_be_cancelled_and_deleted(
    tab: Callable[..., Page], tmp_path: Path
) -> None:
    clip = espeak_wav(" ".join(SENTENCES * 2), tmp_path / "long.wav")  # about 45 s of speech
    page = tab("en")
    page.goto("/speech")
    page.locator("#stt-file").set_input_files(clip)
    page.get_by_role("button", name="Transcribe", exact=True).click()
    expect(page.locator("#job-name")).to_have_text("long.wav")
    page.locator("#job-cancel").click()
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=TRANSCRIBED_S)
    expect(page.locator("#job-cancel")).to_be_hidden()
    row = page.locator("#jobs-body tr", has_text="long.wav")
    expect(row.locator(".badge")).to_have_text("cancelled")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    expect(page.locator("#job")).to_be_hidden()


def test_hear_on_the_speech_page_plays_on_a_phone(
    tab: Callable[..., Page], tmp_path_factory: pytest.TempPathFactory
) -> None:
    page = tab("fa", viewport=PHONE)
    page.goto("/speech")
    expect(page.locator("#voice-licence")).to_have_text("GPL-3.0-or-later")
    download = page.locator("#tts-download")
    expect(download).to_be_hidden()  # nothing to download before hearing
    page.locator("#tts-speed").fill("1.2")
    page.get_by_role("button", name="شنیدن").click()
    assert audio_duration(page, "#tts-audio") > 1
    expect(download).to_be_visible()
    expect(download).to_have_attribute("href", re.compile("^blob:"))
    width = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1] + 1, f"the speech page scrolls sideways on a phone: {width}"
    screenshot(page, tmp_path_factory, "speech-phone-fa")


def test_playground_microphone_fills_the_question_and_answers_can_be_heard(
    tab: Callable[..., Page], tmp_path_factory: pytest.TempPathFactory
) -> None:
    page = tab("fa")
    page.goto("/playground")
    record(page, "#mic", "#mic")
    expect(page.locator("#prompt")).to_have_value(PERSIAN, timeout=TRANSCRIBED_S)
    page.locator("#max_tokens").fill("8")
    page.locator("#send").click()
    hear = page.locator(".msg.assistant .hear")
    expect(hear).to_be_visible(timeout=30_000)
    hear.click()
    assert audio_duration(page, ".msg.assistant audio") > 0
    screenshot(page, tmp_path_factory, "playground-speech-fa")
    phone = tab("fa", viewport=PHONE)
    phone.goto("/playground")
    mic, prompt = phone.locator("#mic").bounding_box(), phone.locator("#prompt").bounding_box()
    assert mic and prompt and mic["x"] + mic["width"] <= prompt["x"], "the microphone sits beside"
    width = phone.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1] + 1, f"the playground scrolls sideways on a phone: {width}"
    screenshot(phone, tmp_path_factory, "playground-phone-fa")


def test_a_refused_microphone_is_explained(
    playwright_driver: Playwright, microphone_wav: Path, speech_studio: Studio
) -> None:
    browser = launch(playwright_driver, microphone_wav, allow=False)
    try:
        problems = PageProblems()
        state = sign_in(browser, speech_studio, MEMBER)
        context = new_context(browser, speech_studio.url, problems, storage_state=state)
        page = context.new_page()
        page.goto("/speech")
        page.locator("#record").click()
        expect(page.locator("#stt-error .alert")).to_contain_text("میکروفون بسته است")
        expect(page.locator("#record")).to_be_enabled()
        page.goto("/playground")
        page.locator("#mic").click()
        expect(page.locator("#chat-error .alert")).to_contain_text("میکروفون بسته است")
        context.close()
        problems.check()
    finally:
        browser.close()


def test_without_a_speech_model_the_microphone_fails_politely(
    microphone_browser: Browser, tiny_chat: Path, tmp_path: Path
) -> None:
    with studio_with(tmp_path, tiny_chat, speech_model=False) as studio:
        problems = PageProblems()
        state = sign_in(microphone_browser, studio, MEMBER)
        context = new_context(microphone_browser, studio.url, problems, storage_state=state)
        page = context.new_page()
        page.goto("/speech")
        expect(page.locator("main .alert.warn").first).to_contain_text("هنوز مدل گفتاری‌ای نیست")
        expect(page.locator("#record")).to_be_disabled()
        page.goto("/playground")
        record(page, "#mic", "#mic", seconds=1)
        refusal = page.locator("#chat-error .alert")
        expect(refusal).to_contain_text("گفتار به متن در دسترس نیست:")
        expect(refusal).to_contain_text("LASTEDOCATION_DEFAULT_SPEECH_MODEL")  # the API's detail
        assert "{" not in refusal.inner_text()  # a sentence, not the JSON it came in
        expect(page.locator("#prompt")).to_have_value("")
        expect(page.locator("#mic")).to_be_enabled()
        context.close()
        # the refused request is logged by the browser itself: the only error allowed
        assert all("404" in problem for problem in problems.problems), problems.problems


def test_a_speech_run_page_charts_its_error_rates(
    speech_studio: Studio, tab: Callable[..., Page], tmp_path: Path
) -> None:
    """A member's speech run (a tiny random Whisper on espeak clips) completes, and its
    page draws the word and character error rates of its evaluations."""
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        rows = ["file_name,transcription"]
        for n, sentence in enumerate(SENTENCES[:4]):
            zf.write(espeak_wav(sentence, tmp_path / f"{n}.wav"), f"{n}.wav")
            rows.append(f"{n}.wav,{sentence}")
        zf.writestr("metadata.csv", "\n".join(rows) + "\n")
    with speech_studio.api(MEMBER) as api:
        with archive.open("rb") as f:
            uploaded = api.post("/api/v1/datasets/speech", files={"file": ("clips.zip", f)})
        assert uploaded.status_code == 201, uploaded.text
        body = {
            "dataset_id": uploaded.json()["id"],
            "task": "speech",
            "model": {"source": "scratch", "preset": "whisper-tiny-random"},
            "data": {"validation_fraction": 0.25},
            "training": {"max_steps": 4, "batch_size": 2, "eval_every": 2, "save_every": 4},
        }
        created = api.post("/api/v1/runs", json=body)
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        deadline = time.monotonic() + 120
        while api.get(f"/api/v1/runs/{run_id}").json()["state"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, "the speech run did not end"
            time.sleep(0.5)
        assert api.get(f"/api/v1/runs/{run_id}").json()["state"] == "completed"
    page = tab()
    page.goto(f"{speech_studio.url}/runs/{run_id}")
    expect(page.locator("#cap-errors")).to_have_text("نرخ‌های خطا (اعتبارسنجی)")
    expect(page.locator("#chart-errors canvas")).to_have_count(1)
    expect(page.locator("#cap-speed")).to_have_text("ثانیهٔ صدا در هر ثانیه")
