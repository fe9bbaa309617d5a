"""Qualities every page shares, checked in Chromium: Persian and right-to-left first,
English on request, the dark theme, a phone-sized screen, the keyboard, labelled
controls, and no console errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import DESKTOP, PHONE, Studio

# roles a user operates or reads as a control: each needs a name a screen reader says
NAMED_ROLES = {
    "button", "link", "textbox", "searchbox", "combobox", "listbox", "checkbox", "radio",
    "spinbutton", "slider", "switch", "tab", "menuitem", "progressbar", "meter",
}  # fmt: skip


def main_pages(studio: Studio) -> list[str]:
    """The pages a user works in, with the studio's own dataset and run."""
    return [
        "/",
        "/datasets",
        f"/datasets/{studio.dataset_id}",
        "/runs",
        "/runs/new",
        f"/runs/{studio.run_id}",
        "/models",
        "/playground",
        "/speech",
        "/system",
        "/settings",
    ]


def visit(page: Page, path: str) -> None:
    response = page.goto(path)
    assert response is not None and response.status == 200, f"{path}: {response}"
    expect(page.locator("main h1").first).to_be_visible()


def luminance(css_colour: str) -> float:
    red, green, blue = (int(c) / 255 for c in re.findall(r"\d+", css_colour)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def background(page: Page) -> float:
    return luminance(page.evaluate("getComputedStyle(document.documentElement).backgroundColor"))


def brand_edges(page: Page) -> tuple[float, float]:
    """Distances of the brand from the window's start (left) and end (right) edges."""
    box = page.get_by_role("link", name="LASTEDOCATION").bounding_box()
    window = page.viewport_size
    assert box is not None and window is not None
    return box["x"], window["width"] - (box["x"] + box["width"])


def test_persian_is_the_default_and_the_layout_mirrors(page: Page) -> None:
    visit(page, "/")
    html = page.locator("html")
    expect(html).to_have_attribute("lang", "fa")
    expect(html).to_have_attribute("dir", "rtl")
    nav = page.get_by_role("navigation", name="اصلی")
    expect(nav.get_by_role("link", name="پیشخوان")).to_have_attribute("aria-current", "page")
    left, right = brand_edges(page)
    assert right < 40 < left, f"in Persian the brand sits at the right edge ({left=}, {right=})"
    # the navigation follows the brand leftwards, as Persian reads
    brand = page.get_by_role("link", name="LASTEDOCATION").bounding_box()
    first_link = nav.get_by_role("link").first.bounding_box()
    assert brand and first_link and first_link["x"] < brand["x"]


def test_english_switch_turns_the_page_left_to_right(page: Page) -> None:
    visit(page, "/datasets")
    page.get_by_label("زبان").select_option("en")
    html = page.locator("html")
    expect(html).to_have_attribute("dir", "ltr")
    expect(html).to_have_attribute("lang", "en")
    expect(page).to_have_url(re.compile(r"/datasets$"))  # the same page, now in English
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Datasets")).to_have_attribute("aria-current", "page")
    left, right = brand_edges(page)
    assert left < 40 < right, f"in English the brand sits at the left edge ({left=}, {right=})"
    visit(page, "/")  # the choice is remembered
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    page.get_by_label("Language").select_option("fa")
    expect(html).to_have_attribute("dir", "rtl")


def test_dark_theme(page: Page) -> None:
    visit(page, "/")
    html = page.locator("html")
    assert background(page) > 0.8, "the default theme is light"
    page.get_by_label("پوسته").select_option("dark")
    expect(html).to_have_attribute("data-theme", "dark")
    assert background(page) < 0.15, "the dark theme has a dark background"
    text = luminance(page.evaluate("getComputedStyle(document.body).color"))
    assert text > 0.7, "and light text on it"
    visit(page, "/datasets")
    expect(html).to_have_attribute("data-theme", "dark")


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_phone_screen_fits_and_navigation_is_reachable(
    browse: Callable[..., Page], studio: Studio, lang: str
) -> None:
    page = browse(viewport=PHONE, lang=lang)
    for path in main_pages(studio):
        visit(page, path)
        overflow = page.evaluate(
            "(() => { const s = document.scrollingElement;"
            " return [s.scrollWidth, s.clientWidth]; })()"
        )
        assert overflow[0] <= overflow[1] + 1, f"{path} scrolls sideways on a phone: {overflow}"
    visit(page, "/")
    nav = page.get_by_role("navigation", name="اصلی" if lang == "fa" else "Main")
    links = nav.get_by_role("link")
    last = links.nth(links.count() - 1)
    last.scroll_into_view_if_needed()
    expect(last).to_be_in_viewport()
    last.click()
    expect(page).to_have_url(re.compile(r"/settings$"))


def test_keyboard_reaches_the_skip_link_first(page: Page) -> None:
    visit(page, "/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="رفتن به محتوا")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#content$"))


def unnamed_controls(page: Page) -> list[str]:
    """Controls without an accessible name, as Chromium's accessibility tree has them."""
    cdp = page.context.new_cdp_session(page)
    try:
        tree: dict[str, Any] = cdp.send("Accessibility.getFullAXTree")
        found = []
        for node in tree["nodes"]:
            role = node.get("role", {}).get("value")
            name = str(node.get("name", {}).get("value", "")).strip()
            if node.get("ignored") or role not in NAMED_ROLES or name:
                continue
            described = cdp.send("DOM.describeNode", {"backendNodeId": node["backendDOMNodeId"]})
            element = described["node"]
            found.append(f"{role} <{element['localName']} {element.get('attributes', [])}>")
        return found
    finally:
        cdp.detach()


@pytest.mark.parametrize("lang,theme", [("fa", "light"), ("en", "dark")])
def test_every_control_is_named_and_no_page_logs_an_error(
    browse: Callable[..., Page], studio: Studio, lang: str, theme: str
) -> None:
    page = browse(viewport=DESKTOP, lang=lang, theme=theme)
    unnamed = {}
    for path in main_pages(studio):
        visit(page, path)
        page.wait_for_timeout(300)  # the page's scripts fetch their data after loading
        if found := unnamed_controls(page):
            unnamed[path] = found
    assert not unnamed, f"controls without an accessible name: {unnamed}"
    # console errors and uncaught exceptions fail the test in the `browse` fixture
