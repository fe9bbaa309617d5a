"""Persian normalization fixes letters, digits and ZWNJ, keeps Latin text, and
reports its effect."""

from __future__ import annotations

from pathlib import Path

from lastedocation.datasets.normalize import PersianNormalizer
from lastedocation.datasets.scan import ScanOptions, scan_file


def test_normalizer_fixes_persian_and_leaves_latin_alone() -> None:
    normalize = PersianNormalizer()
    assert normalize("كتاب ها را مي خوانم .") == "کتاب‌ها را می‌خوانم."
    assert normalize("12 سيب") == "۱۲ سیب"
    assert normalize("Python 3.11 را نصب كنيد") == "Python 3.11 را نصب کنید"
    assert normalize("به https://example.org/a_b?c=1 برو") == "به https://example.org/a_b?c=1 برو"
    assert normalize("  ") == "  "


def test_effect_counts_changed_rows_with_before_and_after(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text(
        '{"question": "كجا؟", "answer": "اينجا"}\n{"question": "کجا؟", "answer": "اینجا"}\n',
        encoding="utf-8",
    )
    result = scan_file(path, filename=path.name, options=ScanOptions(normalize=True))
    effect = result.normalization
    assert effect is not None
    assert effect["rows_changed"] == 1 and effect["fields_changed"] == 2
    assert effect["examples"][0] == {
        "row": 1,
        "field": "messages[0] (user)",
        "before": "كجا؟",
        "after": "کجا؟",
    }
    assert result.stats is not None
    assert result.stats["script_mix"]["counts"]["arabic_forms"] == 0
