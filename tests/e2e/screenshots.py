"""Screenshots of the main pages, so anyone can look at the UI without clicking through it.

    python -m tests.e2e.screenshots OUT_DIR      (`make screenshots` writes screenshots/)

Starts a studio on a temporary data folder with the bundled sample dataset, creates the
admin, trains a tiny run on the sample (so the run and model pages have content), asks
the trained model one question in the playground, then saves full-page PNGs of every
main page in Persian/light and English/dark, at desktop and phone sizes:
`fa-light-desktop-dashboard.png`, `en-dark-phone-run.png`, ...
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from lastedocation.web.i18n import Language
from lastedocation.web.render import LANG_COOKIE, THEME_COOKIE
from tests.conftest import ADMIN, PASSWORD, add_account
from tests.e2e.conftest import CHROMIUM, DESKTOP, PHONE, TINY_RUN, PageProblems, Studio

LOOKS = [("fa", "light"), ("en", "dark")]
SIZES = {"desktop": DESKTOP, "phone": PHONE}


def pages(dataset_id: int, run_id: int, model_id: int | None) -> dict[str, str]:
    found = {
        "dashboard": "/",
        "datasets": "/datasets",
        "dataset": f"/datasets/{dataset_id}",
        "runs": "/runs",
        "new-run": "/runs/new",
        "run": f"/runs/{run_id}",
        "models": "/models",
        "playground": "/playground",
        "speech": "/speech",
        "settings": "/settings",
        "system": "/system",
    }
    if model_id is not None:
        found["model"] = f"/models/{model_id}"
    return found


def train_sample(api: httpx.Client, timeout: float = 300) -> tuple[int, int, int | None]:
    """The sample dataset, a tiny run trained on it, and the model it registered."""
    datasets = api.get("/api/v1/datasets").json()
    if not datasets:
        raise SystemExit("the studio imported no sample dataset; is the sample bundled?")
    dataset_id = int(datasets[0]["id"])
    body: dict[str, Any] = {**TINY_RUN, "name": "sample-tiny", "data": {}}
    created = api.post("/api/v1/runs", json={"dataset_id": dataset_id, **body})
    if created.status_code != 201:
        raise SystemExit(f"could not start the sample run: {created.text}")
    run_id = int(created.json()["id"])
    deadline = time.monotonic() + timeout
    state = "queued"
    while time.monotonic() < deadline and state not in ("completed", "failed", "stopped"):
        time.sleep(0.5)
        state = api.get(f"/api/v1/runs/{run_id}").json()["state"]
    if state != "completed":
        raise SystemExit(f"the sample run ended {state}, not completed")
    models = [m for m in api.get("/api/v1/models").json() if m.get("run_id") == run_id]
    return dataset_id, run_id, int(models[0]["id"]) if models else None


def settle(page: Page) -> None:
    """Wait until the page's scripts have fetched what they show (live pages never idle)."""
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_load_state("networkidle", timeout=3000)
    page.evaluate("document.fonts.ready")


def ask_playground(page: Page, lang: str) -> None:
    """One question and its streamed answer, so the playground shows a conversation."""
    _ = Language(lang).gettext
    prompt = page.get_by_label(_("Message"), exact=True)
    if not prompt.count():
        return  # no model to chat with: the page says so, and that is what we show
    prompt.fill("سلام! لطفاً خودت را معرفی کن." if lang == "fa" else "Hello! Who are you?")
    page.get_by_role("button", name=_("Send")).click()
    try:
        page.get_by_text(_("Answer complete.")).wait_for(timeout=60_000)
    except PlaywrightTimeout:
        print(f"  the playground gave no complete answer in {lang}", file=sys.stderr)


def shoot(
    browser: Browser, studio: Studio, out: Path, paths: dict[str, str], problems: PageProblems
) -> list[Path]:
    saved = []
    for lang, theme in LOOKS:
        for size, viewport in SIZES.items():
            print(f"  {lang}-{theme}-{size}")
            # the browser speaks the page's language too (native controls, such as a file input)
            locale = "fa-IR" if lang == "fa" else "en-US"
            context = browser.new_context(base_url=studio.url, viewport=viewport, locale=locale)
            context.add_cookies(
                [
                    {"name": LANG_COOKIE, "value": lang, "url": studio.url},
                    {"name": THEME_COOKIE, "value": theme, "url": studio.url},
                ]
            )
            context.on("page", problems.watch)
            page = context.new_page()
            sign_in(page)
            for name, path in paths.items():
                response = page.goto(path)
                if response is None or response.status != 200:
                    status = response.status if response else "no answer"
                    problems.problems.append(f"{path} answered {status}")
                settle(page)
                if name == "playground":
                    ask_playground(page, lang)
                target = out / f"{lang}-{theme}-{size}-{name}.png"
                page.screenshot(path=target, full_page=True)
                saved.append(target)
            context.close()
    return saved


def sign_in(page: Page) -> None:
    page.goto("/login")
    page.locator("input[name=username]").fill(ADMIN)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form[action='/login'] button").click()
    page.wait_for_url("**/")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    problems = PageProblems()  # reported, not fatal: the pictures are still worth having
    with tempfile.TemporaryDirectory(prefix="lastedocation-screens-") as folder:
        studio = Studio(Path(folder) / "data", LASTEDOCATION_IMPORT_SAMPLE_DATASET="true").start()
        try:
            add_account(studio.settings, ADMIN, role="admin")
            with studio.api() as api:
                print("training a tiny run on the sample dataset…")
                dataset_id, run_id, model_id = train_sample(api)
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    paths = pages(dataset_id, run_id, model_id)
                    saved = shoot(browser, studio, out, paths, problems)
                finally:
                    browser.close()
        finally:
            studio.stop()
    for problem in dict.fromkeys(problems.problems):  # once each, in order
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{len(saved)} screenshots in {out.resolve()}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.e2e.screenshots OUT_DIR")
    main(Path(sys.argv[1]))
