"""Hostile files give a row problem or a clear fatal problem, never an exception,
and never cost more than a bounded amount of memory.

Each file is generated here (nothing hostile is committed) and scanned in a fresh
process that imports only the scan, so its peak RSS is the scan's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

# A scan of a small valid file peaks at about 80 MB (the interpreter, orjson, ijson,
# and numpy under shekar). Past that a scan holds one row (at most 2.4 MB of line
# with the default 200,000-character records) and the 50 rows format detection
# looks at. Before the limits, the 1 GiB line took 2 to 3 GB, the deep nesting
# 12 GB (and the address-space limit below stops it at 4).
PEAK_RSS_CAP_MB = 200
# The child refuses to grow past this, so a regression fails the test instead of
# taking the machine's memory.
_CHILD_ADDRESS_SPACE = 4 << 30
_MIB = 1 << 20
_OK = '{"question": "سلام؟", "answer": "درود."}'.encode()

_CHILD = """
import json, os, resource, sys
from pathlib import Path
limit = int(sys.argv[1])
try:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
except (ValueError, OSError):
    pass  # macOS: no address-space limit, the peak is still checked
from lastedocation.datasets.scan import ScanOptions, scan_file
results = []
for path, file_format in zip(sys.argv[2::2], sys.argv[3::2]):
    path = Path(path)
    with open(os.devnull, "wb") as out:
        options = ScanOptions(file_format=file_format)
        report = scan_file(path, filename=path.name, options=options, out=out).report
    results.append({**report.to_dict(), "fatal_flags": [p.fatal for p in report.problems]})
# VmHWM is this program's own peak: ru_maxrss would carry the parent's over the exec
status = Path("/proc/self/status")
if status.exists():
    lines = status.read_text().splitlines()
    peak_kib = next(int(line.split()[1]) for line in lines if line.startswith("VmHWM"))
else:
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # macOS: bytes
print(json.dumps({"reports": results, "peak_mb": peak_kib / 1024, "torch": "torch" in sys.modules}))
"""


def _scan_in_child(files: list[tuple[Path, str]]) -> tuple[list[dict[str, Any]], float]:
    """The reports of scanning `files` (path, file format) in one fresh process, and
    that process's peak RSS in MB."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # no thread buffers under the limit
    args = [sys.executable, "-c", _CHILD, str(_CHILD_ADDRESS_SPACE)]
    args += [str(part) for pair in files for part in pair]
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert not result["torch"]
    return result["reports"], result["peak_mb"]


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def _sparse_line(path: Path) -> None:
    # 1 GiB on one line, in no time and no disk: the file is a hole of NUL bytes,
    # made once and linked, so that its pages are read from disk once
    shared = path.parent / "line.bin"
    if not shared.exists():
        with shared.open("wb") as f:
            f.write(b'{"text": "')
            f.truncate(1 << 30)
    path.hardlink_to(shared)


def _long_string(path: Path) -> None:
    with path.open("wb") as f:
        f.write(b"[" + _OK + b', {"question": "')
        for _ in range(4):
            f.write("ب".encode() * (8 * _MIB))  # 64 MiB, never closed


def _many_rows(path: Path, count: int = 100_000) -> None:
    path.write_bytes(b"\n".join([_OK] * count) + b"\n")


@dataclass(frozen=True)
class Case:
    name: str
    file_format: str
    write: Callable[[Path], None]
    kind: str | None  # the problem expected; None: the file is valid
    row: int | None = None
    fatal: bool = False


