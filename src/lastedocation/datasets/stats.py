"""Dataset statistics, accumulated in one streaming pass with bounded memory.

Lengths are kept as counts per exact length (memory grows with the longest
text, not with the number of rows), so percentiles and histograms are exact.
Duplicates need one 64-bit hash per row (two: exact and near-exact) and the row
number; script counts go through numpy in batches. Never the text itself: at
100 MB of input this is a few tens of MB at most, not a copy of the file.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

# Character classes for the script mix.
SCRIPTS = (
    "persian",
    "arabic_forms",
    "latin",
    "persian_digits",
    "arabic_digits",
    "latin_digits",
    "zwnj",
    "whitespace",
    "other",
)
# Arabic letter forms where Persian writes another letter (ي ی, ك ک, ى ی, ة ه/ت)
_ARABIC_FORMS = "يكىة"


def _class_table() -> np.ndarray:
    table = np.full(0x10000, SCRIPTS.index("other"), dtype=np.uint8)
    for start, end in ((0x0621, 0x063A), (0x0641, 0x064A), (0x0671, 0x06D3)):
        table[start : end + 1] = SCRIPTS.index("persian")
    table[0x064B:0x0660] = SCRIPTS.index("persian")  # harakat count with the letters they mark
    for ch in _ARABIC_FORMS:
        table[ord(ch)] = SCRIPTS.index("arabic_forms")
    for ch in "پچژگکیآا":
        table[ord(ch)] = SCRIPTS.index("persian")
    table[ord("A") : ord("Z") + 1] = SCRIPTS.index("latin")
    table[ord("a") : ord("z") + 1] = SCRIPTS.index("latin")
    table[0x00C0:0x0250] = SCRIPTS.index("latin")
    table[0x06F0:0x06FA] = SCRIPTS.index("persian_digits")
    table[0x0660:0x066A] = SCRIPTS.index("arabic_digits")
    table[ord("0") : ord("9") + 1] = SCRIPTS.index("latin_digits")
    table[0x200C] = SCRIPTS.index("zwnj")
    table[0x1E:0x20] = len(SCRIPTS)  # the batch's separators: not counted
    for ch in " \t\n\r\f\v\u00a0\u2009\u202f":
        table[ord(ch)] = SCRIPTS.index("whitespace")
    return table


_CLASSES = _class_table()
_BATCH_CHARS = 1 << 18
_FIELD_END, _ROW_END = 0x1F, 0x1E
_MASK64 = (1 << 64) - 1


def _fold_table() -> np.ndarray:
    """Code point -> folded code point for near-exact duplicates; 0 drops it.

    Letters and digits are kept (lower-cased), Arabic letter forms and
    Persian/Arabic digits become their plain forms, and everything else
    (spacing, ZWNJ, punctuation, tatweel) is dropped: two rows that differ only
    in those are near-exact duplicates.
    """
    table = np.zeros(0x10000, dtype=np.uint32)
    for code in range(0x10000):
        ch = chr(code)
        if ch.isalnum():
            lower = ch.lower()
            table[code] = ord(lower) if len(lower) == 1 else code
    fold = {"ي": "ی", "ى": "ی", "ك": "ک", "ة": "ه", "ۀ": "ه", "أ": "ا", "إ": "ا", "آ": "ا"}
    for ch, plain in fold.items():
        table[ord(ch)] = ord(plain)
    for i in range(10):
        table[0x06F0 + i] = table[0x0660 + i] = ord(str(i))
    table[ord("ـ")] = 0
    table[_FIELD_END] = _FIELD_END
    table[_ROW_END] = _ROW_END
    return table


_FOLD = _fold_table()


class LengthCounts:
    """Exact distribution of non-negative integers: a count per value."""

    def __init__(self) -> None:
        self.counts = array("Q", bytes(8 * 1024))

    def add(self, value: int) -> None:
        if value >= len(self.counts):
            grow = max(value + 1, 2 * len(self.counts)) - len(self.counts)
            self.counts.extend(bytes(8 * grow))
        self.counts[value] += 1

    def summary(self, bins: int = 20) -> dict[str, Any]:
        """Count, total, min, max, mean, percentiles and a histogram (the values
        above the 99th percentile in one overflow bin)."""
        counts = np.frombuffer(self.counts, dtype=np.uint64).astype(np.int64)
        n = int(counts.sum())
        if n == 0:
            return {"count": 0, "total": 0, "min": 0, "max": 0, "mean": 0.0}
        present = np.flatnonzero(counts)
        lowest, highest = int(present[0]), int(present[-1])
        total = int((counts * np.arange(counts.size)).sum())
        cumulative = np.cumsum(counts)
        # the "lower" percentile: the value at sorted index floor((n - 1) * q)
        percentiles = {
            f"p{q}": int(np.searchsorted(cumulative, (n - 1) * q // 100 + 1))
            for q in (5, 25, 50, 75, 90, 95, 99)
        }
        width = max(1, -(-max(percentiles["p99"], 1) // bins))
        histogram = []
        for i in range(bins):
            low, high = i * width, (i + 1) * width
            upper = high + 1 if i == bins - 1 else high  # the last bin includes its edge
            histogram.append({"from": low, "to": high, "count": int(counts[low:upper].sum())})
        overflow = int(counts[bins * width + 1 :].sum())
        if overflow:
            histogram.append({"from": bins * width + 1, "to": highest, "count": overflow})
        return {
            "count": n,
            "total": total,
            "min": lowest,
            "max": highest,
            "mean": round(total / n, 2),
            "percentiles": percentiles,
            "histogram": histogram,
        }


class StatsAccumulator:
    """Feed it every valid record's texts; `result()` gives the statistics."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self.rows = 0
        self.chars = {name: LengthCounts() for name in fields}
        self.words = {name: LengthCounts() for name in fields}
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
        if len(texts) == len(self.fields) and all(
            name == field for (name, _), field in zip(texts, self.fields, strict=True)
        ):
            per_field = {name: text for name, text in texts}
        else:  # chats: several turns per role
            grouped: dict[str, list[str]] = {}
            for name, text in texts:
                grouped.setdefault(name, []).append(text)
            per_field = {name: "\n".join(parts) for name, parts in grouped.items()}
        for name in self.fields:
            text = per_field.get(name, "")
            if text:
                self.present[name] += 1
            self.chars[name].add(len(text))
            self.words[name].add(len(text.split()))
        self.exact.append(hash(tuple(texts)) & _MASK64)
        # the row's texts go to a batch: script counts and near-exact hashes are
        # computed there, over one UTF-32 array, instead of character by character
        for _, text in texts:
            if "\x1e" in text or "\x1f" in text:
                text = text.replace("\x1e", " ").replace("\x1f", " ")
            self._pending.append(text)
            self._pending.append("\x1f")
            self._pending_chars += len(text)
        self._pending.append("\x1e")
        if self._pending_chars >= _BATCH_CHARS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        blob = "".join(self._pending).encode("utf-32-le", "surrogatepass")
        self._pending.clear()
        self._pending_chars = 0
        points = np.frombuffer(blob, dtype=np.uint32)
        low = np.minimum(points, 0xFFFF)
        outside = points > 0xFFFF
        classes = _CLASSES[low]
        classes[outside] = SCRIPTS.index("other")
        self.script_counts += np.bincount(classes, minlength=len(SCRIPTS) + 1)[: len(SCRIPTS)]
        folded = _FOLD[low]
        folded[outside] = 0
        kept = folded[folded != 0]
        data = kept.tobytes()
        start = 0
        for end in np.flatnonzero(kept == _ROW_END).tolist():
            self.near.append(hash(data[4 * start : 4 * end]) & _MASK64)
            start = end + 1

    def result(self) -> dict[str, Any]:
        self._flush()
        total_chars = int(self.script_counts.sum())
        letters = int(
            sum(self.script_counts[SCRIPTS.index(k)] for k in ("persian", "arabic_forms", "latin"))
        )
        return {
            "rows": self.rows,
            "fields": {
                name: {
                    "rows_with_text": self.present[name],
                    "chars": self.chars[name].summary(),
                    "words": self.words[name].summary(),
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
                    for k in ("persian", "arabic_forms", "latin")
                },
            },
            "duplicates": {
                "exact": _duplicates(self.exact, self.row_numbers),
                "near_exact": _duplicates(self.near, self.row_numbers),
            },
        }


