"""Readers stream records and name the row of every problem."""

from __future__ import annotations

from pathlib import Path

from lastedocation.datasets.reader import (
    MAX_DEPTH,
    Problem,
    Record,
    guess_file_format,
    read_records,
)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_jsonl_reports_bad_utf8_and_broken_lines_by_line_number(tmp_path: Path) -> None:
    data = (
        '{"question": "سلام", "answer": "درود"}\n'.encode()
        + b'{"question": "\xff\xfe", "answer": "x"}\n'
        + b'{"question": "a", "answer": \n'
        + b"\n"
        + '{"question": "ب", "answer": "پ"}'.encode()
    )
    items = list(read_records(_write(tmp_path, "a.jsonl", data), "jsonl"))
    assert [type(i).__name__ for i in items] == ["Record", "Problem", "Problem", "Record"]
    bad_utf8, broken = items[1], items[2]
    assert isinstance(bad_utf8, Problem) and bad_utf8.kind == "bad_utf8" and bad_utf8.row == 2
    assert isinstance(broken, Problem) and broken.kind == "bad_json" and broken.row == 3
    assert isinstance(items[3], Record) and items[3].row == 5


def test_jsonl_truncated_last_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.jsonl", b'{"question": "a", "answer": "b"}\n{"question": "a", "ans')
    problem = list(read_records(path, "jsonl"))[-1]
    assert isinstance(problem, Problem) and problem.kind == "truncated" and problem.row == 2


def test_json_array_cut_midway_is_fatal_after_complete_items(tmp_path: Path) -> None:
    path = _write(tmp_path, "cut.json", b'[{"q": "1"}, {"q": "2"}, {"q": "3", "a": "fo')
    items = list(read_records(path, "json"))
    assert [i.data for i in items if isinstance(i, Record)] == [{"q": "1"}, {"q": "2"}]
    problem = items[-1]
    assert isinstance(problem, Problem) and problem.fatal and problem.kind == "truncated"
    assert problem.row == 3
    assert "2 complete items" in problem.message


def test_json_object_holding_the_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "o.json", b'{"version": 2, "data": [{"a": 1}, {"a": 2}]}')
    assert [i.data for i in read_records(path, "json")] == [{"a": 1}, {"a": 2}]


def test_csv_with_bom_crlf_and_quoted_newlines(tmp_path: Path) -> None:
    data = (
        '\ufeffquestion,answer\r\n"چرا آسمان\r\nآبی است؟","به خاطر پراکندگی نور"\r\nدو,سه\r\n'
    ).encode()
    items = list(read_records(_write(tmp_path, "c.csv", data), "csv"))
    assert all(isinstance(i, Record) for i in items)
    assert items[0].data == {"question": "چرا آسمان\r\nآبی است؟", "answer": "به خاطر پراکندگی نور"}
    assert [i.row for i in items] == [2, 4]


def test_csv_wrong_column_count_names_the_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.csv", "question,answer\nیک,دو,سه\n".encode())
    (problem,) = list(read_records(path, "csv"))
    assert isinstance(problem, Problem) and problem.row == 2 and "3 columns" in problem.message


def test_text_lines_keep_zwnj(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.txt", "کتاب‌ها\n\nمی‌روم\n".encode())
    assert [i.data["text"] for i in read_records(path, "txt")] == ["کتاب‌ها", "می‌روم"]


def test_guess_file_format() -> None:
    assert guess_file_format("x.JSONL", b"") == "jsonl"
    assert guess_file_format("x.data", b'  [{"a": 1}]') == "json"
    assert guess_file_format("x.data", b'{"a": 1}\n{"a": 2}\n') == "jsonl"
    assert guess_file_format("x.data", b'{"a":\n 1}') == "json"
    assert guess_file_format("x.data", b"hello") is None


def test_nesting_up_to_the_limit_reads_and_past_it_is_a_row_problem(tmp_path: Path) -> None:
    at_limit, past = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, b"[" * 65 + b"]" * 65
    jsonl = _write(tmp_path, "d.jsonl", at_limit + b"\n" + past)  # no newline at the end
    json_ = _write(tmp_path, "d.json", b"[" + at_limit + b", " + past + b", 7]")
    for path, file_format in [(jsonl, "jsonl"), (json_, "json")]:
        items = list(read_records(path, file_format))  # type: ignore[arg-type]
        assert isinstance(items[0], Record)
        problem = items[1]
        assert isinstance(problem, Problem) and (problem.row, problem.kind) == (2, "too_deep")
        assert "nested deeper than 64 levels" in problem.message and not problem.fatal
    assert items[2] == Record(3, 7)  # the JSON array reads on after the deep row


def test_over_long_lines_are_skipped_and_reading_goes_on(tmp_path: Path) -> None:
    data = b'{"a": "' + b"x" * 5000 + b'"}\n{"a": "y"}\n'
    for file_format in ("jsonl", "txt"):
        path = _write(tmp_path, f"l.{file_format}", data)
        problem, record = read_records(path, file_format, max_line_bytes=100)  # type: ignore[arg-type]
        assert isinstance(problem, Problem) and (problem.row, problem.kind) == (1, "too_long")
        assert "limit of 100 bytes" in problem.message
        assert isinstance(record, Record) and record.row == 2


def test_json_row_past_the_limit_is_skipped_unbuilt(tmp_path: Path) -> None:
    # many small values: no single one is long, the row is
    big_row = b'{"a": [' + b"1, " * 100_000 + b"1]}"
    path = _write(tmp_path, "r.json", b"[" + big_row + b', {"a": 2}]')
    problem, record = read_records(path, "json", max_line_bytes=1000)
    assert isinstance(problem, Problem) and (problem.row, problem.kind) == (1, "too_long")
    assert not problem.fatal
    assert record == Record(2, {"a": 2})


def test_csv_row_past_the_limit_is_fatal(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", b"q,a\n" + b"x" * 5000 + b",y\n")
    (problem,) = read_records(path, "csv", max_line_bytes=1000)
    assert isinstance(problem, Problem) and (problem.row, problem.kind) == (2, "too_long")
    assert problem.fatal and "1,000 characters" in problem.message


def test_json_object_rows_under_any_key_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "k.json", b'{"meta": {"train": []}, "set.v2": [{"a": 1}, [2]]}')
    assert list(read_records(path, "json")) == [Record(1, {"a": 1}), Record(2, [2])]


def test_json_number_too_large_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "n.json", b'[{"a": 1}, {"a": 123456789012345678901234567890}]')
    _, problem = read_records(path, "json")
    assert isinstance(problem, Problem) and (problem.row, problem.kind) == (2, "bad_number")
    assert problem.fatal and "too large" in problem.message


def test_broken_json_is_explained_without_echoing_the_input(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.json", b'[{"q": "a"} {"q": "\xff"}]')
    _, problem = read_records(path, "json")
    assert isinstance(problem, Problem) and problem.kind == "bad_json" and problem.row == 2
    assert problem.message == (
        "not valid JSON after 1 complete items: parse error: after array element, "
        "I expect ',' or ']'"
    )
