"""Dataset statistics, accumulated in one streaming pass with bounded memory.

Per row we keep a few integers in typed arrays (lengths, 64-bit hashes), never
the text itself; script counts go through numpy in batches. At 100 MB of input
that is a few MB, not a copy of the file.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from typing import Any

import numpy as np

# Character classes for the script mix.
SCRIPTS = (
    "persian",
    "arabic_only",
    "latin",
    "persian_digits",
    "arabic_digits",
    "latin_digits",
    "zwnj",
    "whitespace",
    "other",
)
_ARABIC_ONLY_LETTERS = "يكةىۀأإؤئء"  # forms Persian writes differently (or rarely)


def _class_table() -> np.ndarray:
    table = np.full(0x10000, SCRIPTS.index("other"), dtype=np.uint8)
    for start, end in ((0x0621, 0x063A), (0x0641, 0x064A), (0x0671, 0x06D3)):
        table[start : end + 1] = SCRIPTS.index("persian")
    table[0x064B:0x0660] = SCRIPTS.index("persian")  # harakat count with the letters they mark
    for ch in _ARABIC_ONLY_LETTERS:
        table[ord(ch)] = SCRIPTS.index("arabic_only")
    for ch in "پچژگکیآا":
        table[ord(ch)] = SCRIPTS.index("persian")
    table[ord("A") : ord("Z") + 1] = SCRIPTS.index("latin")
    table[ord("a") : ord("z") + 1] = SCRIPTS.index("latin")
    table[0x00C0:0x0250] = SCRIPTS.index("latin")
    table[0x06F0:0x06FA] = SCRIPTS.index("persian_digits")
    table[0x0660:0x066A] = SCRIPTS.index("arabic_digits")
    table[ord("0") : ord("9") + 1] = SCRIPTS.index("latin_digits")
    table[0x200C] = SCRIPTS.index("zwnj")
    for ch in " \t\n\r\f\v\u00a0\u2009\u202f":
        table[ord(ch)] = SCRIPTS.index("whitespace")
    return table


_CLASSES = _class_table()
_BATCH_CHARS = 1 << 20
# Near-exact duplicates: the same text once letter forms, digits, case, spacing and
# punctuation are folded away.
_FOLD = str.maketrans(
    {
        "ي": "ی",
        "ى": "ی",
        "ك": "ک",
        "ة": "ه",
        "ۀ": "ه",
        "أ": "ا",
        "إ": "ا",
        "آ": "ا",
        "ـ": None,
        **{chr(0x06F0 + i): str(i) for i in range(10)},
        **{chr(0x0660 + i): str(i) for i in range(10)},
    }
)
_NOT_WORD = re.compile(r"[\W_]+")


def _hash64(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def near_key(text: str) -> str:
    return _NOT_WORD.sub("", text.translate(_FOLD).lower())


class StatsAccumulator:
    """Feed it every valid record's texts; `result()` gives the statistics."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self.rows = 0
        self.chars = {name: array("I") for name in fields}
        self.words = {name: array("I") for name in fields}
        self.present = dict.fromkeys(fields, 0)
        self.row_numbers = array("I")
        self.exact = array("Q")
        self.near = array("Q")
        self.script_counts = np.zeros(len(SCRIPTS), dtype=np.int64)
        self._pending: list[str] = []
        self._pending_chars = 0

    def add(self, row: int, texts: list[tuple[str, str]]) -> None:
        self.rows += 1
        self.row_numbers.append(row)
        per_field: dict[str, list[str]] = {}
        for name, text in texts:
            per_field.setdefault(name, []).append(text)
        for name in self.fields:
            parts = per_field.get(name)
            if parts:
                self.present[name] += 1
            joined = "\n".join(parts) if parts else ""
            self.chars[name].append(len(joined))
            self.words[name].append(len(joined.split()))
        whole = "\x1f".join(f"{name}\x1e{text}" for name, text in texts)
        self.exact.append(_hash64(whole))
        self.near.append(_hash64("\x1f".join(near_key(text) for _, text in texts)))
        for _, text in texts:
            self._pending.append(text)
            self._pending_chars += len(text)
        if self._pending_chars >= _BATCH_CHARS:
            self._flush_scripts()

    def _flush_scripts(self) -> None:
        if not self._pending:
            return
        blob = "".join(self._pending).encode("utf-32-le", "surrogatepass")
        points = np.frombuffer(blob, dtype=np.uint32)
        classes = _CLASSES[np.minimum(points, 0xFFFF)]
        classes[points > 0xFFFF] = SCRIPTS.index("other")
        self.script_counts += np.bincount(classes, minlength=len(SCRIPTS))
        self._pending.clear()
        self._pending_chars = 0

    def result(self) -> dict[str, Any]:
        self._flush_scripts()
        total_chars = int(self.script_counts.sum())
        letters = int(
            sum(self.script_counts[SCRIPTS.index(k)] for k in ("persian", "arabic_only", "latin"))
        )
        return {
            "rows": self.rows,
            "fields": {
                name: {
                    "rows_with_text": self.present[name],
                    "chars": distribution(self.chars[name]),
                    "words": distribution(self.words[name]),
                }
                for name in self.fields
            },
            "characters": total_chars,
            "script_mix": {
                "counts": {k: int(v) for k, v in zip(SCRIPTS, self.script_counts, strict=True)},
                "share_of_letters": {
                    k: round(int(self.script_counts[SCRIPTS.index(k)]) / letters, 4)
                    if letters
                    else 0.0
                    for k in ("persian", "arabic_only", "latin")
                },
            },
            "duplicates": {
                "exact": _duplicates(self.exact, self.row_numbers),
                "near_exact": _duplicates(self.near, self.row_numbers),
            },
        }


