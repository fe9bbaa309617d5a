"""Readers stream records and name the row of every problem."""

from __future__ import annotations

from pathlib import Path

from lastedocation.datasets.reader import Problem, Record, guess_file_format, read_records


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
