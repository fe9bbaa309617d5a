"""Fuzzing the readers and the scan: arbitrary bytes and JSON-ish rows, deep nesting
included, in every file format. Whatever comes in, the scan answers with a report
(never an exception), every problem says what and where, and the report can be
sent as JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lastedocation.datasets.reader import FILE_FORMATS, MAX_DEPTH, Record, read_records
from lastedocation.datasets.scan import ScanOptions, ScanResult, scan_file

_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# problems about the whole file rather than a row
_FILE_KINDS = {"unknown_format", "empty_file", "no_rows"}

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=1 - 2**63, max_value=2**63 - 1)  # yajl refuses -2**63
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_qa_rows = st.fixed_dictionaries(
    {"question": _scalars, "answer": _scalars}, optional={"qid": _values}
)
_rows = st.lists(_qa_rows | _values, max_size=8)
# the opening brackets of a value up to three times as deep as the limit (the
# closing ones are derived); the depth drawn first, as lists come out short
_openers = st.integers(min_value=0, max_value=3 * MAX_DEPTH).flatmap(
    lambda depth: st.lists(st.sampled_from(["[", '{"k": ']), min_size=depth, max_size=depth)
)


def _deep(openers: list[str]) -> str:
    closers = "".join("]" if o == "[" else "}" for o in reversed(openers))
    return "".join(openers) + "1" + closers


def _scan(path: Path, file_format: str, normalize: bool = False) -> ScanResult:
    options = ScanOptions(file_format=file_format, normalize=normalize)  # type: ignore[arg-type]
    result = scan_file(path, filename=path.name, options=options, out=io.BytesIO())
    report = result.report
    for problem in [*report.problems, *report.warnings]:
        assert problem.kind and problem.message
        assert problem.field is None or problem.row is not None
        assert problem.row is not None or problem.kind in _FILE_KINDS or problem.fatal
    for warning in report.warnings:
        assert warning.row is not None and warning.field is not None
    # what the API sends back
    json.dumps(result.summary(), ensure_ascii=False).encode("utf-8")
    return result


@settings(_SETTINGS, max_examples=200)
@given(data=st.binary(max_size=3000))
def test_any_bytes_in_any_format_give_a_report(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "upload"
    path.write_bytes(data)
    for file_format in FILE_FORMATS:
        _scan(path, file_format)


@_SETTINGS
@given(rows=_rows, ascii_only=st.booleans())
def test_json_rows_read_back_as_written(tmp_path: Path, rows: list[Any], ascii_only: bool) -> None:
    """The event-built JSON rows and the JSONL rows equal what was written."""
    lines = [json.dumps(row, ensure_ascii=ascii_only) for row in rows]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    array = tmp_path / "rows.json"
    array.write_text(json.dumps({"version": 1, "data": rows}), encoding="utf-8")
    for path, file_format in [(jsonl, "jsonl"), (array, "json")]:
        items = list(read_records(path, file_format))  # type: ignore[arg-type]
        assert [i.data for i in items if isinstance(i, Record)] == rows, items
        _scan(path, file_format)


@_SETTINGS
@given(openers=_openers, where=st.integers(min_value=0, max_value=3))
@example(openers=["["] * (MAX_DEPTH - 1), where=0)  # the row and its value: at the limit
@example(openers=["["] * MAX_DEPTH, where=3)  # one past it
def test_deep_values_are_a_row_problem_past_the_limit(
    tmp_path: Path, openers: list[str], where: int
) -> None:
    rows = ['{"question": "q", "answer": "a"}'] * 3
    rows.insert(where, '{"question": "q", "answer": "a", "x": ' + _deep(openers) + "}")
    too_deep = 1 + len(openers) > MAX_DEPTH  # the row itself is the first level
    jsonl = tmp_path / "deep.jsonl"
    jsonl.write_text("\n".join(rows), encoding="utf-8")
    array = tmp_path / "deep.json"
    array.write_text("[" + ", ".join(rows) + "]", encoding="utf-8")
    for path, row in [(jsonl, where + 1), (array, where + 1)]:
        report = _scan(path, path.suffix[1:]).report
        found = [(p.row, p.kind) for p in report.problems]
        assert found == ([(row, "too_deep")] if too_deep else []), found
        assert report.rows_valid == 3 + (not too_deep)


# fewer examples: the Persian normalizer takes 50 ms to set up for every scan
@settings(_SETTINGS, max_examples=20)
@given(
    table=st.lists(st.lists(st.text(max_size=12), min_size=2, max_size=2), max_size=6),
    normalize=st.booleans(),
)
def test_csv_and_text_of_any_text_give_a_report(
    tmp_path: Path, table: list[list[str]], normalize: bool
) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["question", "answer"], *table])
    path = tmp_path / "t.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    _scan(path, "csv", normalize)
    text = tmp_path / "t.txt"
    text.write_text("\n".join(cell for row in table for cell in row), encoding="utf-8")
    _scan(text, "txt", normalize)
