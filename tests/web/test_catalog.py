"""Every message a template shows has its Persian translation (the UI is Persian-first)."""

from __future__ import annotations

import re
from pathlib import Path

from lastedocation.web.i18n import translations

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "lastedocation" / "web" / "templates"
NAMES = {"Hugging Face Hub", "Top-p"}  # proper names and terms read the same in Persian


def test_every_template_message_is_in_the_persian_catalog() -> None:
    catalog = translations("fa")
    missing = []
    for template in sorted(TEMPLATES.rglob("*.html")):
        for message in re.findall(r"""_\(\s*["']([^"']+)["']\s*\)""", template.read_text()):
            if message not in NAMES and catalog.gettext(message) == message:
                missing.append(f"{template.relative_to(TEMPLATES)}: {message}")
    assert not missing, missing