def distribution(values: array[int], bins: int = 20) -> dict[str, Any]:
    """Summary and histogram of non-negative integers (overflow above the 99th percentile)."""
    if not values:
        return {"count": 0, "total": 0, "min": 0, "max": 0, "mean": 0.0}
    data = np.frombuffer(values, dtype=np.uint32).astype(np.int64)
    p = {q: int(np.percentile(data, q, method="lower")) for q in (5, 25, 50, 75, 90, 95, 99)}
    top = max(p[99], 1)
    width = max(1, -(-top // bins))
    edges = list(range(0, width * bins + 1, width))
    counts = np.histogram(np.minimum(data, edges[-1]), bins=edges)[0].tolist()
    overflow = int((data > edges[-1]).sum())
    histogram = [
        {"from": edges[i], "to": edges[i + 1], "count": int(c)} for i, c in enumerate(counts)
    ]
    if overflow:
        histogram[-1]["count"] -= overflow
        histogram.append({"from": edges[-1] + 1, "to": int(data.max()), "count": overflow})
    return {
        "count": int(data.size),
        "total": int(data.sum()),
        "min": int(data.min()),
        "max": int(data.max()),
        "mean": round(float(data.mean()), 2),
        "percentiles": {f"p{q}": v for q, v in p.items()},
        "histogram": histogram,
    }


def _duplicates(hashes: array[int], rows: array[int], examples: int = 5) -> dict[str, Any]:
    """How many rows repeat an earlier row, and a few (row, first row) examples."""
    if not hashes:
        return {"rows": 0, "groups": 0, "examples": []}
    keys = np.frombuffer(hashes, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeat = np.empty(sorted_keys.size, dtype=bool)
    repeat[0] = False
    repeat[1:] = sorted_keys[1:] == sorted_keys[:-1]
    group_start = ~repeat
    first_index = order[np.maximum.accumulate(np.where(group_start, np.arange(order.size), 0))]
    duplicate_positions = order[repeat]
    groups = int(np.unique(sorted_keys[repeat]).size)
    row_numbers = np.frombuffer(rows, dtype=np.uint32)
    pairs = sorted(
        (int(row_numbers[dup]), int(row_numbers[first]))
        for dup, first in zip(duplicate_positions, first_index[repeat], strict=True)
    )[:examples]
    return {
        "rows": int(repeat.sum()),
        "groups": groups,
        "examples": [{"row": r, "same_as_row": f} for r, f in pairs],
    }
