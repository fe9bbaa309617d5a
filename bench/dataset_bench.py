"""Benchmark: dataset validation throughput and peak memory of `scan_file`.

What is measured, and why:

* Throughput (MB/s) of `scan_file` on a generated ~100 MB JSONL file of Persian
  question/answer rows, once as the studio's import runs it (canonical records written
  to a real file) and once validate-only (`out=None`). The reference point is the
  floor any Python validator pays: a plain `json.loads` loop over the same lines.
  The ratio ours/baseline says how much our parsing, validation, statistics and
  writing cost on top of just reading the JSON.
* Peak memory growth: `scan_file` promises to stream, so memory must not grow with
  the file. Each variant runs in a fresh subprocess (this script with `--measure`);
  RSS is read after imports, just before the pass, and sampled every ~20 ms from a
  background thread during it. The reported figure is the sampled peak minus that
  pre-pass RSS. (`ru_maxrss` is shown too, but it is the lifetime peak including
  imports.) Target: ours at most 64 MB above the process baseline.

The data is generated with a seeded `random.Random` (reproducible; not timed).
"MB" means 2**20 bytes throughout.

    .venv/bin/python bench/dataset_bench.py [--mb 100] [--json out.json] [--strict]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from lastedocation.datasets.scan import ScanOptions, scan_file

MB = 1 << 20
TARGET_GROWTH_MB = 64.0
VARIANTS = {
    "baseline": "json.loads loop",
    "ours": "scan_file (import, out=file)",
    "ours-validate": "scan_file (validate only, out=None)",
}
ZWNJ = "\u200c"
# Common Persian words; in the second list "+" marks where a ZWNJ joins the parts.
_COMMON = """
از به با در که این آن را برای است بود شد کرد یک هم تا نیز اما یا اگر چه هر ما شما آنها او
من ایران تهران کتاب زبان فارسی سال روز کار خانه مردم دولت شهر آب نان دانشگاه دانشجو مدرسه
علم تاریخ فرهنگ جهان کشور زمان راه دست سر دل خوب بزرگ کوچک جدید زیاد بسیار چند همه دیگر
اول آخر باید شاید چرا چگونه کجا پاسخ پرسش مسئله روش نتیجه بخش مثال توضیح دلیل سامانه داده
"""
_JOINED = "می+شود نمی+دانم کتاب+ها خانه+ای می+توان درس+ها به+طور پژوهش+گر هم+چنین"
WORDS = tuple(_COMMON.split())
ZWNJ_WORDS = tuple(word.replace("+", ZWNJ) for word in _JOINED.split())
LATIN = ("Python", "API", "GPU", "model", "data", "Tehran", "OK", "JSON", "token")


def main() -> int:
    args = _parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, Path(args.path))))
        return 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dataset-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"qa-{args.mb}mb-seed{args.seed}.jsonl"
    try:
        passed = bench(args, data, workdir)
    finally:
        if not args.workdir:
            data.unlink(missing_ok=True)
            workdir.rmdir()
    return 1 if args.strict and not passed else 0


def bench(args: argparse.Namespace, data: Path, workdir: Path) -> bool:
    """Run every variant, print the results; True when the memory target holds."""
    rows = generate(data, args.mb * MB, args.seed) if not data.exists() else _count_lines(data)
    size_mb = data.stat().st_size / MB
    print(f"data: {data} ({size_mb:.1f} MB, {rows:,} rows, seed {args.seed})")

    # Memory first, while this process is still small: a child's ru_maxrss starts from
    # the parent's peak (Linux keeps it across fork and exec).
    memory = {name: _in_subprocess(name, data) for name in VARIANTS}
    results: dict[str, dict[str, Any]] = {}
    for name in VARIANTS:  # timed here, in one process, with the file in the page cache
        seconds, checked = _timed(name, data, workdir)
        mb_per_s = size_mb / seconds
        results[name] = {"seconds": seconds, "mb_per_s": mb_per_s, "rows": checked}
        results[name]["memory"] = memory[name]
        print(f"{VARIANTS[name]:<38} {seconds:7.2f} s  {mb_per_s:7.1f} MB/s")
        if name != "baseline" and checked != rows:
            print(f"  warning: {checked:,} of {rows:,} rows valid")
    base = results["baseline"]["mb_per_s"]
    for name in ("ours", "ours-validate"):
        results[name]["ratio_to_baseline"] = results[name]["mb_per_s"] / base
    growth: float = results["ours"]["memory"]["peak_growth_mb"]
    passed = growth <= TARGET_GROWTH_MB

    print(
        f"\n{'variant':<38} {'MB/s':>7} {'vs base':>8} {'peak +MB':>9} {'pre MB':>7} {'maxrss':>7}"
    )
    for name, label in VARIANTS.items():
        r, m = results[name], results[name]["memory"]
        ratio = f"{r['ratio_to_baseline']:.2f}x" if "ratio_to_baseline" in r else "1.00x"
        print(
            f"{label:<38} {r['mb_per_s']:7.1f} {ratio:>8} {m['peak_growth_mb']:9.1f} "
            f"{m['rss_before_mb']:7.1f} {m['ru_maxrss_mb']:7.1f}"
        )
    print("(peak +MB: sampled peak RSS minus RSS before the pass; maxrss: lifetime peak)")
    target = f"ours <= {TARGET_GROWTH_MB:.0f} MB above the process baseline"
    print(f"\nmemory target: {target}: {'PASS' if passed else 'FAIL'} (+{growth:.1f} MB)")
    if args.json:
        report = {
            "data": {"path": str(data), "mb": size_mb, "rows": rows, "seed": args.seed},
            "variants": results,
            "target_growth_mb": TARGET_GROWTH_MB,
            "pass": passed,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return passed


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--mb", type=int, default=100, help="size of the generated file (MB)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--workdir", help="where the data goes (kept, and reused if present)")
    p.add_argument("--json", help="also write the results as JSON to this path")
    p.add_argument("--strict", action="store_true", help="exit 1 when the memory target fails")
    p.add_argument("--measure", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    return p.parse_args()


# -- data ---------------------------------------------------------------------------------


def generate(path: Path, size: int, seed: int) -> int:
    """Write question/answer rows until the file holds `size` bytes; return the row count."""
    rng = random.Random(seed)
    rows = written = 0
    partial = path.with_suffix(".part")  # renamed when complete, so --workdir reuse is safe
    with partial.open("wb") as f:
        while written < size:
            rows += 1
            row = {
                "qid": f"q{rows:08d}",
                "question": _text(rng, _length(rng, 110, 0.8, 20, 600)),
                "answer": _text(rng, _length(rng, 280, 1.0, 5, 1500)),
            }
            line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            written += len(line)
    partial.rename(path)
    return rows


def _length(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    """Roughly log-normal, clamped to [lo, hi]."""
    value = rng.lognormvariate(0.0, sigma) * median
    return max(lo, min(hi, int(value)))


def _text(rng: random.Random, chars: int) -> str:
    words = rng.choices(WORDS, k=chars // 4 + 2)
    for i in range(len(words)):
        roll = rng.random()
        if roll < 0.06:
            words[i] = rng.choice(ZWNJ_WORDS)
        elif roll < 0.08:
            words[i] = rng.choice(LATIN)
        elif roll < 0.10:
            words[i] = str(rng.randint(0, 2030))
    text = " ".join(words)[:chars]
    if text[-1] in (" ", ZWNJ):  # no dangling separator; keep the exact length
        text = text[:-1] + "ه"
    return text + ("؟" if chars < 600 and rng.random() < 0.5 else "")


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


# -- the passes ---------------------------------------------------------------------------


def run_variant(name: str, data: Path, out_path: Path) -> int:
    """One pass over `data`; returns the rows parsed (baseline) or valid (ours)."""
    if name == "baseline":
        rows = 0
        with open(data, "rb") as lines:
            for line in lines:
                json.loads(line)
                rows += 1
        return rows
    if name == "ours-validate":
        result = scan_file(data, filename=data.name, options=ScanOptions())
    else:
        with out_path.open("wb") as out:  # a real file, as the import writes
            result = scan_file(data, filename=data.name, options=ScanOptions(), out=out)
    return int(result.report.rows_valid)


def _timed(name: str, data: Path, workdir: Path) -> tuple[float, int]:
    out_path = workdir / "canonical.jsonl"
    gc.collect()
    start = time.perf_counter()
    rows = run_variant(name, data, out_path)
    seconds = time.perf_counter() - start
    out_path.unlink(missing_ok=True)
    return seconds, rows


def measure(name: str, data: Path) -> dict[str, float]:
    """In a fresh process: RSS before the pass, and the peak sampled during it."""
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryDirectory(prefix="dataset-bench-out-") as tmp:
        sampler.start()
        start = time.perf_counter()
        run_variant(name, data, Path(tmp) / "canonical.jsonl")
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    peak = max(peak, proc.memory_info().rss)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "rss_before_mb": before / MB,
        "peak_rss_mb": peak / MB,
        "peak_growth_mb": (peak - before) / MB,
        "ru_maxrss_mb": maxrss / MB,
        "seconds_with_sampler": seconds,
    }


def _in_subprocess(name: str, data: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--measure", name, "--path", str(data)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    sys.exit(main())
