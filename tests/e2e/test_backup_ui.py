"""The backup page in Chromium against a real `lastedocation serve` with a folder
target: "Back up now" shows the job's progress live and its row in the history as
completed; the snapshot it made is listed and restored into a new data folder; every
control is named and a phone's screen holds the page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from lastedocation.web.render import LANG_COOKIE
from tests.conftest import ADMIN, PASSWORD, add_account
from tests.e2e.conftest import PHONE, PageProblems, Studio, new_context
from tests.e2e.test_qualities import unnamed_controls


@pytest.fixture
def backed_studio(tmp_path: Path) -> Iterator[Studio]:
    (tmp_path / "roots").mkdir()
    target = {"name": "nas", "kind": "folder", "path": str(tmp_path / "nas")}
    server = Studio(
        tmp_path / "data",
        LASTEDOCATION_BACKUP_TARGETS=json.dumps([target]),
        LASTEDOCATION_SERVER_ROOTS=json.dumps([str(tmp_path / "roots")]),
    ).start()
    try:
        add_account(server.settings, ADMIN, role="admin")
        yield server
    finally:
        server.stop()


def test_back_up_now_then_restore(
    chromium: Browser, backed_studio: Studio, problems: PageProblems, tmp_path: Path
) -> None:
    context = new_context(chromium, backed_studio.url, problems)
    context.add_cookies([{"name": LANG_COOKIE, "value": "en", "url": backed_studio.url}])
    page = context.new_page()
    page.goto("/login")
    page.locator("input[name=username]").fill(ADMIN)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form[action='/login'] button").click()
    page.wait_for_url(f"{backed_studio.url}/")
    expect(page.locator("#backup-alert")).to_contain_text("No backup to nas yet.")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Backup").click()

    card = page.locator('.target[data-target="nas"]')
    card.get_by_role("button", name="Back up now").click()
    expect(page.locator("#live")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("completed", timeout=60_000)
    done = page.locator('#history tr[data-state="done"]')
    expect(done).to_have_count(1)
    expect(done).to_contain_text("Backup")
    expect(card).not_to_contain_text("None yet")  # the card was reloaded

    card.get_by_role("button", name="Snapshots and restore").click()
    form = card.locator("form.restore")
    expect(form).to_be_visible()
    busy = tmp_path / "roots" / "busy"
    busy.mkdir()
    (busy / "file").write_text("here")
    form.get_by_label("Folder on the server").fill(str(busy))
    form.get_by_role("button", name="Restore").click()
    expect(form.locator(".form-error")).to_contain_text("is not empty")
    # the browser logs the refused request; here it was the point
    problems.problems = [p for p in problems.problems if "409 (Conflict)" not in p]

    folder = tmp_path / "roots" / "restored"
    form.get_by_label("Folder on the server").fill(str(folder))
    form.get_by_role("button", name="Restore").click()
    expect(page.locator("#live-what")).to_have_text("Restoring")
    expect(page.locator("#live-state")).to_have_text("completed", timeout=60_000)
    expect(page.locator('#history tr[data-state="done"]')).to_have_count(2)
    assert (folder / "studio.db").is_file()

    # the page's qualities, with a card's snapshots and restore form open
    assert unnamed_controls(page) == []
    page.set_viewport_size(PHONE)
    width = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1] + 1, f"the backup page scrolls sideways on a phone: {width}"
    context.close()
    problems.check()
