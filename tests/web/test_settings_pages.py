"""The settings page in a signed-in browser: API tokens (the secret shown once, then
revoked), password change, and accounts, which only admins see and manage."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from lastedocation.settings import Settings
from tests.conftest import PASSWORD, add_account
from tests.web.conftest import browser_sign_in

NEW_PASSWORD = "a brand new passphrase"


def form(browser: TestClient, **fields: str) -> dict[str, str]:
    return {"csrf_token": browser.cookies["ldt_csrf"], **fields}


def test_create_an_api_token_that_works_then_revoke_it(browser: TestClient) -> None:
    page = browser.get("/settings")
    assert page.status_code == 200 and "توکن‌های API" in page.text
    assert "هیچ توکن API ندارید" in page.text
    unnamed = browser.post("/settings/tokens", data=form(browser, name="  "))
    assert unnamed.status_code == 400 and "برای توکن نامی بگذارید" in unnamed.text

    created = browser.post("/settings/tokens", data=form(browser, name="اسکریپت ارزیابی"))
    assert created.status_code == 201
    secret = re.search(r'<code id="new-secret">(ldt_[^<]+)</code>', created.text)
    assert secret, created.text
    assert "فقط همین یک بار نشان داده می‌شود" in created.text
    with TestClient(browser.app) as script:  # the token works on the API, no cookie
        me = script.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret[1]}"})
        assert me.status_code == 200 and me.json()["username"] == "admin"
    again = browser.get("/settings")
    assert secret[1] not in again.text  # shown once, never again
    assert "اسکریپت ارزیابی" in again.text and secret[1][:8] in again.text

    token_id = re.search(r'data-token="(\d+)"', again.text)
    assert token_id
    refused = browser.post(f"/settings/tokens/{token_id[1]}/revoke", data={"csrf_token": "x"})
    assert refused.status_code == 403  # the CSRF token is checked
    revoked = browser.post(f"/settings/tokens/{token_id[1]}/revoke", data=form(browser))
    assert revoked.status_code == 200 and revoked.url.query == b"done=revoked"
    assert "توکن باطل شد" in revoked.text and "باطل‌شده" in revoked.text
    with TestClient(browser.app) as script:
        me = script.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret[1]}"})
        assert me.status_code == 401
    missing = browser.post("/settings/tokens/999/revoke", data=form(browser))
    assert missing.status_code == 404 and "پیدا نشد" in missing.text


def test_password_change_says_what_is_wrong_and_keeps_this_browser_signed_in(
    browser: TestClient, settings: Settings
) -> None:
    wrong = browser.post(
        "/settings/password",
        data=form(
            browser,
            current_password="not my password",
            new_password=NEW_PASSWORD,
            new_password_again=NEW_PASSWORD,
        ),
    )
    assert wrong.status_code == 400 and "گذرواژهٔ کنونی نادرست است" in wrong.text
    differ = browser.post(
        "/settings/password",
        data=form(
            browser,
            current_password=PASSWORD,
            new_password=NEW_PASSWORD,
            new_password_again="something else",
        ),
    )
    assert differ.status_code == 400 and "دو گذرواژه" in differ.text
    short = browser.post(
        "/settings/password",
        data=form(browser, current_password=PASSWORD, new_password="short", new_password_again="short"),
    )  # fmt: skip
    assert short.status_code == 400 and "دست‌کم ۱۰ نویسه" in short.text

    with TestClient(browser.app) as elsewhere:  # another browser of the same account
        browser_sign_in(elsewhere)
        changed = browser.post(
            "/settings/password",
            data=form(
                browser,
                current_password=PASSWORD,
                new_password=NEW_PASSWORD,
                new_password_again=NEW_PASSWORD,
            ),
        )
        assert changed.status_code == 200 and changed.url.path == "/settings"
        assert "گذرواژه‌تان تغییر کرد" in changed.text
        assert elsewhere.get("/settings", follow_redirects=False).status_code == 303
    assert browser.get("/settings").status_code == 200  # this browser got a new session
    with TestClient(browser.app) as fresh:
        browser_sign_in(fresh, password=NEW_PASSWORD)


def test_admins_manage_accounts_and_members_cannot(browser: TestClient, settings: Settings) -> None:
    page = browser.get("/settings")
    assert "حساب‌ها" in page.text and "افزودن حساب" in page.text
    bad = browser.post(
        "/settings/users", data=form(browser, username="x", password=PASSWORD, role="member")
    )
    assert bad.status_code == 400 and "نام کاربری باید ۲ تا ۶۴" in bad.text
    added = browser.post(
        "/settings/users", data=form(browser, username="mina", password=PASSWORD, role="member")
    )
    assert added.status_code == 200 and "حساب افزوده شد" in added.text and "mina" in added.text
    taken = browser.post(
        "/settings/users", data=form(browser, username="mina", password=PASSWORD, role="admin")
    )
    assert taken.status_code == 409 and "is taken" in taken.text
    own_id = re.search(r'data-user="(\d+)">\s*<td class="ltr">admin', added.text)
    assert own_id
    self_delete = browser.post(f"/settings/users/{own_id[1]}/delete", data=form(browser))
    assert self_delete.status_code == 409 and "حساب خودتان" in self_delete.text

    with TestClient(browser.app) as member:
        browser_sign_in(member, "mina")
        own = member.get("/settings")
        assert own.status_code == 200 and "توکن‌های API" in own.text
        assert "افزودن حساب" not in own.text and 'id="users"' not in own.text
        refused = member.post(
            "/settings/users",
            data={
                "csrf_token": member.cookies["ldt_csrf"],
                "username": "evil",
                "password": PASSWORD,
            },
        )
        assert refused.status_code == 403 and "اجازه ندارید" in refused.text

    babak_id = add_account(settings, "babak")
    deleted = browser.post(f"/settings/users/{babak_id}/delete", data=form(browser))
    assert deleted.status_code == 200 and "حساب حذف شد" in deleted.text
    assert "babak" not in deleted.text
