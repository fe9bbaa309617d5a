"""Languages of the web UI: Persian (default, right to left) and English.

Messages are written in English in the templates and code (`_("Datasets")`) and
translated from gettext catalogs, one per area of the UI: `locale/fa/<area>.po`
(edit them with any PO editor; `pybabel extract` finds new messages). All catalogs of
a language are merged at start. Numbers read in Persian digits and dates in the Solar
Hijri calendar in Persian; Latin digits and the Gregorian calendar in English.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import jdatetime
from babel.dates import format_datetime as babel_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = {"fa": "فارسی", "en": "English"}
DEFAULT_LANGUAGE = "fa"
_PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


@cache
def translations(lang: str) -> NullTranslations:
    """Every catalog of `lang`, merged (cached for the life of the process)."""
    merged: NullTranslations = NullTranslations()
    for po in sorted((LOCALE_DIR / lang).glob("*.po")):
        with po.open("rb") as f:
            catalog = read_po(f, locale=lang)
        buffer = io.BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        part = Translations(buffer)
        if isinstance(merged, Translations):
            merged.merge(part)
        else:
            merged = part
    return merged


def persian_digits(text: str) -> str:
    return text.translate(_PERSIAN_DIGITS)


@dataclass(frozen=True)
class Language:
    """One request's language: text, direction, numbers, dates."""

    code: str

    @property
    def dir(self) -> str:
        return "rtl" if self.code == "fa" else "ltr"

    def gettext(self, message: str) -> str:
        return translations(self.code).gettext(message) if self.code != "en" else message

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        if self.code == "en":
            return singular if n == 1 else plural
        return translations(self.code).ngettext(singular, plural, n)

    def number(self, value: float | int | None, digits: int | None = None) -> str:
        if value is None:
            return "—"
        pattern = None if digits is None else "#,##0." + "0" * digits if digits else "#,##0"
        if self.code == "fa":
            text = format_decimal(value, format=pattern, locale="fa_IR", numbering_system="default")
            return persian_digits(text)
        return format_decimal(value, format=pattern, locale="en")

    def datetime(self, value: datetime | None) -> str:
        if value is None:
            return "—"
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        if self.code == "fa":
            local = value.astimezone()
            jalali = jdatetime.datetime.fromgregorian(datetime=local.replace(tzinfo=None))
            return persian_digits(jalali.strftime("%Y/%m/%d %H:%M"))
        return babel_datetime(value.astimezone(), "medium", locale="en")


def pick(requested: str | None) -> Language:
    return Language(requested if requested in LANGUAGES else DEFAULT_LANGUAGE)
