"""Statistics of a speech dataset, gathered clip by clip with bounded memory: two
floats per clip (duration, characters per second), counters of sample rates,
channels and codecs, and the transcripts' own statistics (lengths, script mix,
duplicate transcripts) from the text datasets' accumulator.

Durations are summed as stored (rounded to the millisecond), so the hours shown
are exactly the sum of the `duration_s` of the records.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from typing import Any

import numpy as np

from lastedocation.datasets.stats import StatsAccumulator

_NICE_STEPS = (1, 2, 2.5, 5, 10)


def _width(top: float, bins: int) -> float:
    """A round bin width (1, 2, 2.5 or 5 times a power of ten) giving about `bins` bins."""
    raw = max(top / bins, 1e-3)
    power = 10 ** math.floor(math.log10(raw))
    return float(next(step * power for step in _NICE_STEPS if step * power >= raw - 1e-12))


def distribution(values: array[float], bins: int = 30) -> dict[str, Any]:
    """Count, total, min, median, 95th percentile, max, mean and a histogram of round
    bins from 0 (each bin holds `from <= x < to`; the last also its upper edge)."""
    data = np.frombuffer(values, dtype=np.float64) if len(values) else np.zeros(0)
    if data.size == 0:
        return {"count": 0, "total": 0.0, "min": 0.0, "max": 0.0, "mean": 0.0, "histogram": []}
    top = float(data.max())
    width = _width(top, bins)
    count = max(1, math.ceil(top / width - 1e-9))
    edges = np.arange(count + 1) * width
    counts, _ = np.histogram(np.minimum(data, edges[-1]), bins=edges)
    p50, p90, p95 = (float(np.percentile(data, q)) for q in (50, 90, 95))
    return {
        "count": int(data.size),
        "total": round(float(data.sum()), 3),
        "min": round(float(data.min()), 3),
        "median": round(p50, 3),
        "p90": round(p90, 3),
        "p95": round(p95, 3),
        "max": round(top, 3),
        "mean": round(float(data.mean()), 3),
        "histogram": [
            {"from": round(i * width, 3), "to": round((i + 1) * width, 3), "count": int(c)}
            for i, c in enumerate(counts)
        ],
    }


class SpeechStats:
    """Feed it every good clip; `result()` gives the statistics stored with the dataset."""

    def __init__(self) -> None:
        self.durations = array("d")
        self.chars_per_second = array("d")
        self.total_ms = 0
        self.sample_rates: Counter[str] = Counter()
        self.channels: Counter[str] = Counter()
        self.codecs: Counter[str] = Counter()
        self.transcripts = StatsAccumulator(("text",))

    def add(
        self, row: int, text: str, duration_s: float, sample_rate: int, channels: int, codec: str
    ) -> None:
        self.durations.append(duration_s)
        self.total_ms += round(duration_s * 1000)
        # spoken characters: spaces and ZWNJ are not said
        spoken = sum(1 for ch in text if not ch.isspace() and ch != "\u200c")
        self.chars_per_second.append(spoken / duration_s if duration_s > 0 else 0.0)
        self.sample_rates[str(sample_rate)] += 1
        self.channels[str(channels)] += 1
        self.codecs[codec] += 1
        self.transcripts.add(row, [("text", text)])

    def result(self) -> dict[str, Any]:
        texts = self.transcripts.result()
        total_s = self.total_ms / 1000
        return {
            "rows": len(self.durations),
            "total_seconds": total_s,
            "hours": round(total_s / 3600, 4),
            "duration_s": distribution(self.durations),
            "chars_per_second": distribution(self.chars_per_second, bins=20),
            "sample_rates": dict(sorted(self.sample_rates.items(), key=lambda kv: int(kv[0]))),
            "channels": dict(sorted(self.channels.items(), key=lambda kv: int(kv[0]))),
            "codecs": dict(self.codecs.most_common()),
            "transcripts": texts["fields"]["text"],
            "characters": texts["characters"],
            "script_mix": texts["script_mix"],
            "duplicate_transcripts": texts["duplicates"]["exact"],
        }
