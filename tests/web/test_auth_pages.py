"""Signing in and out of the web UI, the session cookie, CSRF, language and theme."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account


def test_pages_need_a_session_and_sign_in_returns_to_the_page(
    app: FastAPI, settings: Settings
) -> None:
    add_account(settings, ADMIN, role="admin")
    with TestClient(app) as client:
        first = client.get("/?x=1", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/login?next=/?x=1"
        page = client.get("/login")
        assert 'lang="fa" dir="rtl"' in page.text and "ورود" in page.text
        csrf = client.cookies["ldt_csrf"]
        wrong = client.post(
            "/login", data={"username": ADMIN, "password": "nope nope nope", "csrf_token": csrf}
        )
        assert wrong.status_code == 401 and "نام کاربری یا گذرواژه نادرست است" in wrong.text
        evil = client.post(
            "/login",
            data={"username": ADMIN, "password": "correct horse battery staple",
                  "csrf_token": csrf, "next": "https://evil.example/"},
            follow_redirects=False,
        )  # fmt: skip
        assert evil.headers["location"] == "/"  # no open redirect
        cookie = client.cookies["ldt_session"]
        assert "httponly" in evil.headers["set-cookie"].lower()
        assert client.get("/").status_code == 200

        assert client.cookies["ldt_csrf"] != csrf  # a new CSRF token for the new session
        refused = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert refused.status_code == 403  # the old token no longer counts
        client.post("/logout", data={"csrf_token": client.cookies["ldt_csrf"]})
        client.cookies.set("ldt_session", cookie)  # the old cookie, replayed
        again = client.get("/", follow_redirects=False)
        assert again.status_code == 303  # the session was revoked on the server


def test_the_api_takes_the_session_cookie_with_a_csrf_token(browser: TestClient) -> None:
    assert browser.get("/api/v1/datasets").status_code == 200
    rows = b'{"question": "a", "answer": "b"}\n'
    without = browser.post("/api/v1/datasets", files={"file": ("a.jsonl", rows)})
    assert without.status_code == 403 and without.json()["rule"] == "csrf"
    with_token = browser.post(
        "/api/v1/datasets",
        files={"file": ("a.jsonl", rows)},
        headers={"X-CSRF-Token": browser.cookies["ldt_csrf"]},
    )
    assert with_token.status_code == 201, with_token.text


def test_language_and_theme_switch_and_errors_read_in_the_language(browser: TestClient) -> None:
    csrf = browser.cookies["ldt_csrf"]
    persian = browser.get("/")
    assert 'dir="rtl"' in persian.text and "پیشخوان" in persian.text
    browser.post("/preferences", data={"lang": "en", "theme": "dark", "csrf_token": csrf})
    english = browser.get("/")
    assert 'lang="en" dir="ltr" data-theme="dark"' in english.text and "Dashboard" in english.text
    browser.post("/preferences", data={"lang": "xx", "csrf_token": csrf})  # ignored
    assert 'lang="en"' in browser.get("/").text
    browser.post("/preferences", data={"lang": "fa", "csrf_token": csrf})
    missing = browser.get("/no/such/page")
    assert missing.status_code == 404
    assert "پیدا نشد" in missing.text and 'dir="rtl"' in missing.text


def test_the_login_page_counts_failures_with_the_api(app: FastAPI, settings: Settings) -> None:
    add_account(settings, ADMIN, role="admin")
    with TestClient(app) as client:
        client.get("/login")
        form = {"username": ADMIN, "password": "wrong wrong wrong"}
        for _ in range(5):
            form["csrf_token"] = client.cookies["ldt_csrf"]
            assert client.post("/login", data=form).status_code == 401
        form["csrf_token"] = client.cookies["ldt_csrf"]
        locked = client.post("/login", data=form)
        assert locked.status_code == 429 and "تلاش‌های ناموفق زیاد بود" in locked.text
        api = client.post(
            "/api/v1/auth/login",
            json={"username": ADMIN, "password": "correct horse battery staple"},
        )
        assert api.status_code == 429  # the same limit, whichever door was knocked on
