"""The datasets pages in Chromium: the upload with its progress bar, a refused upload's
message, preview paging and a split without reloading the page, the charts, delete."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from lastedocation.web.i18n import Language
from tests.conftest import PERCQA
from tests.e2e.conftest import PageProblems

fa = Language("fa").gettext
number = Language("fa").number
# keeps every value the upload's progress bar takes, across the page change after it
RECORD_PROGRESS = """
document.addEventListener("DOMContentLoaded", () => {
  const bar = document.getElementById("upload-bar");
  if (!bar) return;
  new MutationObserver(() => {
    const seen = JSON.parse(sessionStorage.getItem("progress") || "[]");
    seen.push(bar.getAttribute("value"));
    sessionStorage.setItem("progress", JSON.stringify(seen));
  }).observe(bar, { attributes: true, attributeFilter: ["value"] });
});
"""


def upload(page: Page, path: Path) -> None:
    page.goto("/datasets")
    page.get_by_label(re.compile("^" + fa("File"))).set_input_files(path)
    page.get_by_role("button", name=fa("Upload"), exact=True).click()


def test_upload_preview_split_and_delete_in_the_browser(
    browse: Callable[..., Page], problems: PageProblems, tmp_path: Path
) -> None:
    page = browse()
    page.add_init_script(RECORD_PROGRESS)

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(PERCQA.read_bytes().splitlines()[0] + b'\n{"question": "x", "answer": ""}\n')
    upload(page, bad)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(fa("The upload was refused"))
    expect(alert).to_contain_text("1 of 2 rows have problems")
    expect(
        alert.get_by_role("row", name=re.compile("the field `answer` is empty"))
    ).to_contain_text(number(2))
    expect(page).to_have_url(re.compile(r"/datasets$"))
    # Chromium logs the refused request itself; that is the expected answer here
    problems.problems = [p for p in problems.problems if "status of 422" not in p]

    good = tmp_path / "percqa-3000.jsonl"  # a few megabytes: several progress events
    good.write_bytes(b"\n".join(PERCQA.read_bytes().splitlines()[:3000]) + b"\n")
    upload(page, good)
    expect(page).to_have_url(re.compile(r"/datasets/\d+$"), timeout=60_000)
    expect(page.get_by_role("heading", level=1)).to_have_text("percqa-3000")
    progress = page.evaluate("JSON.parse(sessionStorage.getItem('progress') || '[]')")
    assert "100" in progress, progress  # the bar followed the upload to its end
    expect(page.locator(".ds-figures .stat").first).to_have_text(number(3000))

    # four length histograms and the script mix, drawn by uPlot
    expect(page.locator("[data-chart] canvas")).to_have_count(5)

    page.evaluate("window.samePage = true")
    page.get_by_role("link", name=fa("Next")).first.click()
    expect(page.locator("#preview")).to_contain_text(
        fa("Rows %(from)s–%(to)s of %(total)s")
        % {"from": number(11), "to": number(20), "total": number(3000)}
    )
    expect(page).to_have_url(re.compile(r"\?offset=10&limit=10$"))
    assert page.evaluate("window.samePage") is True  # swapped in place, not reloaded

    page.get_by_label(re.compile("^" + fa("Key"))).fill("qid")
    page.get_by_label(re.compile("^" + fa("Validation share"))).fill("0.2")
    page.get_by_role("button", name=fa("Create the split")).click()
    made = page.locator("tr.ds-new")
    expect(made).to_contain_text("qid")
    expect(made).to_contain_text(number(20.0, 1))
    assert page.evaluate("window.samePage") is True

    page.get_by_text(fa("Delete this dataset…")).click()
    page.get_by_role("button", name=re.compile("percqa-3000")).click()
    expect(page).to_have_url(re.compile(r"/datasets\?deleted=\d+$"))
    deleted = int(page.url.rsplit("=", 1)[1])
    notice = fa("Dataset #%(id)s was deleted.") % {"id": number(deleted)}
    expect(page.get_by_role("status").filter(has_text=notice)).to_be_visible()
    expect(page.get_by_role("link", name="percqa-3000")).to_have_count(0)
