"""A new user's whole journey through the studio, in Chromium, in Persian (the default):
set up the studio from the printed link, sign in, upload a dataset and read its report
and preview, start a tiny run, watch its chart grow, pause, resume, see it complete,
and chat with the trained model in the playground."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from lastedocation.web.i18n import Language
from tests.conftest import PASSWORD, PERCQA
from tests.e2e.conftest import PageProblems, Studio, new_context, percqa_slice

fa = Language("fa").gettext  # the page's words, written as the English msgids
USER = "shirin"

# Records every uPlot chart a page draws (wrapping the global the library defines), so
# the test can count a chart's points as the user sees them grow.
COUNT_CHART_POINTS = """
(() => {
  let wrapped;
  Object.defineProperty(window, "uPlot", {
    configurable: true,
    get: () => wrapped,
    set(original) {
      window.__charts = [];
      wrapped = class extends original {
        constructor(...args) { super(...args); window.__charts.push(this); }
      };
    },
  });
})();
"""
POINTS = """(selector) => {
  const chart = (window.__charts || []).find((c) => c.root.closest(selector));
  return chart ? chart.data[0].length : 0;
}"""


def starting_with(page: Page, text: str) -> Locator:
    """The control whose label starts with `text` (labels may carry a short hint after)."""
    return page.get_by_label(re.compile("^" + re.escape(text)))


def chart_points(page: Page, selector: str = "#chart-loss") -> int:
    return int(page.evaluate(POINTS, selector))


def wait_for_more_points(page: Page, than: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        points = chart_points(page)
        if points > than:
            return points
        page.wait_for_timeout(200)
    raise AssertionError(f"the loss chart did not grow past {than} points in {timeout} s")


def set_up_and_sign_in(page: Page, studio: Studio) -> None:
    assert studio.setup_link, f"serve printed no set-up link:\n{studio.log()}"
    page.goto(studio.setup_link)
    expect(page.get_by_role("heading", name=fa("Set up the studio"))).to_be_visible()
    page.get_by_label(fa("Username")).fill(USER)
    starting_with(page, fa("Password")).fill(PASSWORD)
    page.get_by_label(fa("Password again")).fill(PASSWORD)
    page.get_by_role("button", name=fa("Create the admin account")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(fa("Dashboard"))

    # sign out and back in, as the admin will on another day
    page.get_by_role("button", name=fa("Sign out")).click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label(fa("Username")).fill(USER)
    page.get_by_label(fa("Password")).fill(PASSWORD)
    page.get_by_role("button", name=fa("Sign in")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(fa("Dashboard"))


def upload_dataset(page: Page, data: Path) -> None:
    page.get_by_role("navigation", name=fa("Main")).get_by_role("link", name=fa("Datasets")).click()
    starting_with(page, fa("File")).set_input_files(data)
    page.get_by_role("button", name=fa("Upload")).click()
    expect(page).to_have_url(re.compile(r"/datasets/\d+"), timeout=60_000)
    expect(page.get_by_role("heading", level=1)).to_have_text(data.stem)

    report = page.locator("section", has=page.get_by_role("heading", name=fa("Validation report")))
    rows_read = report.get_by_role("row", name=re.compile(fa("Rows read")))
    expect(rows_read).to_contain_text(Language("fa").number(150))

    preview = page.locator("section", has=page.get_by_role("heading", name=fa("Preview")))
    first_answer = json.loads(PERCQA.read_text(encoding="utf-8").splitlines()[0])["answer"]
    shown = preview.get_by_text(first_answer.split(".")[0], exact=False).first
    expect(shown).to_be_visible()
    expect(shown).to_have_attribute("dir", "auto")  # user text takes its own direction


def start_tiny_run(page: Page, dataset: str) -> None:
    page.get_by_role("navigation", name=fa("Main")).get_by_role("link", name=fa("Runs")).click()
    page.get_by_role("link", name=fa("New run")).click()
    page.get_by_role("link", name=re.compile(fa("Quick test on CPU"))).click()
    expect(page.locator("#preset-status")).to_contain_text(fa("Quick test on CPU"))
    page.get_by_label(fa("Name"), exact=True).fill("journey")
    datasets = page.get_by_label(fa("Dataset"), exact=True)
    ours = datasets.locator("option", has_text=dataset).get_attribute("value")
    datasets.select_option(ours)
    tiny = {
        "Vocabulary size": "500",
        # enough steps to pause while it trains (about 25 steps a second on one thread)
        "Steps": "400",
        "Batch size": "4",
        "Sequence length": "96",
        "Evaluate every": "50",
        "CPU threads": "1",
    }
    for label, value in tiny.items():
        page.get_by_label(fa(label), exact=True).fill(value)
    page.get_by_role("button", name=fa("Check and start")).click()
    expect(page).to_have_url(re.compile(r"/runs/\d+$"), timeout=60_000)


def watch_pause_resume_complete(page: Page) -> None:
    state = page.locator("#run-state")
    expect(state.get_by_text(fa("running"))).to_be_visible(timeout=60_000)
    first = wait_for_more_points(page, than=1)
    wait_for_more_points(page, than=first)  # the chart grows while the user watches

    page.get_by_role("button", name=fa("Pause")).click()
    expect(state.get_by_text(fa("paused"), exact=True)).to_be_visible(timeout=60_000)
    paused_at = chart_points(page)
    resume = page.get_by_role("button", name=fa("Resume"))
    expect(resume).to_be_visible()
    expect(page.get_by_role("button", name=fa("Pause"))).to_have_count(0)

    resume.click()
    expect(state.get_by_text(fa("completed"))).to_be_visible(timeout=120_000)
    assert chart_points(page) > paused_at, "the chart went on from where the run paused"


def chat_with_the_model(page: Page) -> None:
    page.get_by_role("navigation", name=fa("Main")).get_by_role("link", name=fa("Models")).click()
    page.get_by_role("link", name=re.compile("journey")).first.click()
    page.get_by_role("link", name=fa("Chat in the playground")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(fa("Playground"))
    question = "سلام، حالت چطور است؟"
    page.get_by_label(fa("Message"), exact=True).fill(question)
    with page.expect_response("**/v1/chat/completions") as answered:
        page.get_by_role("button", name=fa("Send")).click()
    assert answered.value.headers["content-type"].startswith("text/event-stream")
    expect(page.get_by_text(fa("Answer complete."))).to_be_visible(timeout=60_000)
    turns = page.get_by_role("list", name=fa("Conversation")).get_by_role("listitem")
    expect(turns).to_have_count(2)
    expect(turns.first).to_contain_text(question)
    answer = turns.last.locator(".text")  # the model's turn, without its label
    assert answer.inner_text().strip(), "the model's answer is empty"


@pytest.mark.slow
def test_a_new_user_trains_a_model_and_chats_with_it(
    chromium: Browser, fresh_studio: Studio, tmp_path: Path
) -> None:
    problems = PageProblems()
    context = new_context(chromium, fresh_studio.url, problems)
    context.add_init_script(COUNT_CHART_POINTS)
    page = context.new_page()
    try:
        set_up_and_sign_in(page, fresh_studio)
        data = percqa_slice(tmp_path)
        upload_dataset(page, data)
        start_tiny_run(page, data.stem)
        watch_pause_resume_complete(page)
        chat_with_the_model(page)
    finally:
        context.close()
        # shown when a step fails: the pages' errors and the server's own log say why
        print("\n".join(problems.problems), "\n--- the server's log ---\n", fresh_studio.log())
    problems.check()