def _duplicates(hashes: array[int], rows: array[int], examples: int = 5) -> dict[str, Any]:
    """How many rows repeat an earlier row, in how many groups, and the earliest
    few (row, first row) pairs. Intermediate arrays are freed as soon as possible."""
    if not hashes:
        return {"rows": 0, "groups": 0, "examples": []}
    keys = np.frombuffer(hashes, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeat = np.empty(keys.size, dtype=bool)
    repeat[0] = False
    np.equal(sorted_keys[1:], sorted_keys[:-1], out=repeat[1:])
    del sorted_keys
    duplicates = int(repeat.sum())
    groups = int(np.count_nonzero(repeat[1:] & ~repeat[:-1]))
    # stable sort: within a group the first position is the earliest row, so every
    # repeat is a later row; the earliest repeats are the smallest such indices
    later = order[repeat]
    del order, repeat
    earliest = np.sort(later)[:examples] if later.size > examples else np.sort(later)
    del later
    row_numbers = np.frombuffer(rows, dtype=np.uint32)
    pairs = []
    for index in earliest:
        first = int(np.flatnonzero(keys == keys[index])[0])
        pairs.append({"row": int(row_numbers[index]), "same_as_row": int(row_numbers[first])})
    return {"rows": duplicates, "groups": groups, "examples": pairs}