def _bytes(data: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


_BIG_INT = b"1" * 1_000_000
# Each in a process of its own: what they would cost is the point.
HEAVY = [
    Case("deep.json", "json", _bytes(_deep(100_000)), "too_deep", 1),
    Case(
        "deep_object.json",
        "json",
        _bytes(
            b'{"meta": ' + _deep(100_000) + b', "data": [' + _OK + b", " + _deep(100_000) + b"]}"
        ),
        "too_deep",
        2,
    ),
    Case("deep.jsonl", "jsonl", _bytes(_OK + b"\n" + _deep(100_000)), "too_deep", 2),
    Case(
        "big_int.json",
        "json",
        _bytes(b'[{"question": "q", "answer": ' + _BIG_INT + b"}]"),
        "bad_number",
        1,
        fatal=True,
    ),
    Case(
        "big_int.jsonl",
        "jsonl",
        _bytes(b'{"question": "q", "answer": ' + _BIG_INT + b"}\n"),
        "bad_number",
        1,
    ),
    Case("line.jsonl", "jsonl", _sparse_line, "too_long", 1),
    Case("line.txt", "txt", _sparse_line, "too_long", 1),
    Case("line.csv", "csv", _sparse_line, "too_long", 1, fatal=True),
    Case("line.json", "json", _sparse_line, "bad_json", 1, fatal=True),
    Case("string.json", "json", _long_string, "too_long", 2, fatal=True),
    Case("string.jsonl", "jsonl", _long_string, "too_long", 1),
    Case(
        "row_of_many_lines.csv",
        "csv",
        _bytes(b"question,answer\n" + b'"x\nx",' * 500_000 + b"\n"),
        "too_long",
        2,
        fatal=True,
    ),
    Case("many_rows.jsonl", "jsonl", _many_rows, None),
]
# Small files, all scanned in one process.
LIGHT = [
    Case("huge_float.json", "json", _bytes(b'[{"q": "q", "a": 1e999999}]'), "bad_number", 1, True),
    Case("huge_float.jsonl", "jsonl", _bytes(b'{"q": "q", "a": 1e999999}\n'), "bad_number", 1),
    Case("bad_utf8.jsonl", "jsonl", _bytes(_OK + b'\n{"question": "\xff", "answer": "a"}\n'), "bad_utf8", 2),
    Case("bad_utf8.json", "json", _bytes(b'[{"question": "\xff", "answer": "a"}]'), "bad_utf8", 1, True),
    Case("bad_utf8.csv", "csv", _bytes(b"question,answer\n\xff,a\n"), "bad_utf8", 2),
    Case("bad_utf8.txt", "txt", _bytes(b"\xff\xfe\n"), "bad_utf8", 1),
    Case("bom.jsonl", "jsonl", _bytes(b"\xef\xbb\xbf" + _OK + b"\n"), None),
    Case("bom.json", "json", _bytes(b"\xef\xbb\xbf[" + _OK + b"]"), None),
    Case("bom.csv", "csv", _bytes("\ufeffquestion,answer\nسلام,درود\n".encode()), None),
    Case("bom.txt", "txt", _bytes("\ufeffسلام\n".encode()), None),
    Case("nul.jsonl", "jsonl", _bytes(b'{"question": "a\x00", "answer": "b"}\n'), "bad_json", 1),
    Case("nul.json", "json", _bytes(b'[{"question": "a\x00", "answer": "b"}]'), "bad_json", 1, True),
    # a NUL is a character like any other in CSV and text: kept
    Case("nul.csv", "csv", _bytes(b"question,answer\na\x00,b\n"), None),
    Case("nul.txt", "txt", _bytes(b"a\x00b\n"), None),
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def light_reports(workdir: Path) -> tuple[dict[str, dict[str, Any]], float]:
    for case in LIGHT:
        case.write(workdir / case.name)
    reports, peak = _scan_in_child([(workdir / c.name, c.file_format) for c in LIGHT])
    return {c.name: r for c, r in zip(LIGHT, reports, strict=True)}, peak


def _check(case: Case, report: dict[str, Any], peak_mb: float) -> None:
    assert peak_mb < PEAK_RSS_CAP_MB, f"{case.name}: peak {peak_mb:.0f} MB"
    for problem in report["problems"]:
        assert problem["kind"] and problem["message"]
    if case.kind is None:
        assert report["ok"], report["problems"]
        return
    found = [(p["kind"], p["row"]) for p in report["problems"]]
    assert (case.kind, case.row) in found, report["problems"]
    assert any(report["fatal_flags"]) is case.fatal
    assert bool(report["fatal"]) is case.fatal


@pytest.mark.parametrize("case", HEAVY, ids=[c.name for c in HEAVY])
def test_hostile_file_gives_a_problem_in_bounded_memory(case: Case, workdir: Path) -> None:
    path = workdir / case.name
    case.write(path)
    (report,), peak_mb = _scan_in_child([(path, case.file_format)])
    _check(case, report, peak_mb)


@pytest.mark.parametrize("case", LIGHT, ids=[c.name for c in LIGHT])
def test_odd_small_file_gives_a_problem_or_reads_well(
    case: Case, light_reports: tuple[dict[str, dict[str, Any]], float]
) -> None:
    reports, peak_mb = light_reports
    _check(case, reports[case.name], peak_mb)


def test_deep_nesting_over_the_api_is_a_row_problem(member_client: TestClient) -> None:
    data = _deep(100_000)  # the 200 KB file that took 12 GB and answered 500
    files = {"file": ("deep_nesting.json", data)}
    checked = member_client.post("/api/v1/datasets/validate", files=files)
    assert checked.status_code == 200, checked.text
    (problem,) = checked.json()["report"]["problems"]
    assert (problem["row"], problem["kind"]) == (1, "too_deep")
    assert "64 levels" in problem["message"]
    imported = member_client.post("/api/v1/datasets", files=files)
    assert imported.status_code == 422, imported.text
    assert imported.json()["report"]["problems"][0]["kind"] == "too_deep"
