"""Statistics match an independent count on real data and on hand-made rows."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from lastedocation.datasets.scan import ScanOptions, scan_file
from lastedocation.datasets.stats import StatsAccumulator


def test_percqa_stats_match_an_independent_count(percqa: Path) -> None:
    rows = [json.loads(line) for line in percqa.read_text(encoding="utf-8").splitlines()]
    result = scan_file(percqa, filename=percqa.name, options=ScanOptions())
    assert result.report.ok and result.report.problems_total == 0
    stats = result.stats
    assert stats is not None
    assert stats["rows"] == len(rows) == 9638
    for name in ("question", "answer"):
        lengths = [len(r[name]) for r in rows]
        words = [len(r[name].split()) for r in rows]
        chars = stats["fields"][name]["chars"]
        assert chars["total"] == sum(lengths)
        assert (chars["min"], chars["max"]) == (min(lengths), max(lengths))
        assert chars["percentiles"]["p50"] == sorted(lengths)[(len(lengths) - 1) // 2]
        assert sum(b["count"] for b in chars["histogram"]) == len(rows)
        assert stats["fields"][name]["words"]["total"] == sum(words)
        assert stats["fields"][name]["words"]["mean"] == round(statistics.fmean(words), 2)
    # the dataset's README: median question 191 characters, median answer 84
    assert stats["fields"]["question"]["chars"]["percentiles"]["p50"] == 191
    assert stats["fields"]["answer"]["chars"]["percentiles"]["p50"] == 84
    exact_keys = [(r["question"], r["answer"]) for r in rows]
    assert stats["duplicates"]["exact"]["rows"] == len(exact_keys) - len(set(exact_keys))
    text = "".join(r["question"] + r["answer"] for r in rows)
    counts = stats["script_mix"]["counts"]
    assert stats["characters"] == len(text)
    assert counts["arabic_forms"] == sum(text.count(c) for c in "يكىة")
    assert counts["persian_digits"] == sum("۰" <= c <= "۹" for c in text)
    assert counts["latin_digits"] == sum("0" <= c <= "9" for c in text)
    assert counts["zwnj"] == text.count("\u200c")


def test_duplicates_exact_and_near_exact() -> None:
    acc = StatsAccumulator(("question", "answer"))
    acc.add(1, [("question", "كتاب خوب"), ("answer", "بله ۱۲")])
    acc.add(2, [("question", "كتاب خوب"), ("answer", "بله ۱۲")])  # exact copy of 1
    acc.add(3, [("question", "کتاب  خوب!"), ("answer", "بله 12")])  # same after folding
    acc.add(4, [("question", "کتاب بد"), ("answer", "نه")])
    dup = acc.result()["duplicates"]
    assert dup["exact"] == {"rows": 1, "groups": 1, "examples": [{"row": 2, "same_as_row": 1}]}
    assert dup["near_exact"]["rows"] == 2
    assert {"row": 3, "same_as_row": 1} in dup["near_exact"]["examples"]


def test_script_mix_counts_each_class() -> None:
    acc = StatsAccumulator(("text",))
    acc.add(1, [("text", "کي AB ۱2٣\u200c")])
    counts = acc.result()["script_mix"]["counts"]
    assert counts["persian"] == 1 and counts["arabic_forms"] == 1 and counts["latin"] == 2
    assert counts["persian_digits"] == 1 and counts["latin_digits"] == 1
    assert counts["arabic_digits"] == 1 and counts["zwnj"] == 1 and counts["whitespace"] == 2


def test_percqa_as_json_and_csv_reads_the_same(percqa: Path, tmp_path: Path) -> None:
    import csv

    rows = [json.loads(line) for line in percqa.read_text(encoding="utf-8").splitlines()]
    as_json = tmp_path / "percqa.json"
    as_json.write_text(json.dumps({"data": rows}, ensure_ascii=False), encoding="utf-8")
    as_csv = tmp_path / "percqa.csv"
    with as_csv.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["qid", "cid", "question", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    reference = scan_file(percqa, filename=percqa.name, options=ScanOptions()).stats
    assert reference is not None
    for path in (as_json, as_csv):
        result = scan_file(path, filename=path.name, options=ScanOptions())
        assert result.report.ok and result.report.rows_valid == 9638, path.name
        assert result.stats is not None
        assert result.stats["fields"] == reference["fields"], path.name
        for kind in ("exact", "near_exact"):
            counted = result.stats["duplicates"][kind]
            assert (counted["rows"], counted["groups"]) == (
                reference["duplicates"][kind]["rows"],
                reference["duplicates"][kind]["groups"],
            )
    # CSV rows are named by their first physical line: quoted newlines shift them
    csv_rows = scan_file(as_csv, filename="p.csv", options=ScanOptions()).stats
    assert csv_rows is not None
    first_example = csv_rows["duplicates"]["exact"]["examples"][0]
    lines = as_csv.read_text(encoding="utf-8-sig").splitlines()
    assert lines[first_example["row"] - 1].split(",")[0] == str(rows[926]["qid"])
