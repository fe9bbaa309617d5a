"""The backup page in a signed-in browser against the real app: an admin sees each
target's card (where, encryption, schedule, retention, last backup) and the history,
in Persian (right to left) and English; members get the 403 page and no link to it;
the dashboard tells admins when a target has no backup or its last one failed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.settings import Settings
from lastedocation.web.render import LANG_COOKIE
from tests.conftest import add_account
from tests.web.conftest import browser_sign_in

MEMBER = "mina"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "roots").mkdir()
    return Settings(
        data_dir=tmp_path / "studio",
        import_sample_dataset=False,
        bundled_speech_model=False,
        server_roots=[tmp_path / "roots"],
        backup_targets=[
            {"name": "nas", "kind": "folder", "path": str(tmp_path / "nas"), "every_hours": 6},
        ],
    )


@pytest.fixture
def member(app: FastAPI, settings: Settings, browser: TestClient) -> Iterator[TestClient]:
    """A member's browser on the same running studio as the admin's `browser`."""
    add_account(settings, MEMBER)
    client = TestClient(app)
    try:
        browser_sign_in(client, MEMBER)
        yield client
    finally:
        client.close()


def content(html: str) -> str:
    return html.split('id="content"', 1)[1]


def nav(html: str) -> str:
    return html.split('<nav class="main"', 1)[1].split("</nav>", 1)[0]


def back_up(browser: TestClient) -> dict[str, object]:
    """A backup through the API, as the page's button starts one."""
    csrf = {"X-CSRF-Token": browser.cookies["ldt_csrf"]}
    queued = browser.post("/api/v1/backup/jobs", json={"kind": "backup"}, headers=csrf)
    assert queued.status_code == 202, queued.text
    for _ in range(1200):
        job: dict[str, object] = browser.get(f"/api/v1/backup/jobs/{queued.json()['id']}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError("the backup did not end")


def test_admin_sees_targets_and_history_in_persian_and_english(
    browser: TestClient, tmp_path: Path
) -> None:
    page = browser.get("/backup")
    assert page.status_code == 200
    assert '<html lang="fa" dir="rtl"' in page.text
    body = content(page.text)
    assert "پشتیبان‌گیری" in body and "اکنون پشتیبان بگیر" in body and "وارسی" in body
    assert str(tmp_path / "nas") in body and "هر ۶ ساعت" in body
    assert "هنوز گرفته نشده" in body and "هنوز هیچ کار پشتیبان‌گیری‌ای" in body
    assert 'data-target="nas"' in body and "/static/js/backup.js" in page.text
    assert 'href="/backup" aria-current="page"' in nav(page.text)

    job = back_up(browser)
    assert job["state"] == "done", job
    browser.cookies.set(LANG_COOKIE, "en")
    page = browser.get("/backup")
    assert '<html lang="en" dir="ltr"' in page.text
    body = content(page.text)
    assert "Back up now" in body and "Verify" in body and "Prune" in body
    assert "Every 6 hours" in body and "the last 7, 7 daily and 4 weekly snapshots" in body
    assert "No: whoever can read the target can read the snapshots." in body
    assert "None yet" not in body and " sent" in body
    history = browser.get("/backup/history")
    assert history.status_code == 200
    assert f'data-job="{job["id"]}" data-state="done"' in history.text
    assert "completed" in history.text and str(job["snapshot_id"])[:8] in history.text

    snapshots = browser.get("/backup/targets/nas/snapshots")
    assert snapshots.status_code == 200
    assert str(job["snapshot_id"])[:8] in snapshots.text and 'name="folder"' in snapshots.text
    assert str(tmp_path / "roots") in snapshots.text  # where a restore may go
    assert browser.get("/backup/targets/attic/snapshots").status_code == 404


def test_members_get_403_and_no_link(browser: TestClient, member: TestClient) -> None:
    assert 'href="/backup"' in nav(browser.get("/").text)
    home = member.get("/")
    assert home.status_code == 200 and 'href="/backup"' not in nav(home.text)
    assert 'id="backup-alert"' not in home.text
    for path in ("/backup", "/backup/targets", "/backup/history", "/backup/targets/nas/snapshots"):
        page = member.get(path)
        assert page.status_code == 403, path
        assert "فقط مدیر می‌تواند پشتیبان‌گیری‌ها را مدیریت کند" in page.text


def test_dashboard_says_when_there_is_no_backup(browser: TestClient) -> None:
    browser.cookies.set(LANG_COOKIE, "en")
    alert = browser.get("/").text.split('id="backup-alert"', 1)
    assert len(alert) == 2 and "No backup to nas yet." in alert[1].split("</p>", 1)[0]
    assert back_up(browser)["state"] == "done"
    assert 'id="backup-alert"' not in browser.get("/").text


def test_signed_out_goes_to_login(app: FastAPI, browser: TestClient) -> None:
    anonymous = TestClient(app)  # `browser` runs the app's lifespan
    try:
        page = anonymous.get("/backup", follow_redirects=False)
    finally:
        anonymous.close()
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/backup"
