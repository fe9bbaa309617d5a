"""The system page shows the machine's real figures and refreshes them; pages need a
signed-in browser."""

from __future__ import annotations

import os
import re
import shutil

import psutil
import torch
from fastapi.testclient import TestClient

from lastedocation.settings import Settings
from tests.conftest import add_account
from tests.web.conftest import browser_sign_in


def latin(text: str) -> str:
    return text.translate(str.maketrans("۰۱۲۳۴۵۶۷۸۹٫٬", "0123456789.,"))


def test_system_page_shows_the_machines_figures(browser: TestClient, settings: Settings) -> None:
    page = browser.get("/system")
    assert page.status_code == 200 and 'dir="rtl"' in page.text
    assert 'hx-get="/system/figures"' in page.text and 'hx-trigger="every 5s"' in page.text
    text = latin(page.text)
    cores = psutil.cpu_count(logical=True)
    assert f"{cores} هسته" in text
    total_gb = psutil.virtual_memory().total / 2**30
    assert f"از {total_gb:,.1f} گیگابایت" in text  # the real memory size
    disk_gb = shutil.disk_usage(settings.data_dir).total / 2**30
    assert f"از {disk_gb:,.1f} گیگابایت" in text
    assert f"<code>{settings.data_dir}</code>" in page.text
    load = re.search(r"میانگین بار \(۱، ۵ و ۱۵ دقیقه\): ([^<]+)<", page.text)
    assert load and len(latin(load[1]).split("، ")) == len(os.getloadavg())
    if torch.cuda.is_available():  # pragma: no cover - the CI machine has no GPU
        assert torch.cuda.get_device_name(0) in page.text
    else:
        assert "این دستگاه GPU ندارد." in page.text
        assert "آموزش و گفت‌وگو روی پردازنده اجرا می‌شوند" in page.text

    fragment = browser.get("/system/figures", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert fragment.text.lstrip().startswith('<div id="figures"')

    browser.post("/preferences", data={"lang": "en", "csrf_token": browser.cookies["ldt_csrf"]})
    english = browser.get("/system").text
    assert f"{psutil.cpu_count(logical=True)} cores" in english and "%" in english


def test_pages_need_a_session_and_speech_says_it_is_not_there(
    browser: TestClient, settings: Settings
) -> None:
    with TestClient(browser.app) as anonymous:
        for path in (
            "/system",
            "/system/figures",
            "/speech",
            "/settings",
            "/models",
            "/playground",
        ):
            answer = anonymous.get(path, follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    speech = browser.get("/speech")
    assert speech.status_code == 200 and "گفتار به متن" in speech.text

    add_account(settings, "mina")
    with TestClient(browser.app) as member:
        browser_sign_in(member, "mina")
        assert member.get("/system").status_code == 200  # every account may see the figures
