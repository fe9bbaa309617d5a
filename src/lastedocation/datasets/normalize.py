"""Persian normalization through shekar, as an option whose effect is measured.

shekar's steps fix letter forms (Arabic yeh/kaf to Persian), digits, ZWNJ and
spacing around punctuation. They would also rewrite Latin text ("Python 3.11"
becomes "Python ۳. ۱۱", URLs get spaces), so URLs, e-mail addresses and Latin
words (with a version number after them) are kept verbatim and only the text
between them is normalized. Diacritics and repeated letters are left alone:
removing them changes what the writer meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shekar import Normalizer
from shekar.preprocessing import (
    AlphabetNormalizer,
    ArabicUnicodeNormalizer,
    DigitNormalizer,
    PunctuationNormalizer,
    SpacingNormalizer,
    YaNormalizer,
)

_KEEP = re.compile(
    r"(?:https?://|www\.)\S+"
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|[A-Za-z][A-Za-z0-9_.+#/:-]*(?:\s+v?[0-9]+(?:\.[0-9]+)*\b)?"
)
_EXAMPLES = 5


class PersianNormalizer:
    """Callable text normalizer (letters, digits, ZWNJ, spacing)."""

    def __init__(self) -> None:
        self._shekar = Normalizer(
            steps=[
                ("alphabet", AlphabetNormalizer()),
                ("arabic_unicode", ArabicUnicodeNormalizer()),
                ("digits", DigitNormalizer()),
                ("punctuation", PunctuationNormalizer()),
                ("spacing", SpacingNormalizer()),
                ("ya", YaNormalizer()),
            ]
        )

    def __call__(self, text: str) -> str:
        out: list[str] = []
        position = 0
        for match in _KEEP.finditer(text):
            out.append(self._segment(text[position : match.start()]))
            out.append(match.group())
            position = match.end()
        out.append(self._segment(text[position:]))
        return "".join(out)

    def _segment(self, text: str) -> str:
        core = text.strip()
        if not core:
            return text
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()) :]
        return lead + str(self._shekar(core)) + trail


@dataclass
class NormalizationEffect:
    """What normalization changed: rows and characters, with before/after examples."""

    rows_changed: int = 0
    fields_changed: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def record(self, row: int, name: str, before: str, after: str) -> None:
        self.fields_changed += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append({"row": row, "field": name, "before": before, "after": after})

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_changed": self.rows_changed,
            "fields_changed": self.fields_changed,
            "examples": self.examples,
        }


def normalize_record(
    record: dict[str, Any], normalizer: PersianNormalizer, effect: NormalizationEffect
) -> dict[str, Any]:
    """Normalize a canonical record's texts in place and note what changed."""
    changed = False
    if "text" in record:
        before = record["text"]
        record["text"] = normalizer(before)
        if record["text"] != before:
            effect.record(record["row"], "text", before, record["text"])
            changed = True
    for i, message in enumerate(record.get("messages", ())):
        before = message["content"]
        message["content"] = normalizer(before)
        if message["content"] != before:
            effect.record(
                record["row"], f"messages[{i}] ({message['role']})", before, message["content"]
            )
            changed = True
    effect.rows_changed += changed
    return record
