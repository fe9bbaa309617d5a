"""A real studio (`lastedocation serve`) and Debian's Chromium, driven by Playwright.

Every page a test opens is watched: a console error or an uncaught exception on any
page fails the test that opened it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import psutil
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    StorageState,
    ViewportSize,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from lastedocation.settings import Settings
from lastedocation.web.render import LANG_COOKIE, THEME_COOKIE
from tests.conftest import ADMIN, PASSWORD, PERCQA, add_account
from tests.server import StudioServer

# `make browser` installs Debian's chromium; CHROMIUM points elsewhere if needed
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# the supervisor looks at runs often, and trains one run at a time
FAST = {
    "LASTEDOCATION_SUPERVISOR_INTERVAL_S": "0.1",
    "LASTEDOCATION_MAX_CONCURRENT_RUNS": "1",
    "LASTEDOCATION_IMPORT_SAMPLE_DATASET": "false",
}
# a few dozen steps of a tiny scratch llama: seconds on one CPU thread
TINY_RUN: dict[str, Any] = {
    "model": {"vocab_size": 500},
    "data": {"split_key": "qid"},
    "training": {"seq_len": 96, "batch_size": 4, "max_steps": 30, "eval_every": 10, "threads": 1},
}


class Studio(StudioServer):
    """`lastedocation serve` whose output is kept, so the printed set-up link can be read."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        env = {**FAST, "PYTHONUNBUFFERED": "1", "COLUMNS": "300", **env}
        super().__init__(data_dir, log_path=data_dir.parent / f"{data_dir.name}-serve.log", **env)
        self.setup_link: str | None = None
        self.dataset_id: int | None = None
        self.run_id: int | None = None

    def start(self) -> Self:
        super().start()  # serve prints the set-up link before it starts listening
        found = re.search(r"(http://\S+/setup\?token=\S+)", self.log())
        self.setup_link = found.group(1) if found else None
        return self

    def stop(self) -> None:
        """Stop the server and the trainers it started (they run in their own sessions, to
        outlive a server restart, so stopping the server leaves them running)."""
        trainers = []
        if self.process is not None and self.process.poll() is None:
            trainers = psutil.Process(self.process.pid).children(recursive=True)
        super().stop()
        for trainer in trainers:
            with contextlib.suppress(psutil.NoSuchProcess):
                trainer.kill()
        psutil.wait_procs(trainers, timeout=30)

    @property
    def settings(self) -> Settings:
        """Settings on the same data folder (to add accounts as `lastedocation users add`)."""
        return Settings(data_dir=self.data_dir, import_sample_dataset=False)

    def log(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @contextlib.contextmanager
    def api(self, username: str = ADMIN, password: str = PASSWORD) -> Iterator[httpx.Client]:
        """An API client signed in with a bearer token (for arranging data, not for checks)."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            body = {"username": username, "password": password}
            response = client.post("/api/v1/auth/login", json=body)
            assert response.status_code == 200, response.text
            client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
            yield client


def percqa_slice(folder: Path, rows: int = 150) -> Path:
    """The first `rows` PerCQA conversations as a .jsonl file a user could upload."""
    assert PERCQA.is_file(), f"the shared PerCQA data is missing at {PERCQA}"
    path = folder / "percqa-150.jsonl"
    path.write_bytes(b"\n".join(PERCQA.read_bytes().splitlines()[:rows]) + b"\n")
    return path


class PageProblems:
    """Console errors and uncaught exceptions of every page in a browser context."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: uncaught {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url") or "?"
            self.problems.append(f"console error: {message.text} (at {where})")

    def check(self) -> None:
        found, self.problems = self.problems, []
        assert not found, "the pages logged errors:\n" + "\n".join(found)


@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    # package scope: Playwright's sync API keeps an event loop running in this thread,
    # which later asyncio.run() calls (tests/runs) must not find
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def chromium(playwright_driver: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run `make browser` "
            "(apt-get install chromium) or set CHROMIUM to the browser's path."
        )
    try:
        # --no-sandbox: the tests may run as root (containers, CI)
        browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    except PlaywrightError as exc:
        pytest.fail(f"Chromium at {CHROMIUM} did not start: {exc}")
    yield browser
    browser.close()


@pytest.fixture(scope="package")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A running studio with an admin account, one uploaded PerCQA dataset and a tiny run
    on it (training in the background while the tests look at the pages)."""
    folder = tmp_path_factory.mktemp("studio")
    server = Studio(folder / "data").start()
    try:
        add_account(server.settings, ADMIN, role="admin")
        with server.api() as api:
            server.dataset_id = upload(api, percqa_slice(folder))
            run = api.post("/api/v1/runs", json={"dataset_id": server.dataset_id, **TINY_RUN})
            assert run.status_code == 201, run.text
            server.run_id = int(run.json()["id"])
        yield server
    finally:
        server.stop()


def upload(api: httpx.Client, path: Path) -> int:
    with path.open("rb") as data:
        response = api.post("/api/v1/datasets", files={"file": (path.name, data)})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.fixture
def fresh_studio(tmp_path: Path) -> Iterator[Studio]:
    """A studio just installed: no account yet, a set-up link printed."""
    server = Studio(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.stop()


def new_context(
    browser: Browser, base_url: str, problems: PageProblems, **options: Any
) -> BrowserContext:
    options.setdefault("viewport", DESKTOP)
    context = browser.new_context(base_url=base_url, **options)
    context.set_default_timeout(15_000)
    context.on("page", problems.watch)
    return context


@pytest.fixture(scope="package")
def signed_in_state(chromium: Browser, studio: Studio) -> StorageState:
    """The admin's cookies after signing in through the login page."""
    problems = PageProblems()
    context = new_context(chromium, studio.url, problems)
    page = context.new_page()
    page.goto("/login")
    page.locator("input[name=username]").fill(ADMIN)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form[action='/login'] button").click()
    page.wait_for_url(f"{studio.url}/")
    state = context.storage_state()
    context.close()
    problems.check()
    return state


@pytest.fixture
def problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def browse(
    chromium: Browser, studio: Studio, signed_in_state: StorageState, problems: PageProblems
) -> Iterator[Callable[..., Page]]:
    """Opens browser tabs signed in as the admin, in a language, theme and window size;
    any page error in them fails the test."""
    contexts: list[BrowserContext] = []

    def open_tab(
        viewport: ViewportSize = DESKTOP, lang: str | None = None, theme: str | None = None
    ) -> Page:
        context = new_context(
            chromium, studio.url, problems, storage_state=signed_in_state, viewport=viewport
        )
        chosen = {LANG_COOKIE: lang, THEME_COOKIE: theme}
        cookies = [{"name": k, "value": v, "url": studio.url} for k, v in chosen.items() if v]
        context.add_cookies(cookies)  # type: ignore[arg-type]
        contexts.append(context)
        return context.new_page()

    yield open_tab
    for context in contexts:
        context.close()
    problems.check()


@pytest.fixture
def page(browse: Callable[..., Page]) -> Page:
    """A desktop tab in the default language and theme, signed in as the admin."""
    return browse()
