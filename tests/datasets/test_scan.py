"""The scan's report: every problem of a row counted, warnings kept apart."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from lastedocation.datasets.scan import ScanOptions, scan_file


def _scan_bytes(tmp_path: Path, name: str, data: bytes) -> dict[str, Any]:
    path = tmp_path / name
    path.write_bytes(data)
    result = scan_file(path, filename=name, options=ScanOptions(), out=io.BytesIO())
    return result.report.to_dict()


def test_a_row_with_two_wrong_fields_gets_two_problems(tmp_path: Path) -> None:
    data = '{"question": "سلام", "answer": "درود"}\n{"question": [1], "answer": ""}\n'
    report = _scan_bytes(tmp_path, "two.jsonl", data.encode())
    assert report["rows_invalid"] == 1 and report["problems_total"] == 2
    assert [(p["row"], p["field"]) for p in report["problems"]] == [
        (2, "question"),
        (2, "answer"),
    ]


def test_bidi_control_is_a_warning_that_leaves_the_report_ok(tmp_path: Path) -> None:
    data = (
        '{"question": "سلام", "answer": "درود"}\n'
        '{"question": "کد \u202eپنهان\u202c است", "answer": "می\u200cدانم"}\n'
    )
    report = _scan_bytes(tmp_path, "bidi.jsonl", data.encode())
    assert report["ok"] is True and report["rows_valid"] == 2
    assert report["problems_total"] == 0 and report["warnings_total"] == 1
    (warning,) = report["warnings"]
    assert (warning["row"], warning["field"], warning["kind"]) == (2, "question", "bidi_control")


def test_report_of_valid_data_is_unchanged_but_for_empty_warnings(tmp_path: Path) -> None:
    data = "question,answer\nچرا؟,چون.\n".encode()
    assert _scan_bytes(tmp_path, "ok.csv", data) == {
        "ok": True,
        "rows_seen": 1,
        "rows_valid": 1,
        "rows_invalid": 0,
        "problems_total": 0,
        "problems_shown": 0,
        "problems_by_kind": {},
        "empty_answers": 0,
        "fatal": None,
        "problems": [],
        "warnings_total": 0,
        "warnings": [],
    }


def test_invalid_utf8_in_another_csv_column_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    # the import used to fail writing the record: orjson refuses surrogates
    data = b"question,answer,source\nq,a,\xff\xfe\n"
    report = _scan_bytes(tmp_path, "meta.csv", data)
    (problem,) = report["problems"]
    assert (problem["row"], problem["field"], problem["kind"]) == (2, "source", "bad_utf8")
