"""Backup benchmark: the studio's backup and restore to a local S3 server, against the
same engine run plainly and against a plain copy, in one run.

A studio of about `--mb` MB (default 1024; `--quick` makes it 100) is built in a
temporary folder: `create_app` makes the real database and sample dataset, then run
folders with completed checkpoints (written by the trainer's own `write_checkpoint`, so
they verify; weights are seeded random float32, nearly incompressible like real
weights), model folders, and Persian text datasets (shuffled PerCQA rows, compressible).
One `rclone serve s3` on loopback is the target for every side. Each repeat uses fresh
buckets and caches, runs the sides in mirrored order, and `sync`s before each timing:

* backup: a studio backup job (`Backups.run`: reach the target, stage, create the
  repository, restic backup, retention), against baseline A, plain restic (`init` and
  `backup` of the same files, same `rclone:` backend, same environment and options the
  studio's Engine builds, a fresh repository), and baseline B, `rclone copy` of the same
  files (no encryption, chunking, hashing or dedup);
* restore: `restore.restore` into an empty folder, against plain `restic restore` of
  baseline A's snapshot (and with `--verify`, as the studio runs it), and `rclone copy`
  back;
* incremental: one small change (a 1 MB dataset, a few-MB checkpoint, lines appended
  to a run's events), then the studio's second backup, restic's second backup and a
  second `rclone copy` (which also skips unchanged files).

The studio's restic runs at a low CPU and I/O priority (`nice`, `ionice`: training comes
first), so the baselines run under the same prefix; the load average before and after is
printed, since on a busy machine any low-priority work slows down.

Ratios are baseline time / studio time (above 1: the studio is faster; target for
baseline A: at least 0.8x), medians over `--repeats`. Nothing asserts absolute times.

    .venv/bin/python bench/backup_bench.py [--mb 1024 | --quick] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.backup.conftest import ACCESS_KEY, SECRET_KEY, free_port, secret_file

from lastedocation.api.app import create_app
from lastedocation.backup import jobs, restore, snapshot
from lastedocation.backup.engine import Engine, _low_priority, find_program
from lastedocation.backup.runner import Backups
from lastedocation.backup.targets import BackupTarget
from lastedocation.settings import Settings
from lastedocation.training.checkpoint import write_checkpoint

MB = 1 << 20
PERCQA = Path(__file__).resolve().parents[2] / "shared" / "data" / "percqa" / "train.jsonl"
TARGET = 0.8
# the Engine's backup flags; without them the studio's hard links (a link count changes
# a file's ctime) would make plain restic read every file again in the incremental case
SAME_FLAGS = ["--ignore-ctime", "--ignore-inode"]
LOG_STATS = ["--use-json-log", "-v", "--stats", "24h"]  # the bytes sent, in the last line


# --- the studio -----------------------------------------------------------------------


def weights(path: Path, size: int, rng: np.random.Generator) -> None:
    """Seeded float32 'weights' of about `size` bytes (as compressible as real ones)."""
    rng.standard_normal(max(1, size // 4), dtype=np.float32).__imul__(0.02).tofile(path)


def text_file(path: Path, size: int, seed: int) -> None:
    """About `size` bytes of Persian JSONL rows, shuffled per file so files differ."""
    rows = PERCQA.read_text(encoding="utf-8").splitlines() if PERCQA.is_file() else []
    rows = rows or [json.dumps({"text": "سلام دنیا " * 40}, ensure_ascii=False)]
    shuffle = random.Random(seed)
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < size:
            shuffle.shuffle(rows)
            for row in rows:
                f.write(row + "\n")
                written += len(row.encode()) + 1
                if written >= size:
                    break


def add_dataset(data_dir: Path, size: int, seed: int) -> Path:
    records = data_dir / "tmp" / f"records-{seed}.jsonl"
    text_file(records, size, seed)
    digest = hashlib.sha256(records.read_bytes()).hexdigest()
    folder = data_dir / "datasets" / digest
    folder.mkdir(parents=True)
    os.replace(records, folder / "records.jsonl")
    (folder / "offsets.json").write_text(json.dumps(list(range(0, size, 997))), encoding="utf-8")
    return folder


def add_checkpoint(run: Path, step: int, size: int, rng: np.random.Generator) -> Path:
    """A trainer's checkpoint: weights, Adam moments (twice the weights), small states."""

    def files(folder: Path) -> None:
        weights(folder / "model.safetensors", size // 3, rng)
        weights(folder / "optimizer.pt", size - size // 3, rng)
        for name in ("scheduler.pt", "scaler.pt", "rng.pt"):
            (folder / name).write_bytes(rng.bytes(4096))

    meta = {"state": {"step": step}, "events_seq": step}
    return Path(write_checkpoint(run / "checkpoints", step, files, meta))


def build_studio(data_dir: Path, total: int, seed: int) -> Settings:
    """A studio of about `total` bytes: 70% run checkpoints, 24% models, 6% datasets."""
    settings = Settings(data_dir=data_dir, bundled_speech_model=False)
    create_app(settings)  # the real database (migrated) and the sample dataset
    rng = np.random.default_rng(seed)
    for i in range(4):
        add_dataset(data_dir, int(total * 0.06 / 4), seed + i)
    for run_id in range(1, 4):
        run = data_dir / "runs" / f"{run_id:06d}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"name: run-{run_id}\nseed: {seed}\n", encoding="utf-8")
        with (run / "events.jsonl").open("w", encoding="utf-8") as f:
            for seq in range(1, 20_001):
                loss = 4.0 / (1 + seq / 500)
                f.write(json.dumps({"seq": seq, "type": "metrics", "step": seq, "loss": loss}))
                f.write("\n")
        (run / "trainer.log").write_text("step done\n" * 2000, encoding="utf-8")
        for step in (500, 1000):
            add_checkpoint(run, step, int(total * 0.70 / 6), rng)
    for model_id in range(1, 3):
        folder = data_dir / "models" / f"{model_id:06d}" / "model"
        folder.mkdir(parents=True)
        weights(folder / "model.safetensors", int(total * 0.24 / 2), rng)
        (folder / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
        (folder / "tokenizer.json").write_text('{"version": "1.0"}' * 500, encoding="utf-8")
    return settings


def studio_files(data_dir: Path) -> list[str]:
    """The top-level entries the studio backs up (what the baselines copy too)."""
    kept = (e.name for e in data_dir.iterdir() if e.name not in snapshot.SKIPPED_TOP)
    return [*sorted(kept), "studio.db"]


def tree_bytes(folder: Path) -> tuple[int, int]:
    files = size = 0
    for path, _dirs, names in os.walk(folder):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(path, name)).st_size
    return files, size


# --- the S3 server and the sides ------------------------------------------------------


def start_s3(work: Path) -> tuple[subprocess.Popen[bytes], str, Path, Path]:
    served = work / "served"
    served.mkdir()
    port = free_port()
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen(
        [find_program("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}",
         "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", str(served)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RCLONE_CONFIG": os.devnull},
    )  # fmt: skip
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}", served, secret_file(work, "s3.secret", SECRET_KEY)


def s3_target(name: str, endpoint: str, served: Path, secret: Path, bucket: str) -> BackupTarget:
    (served / bucket).mkdir(exist_ok=True)
    return BackupTarget(
        name=name, kind="s3", provider="Rclone", endpoint=endpoint, path=f"{bucket}/lastedocation",
        access_key_id=ACCESS_KEY, secret_access_key_file=secret, timeout_s=30,
    )  # fmt: skip


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    os.sync()  # earlier writes are not flushed on this side's clock
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


class Studio:
    """Backup jobs through `Backups.run`, each step timed from the job's own events."""

    def __init__(self, settings: Settings, sessions: Any, target: BackupTarget) -> None:
        self.settings = settings.model_copy(update={"backup_targets": [target]})
        self.backups = Backups(settings=self.settings, sessions=sessions)
        self.target = target

    def backup(self) -> dict[str, Any]:
        marks: list[tuple[float, str]] = [(time.perf_counter(), "job start")]

        def listener(event: dict[str, Any]) -> None:
            if event["type"] in ("step", "state"):
                marks.append((time.perf_counter(), event.get("step") or event["state"]))

        with self.backups.sessions() as session:
            job_id = jobs.queue_job(session, kind="backup", target=self.target, trigger="cli").id
        job = self.backups.run(job_id, listener=listener)
        if job.state != "done":
            raise RuntimeError(f"the studio's backup {job.state}: {job.message}")
        steps = {name: later - at for (at, name), (later, _) in itertools.pairwise(marks)}
        return {"snapshot": job.snapshot_id, "sent": job.bytes_sent, "steps": steps}

    def restore(self, snapshot_id: str, into: Path) -> None:
        restore.restore(
            engine=self.backups.engine(self.target), snapshot_id=snapshot_id, data_dir=into,
            database_url=None,
        )  # fmt: skip


class PlainRestic:
    """Baseline A: restic itself with the studio's repository, backend options and env."""

    def __init__(self, target: BackupTarget, cache: Path, data_dir: Path) -> None:
        engine = Engine(target, cache_dir=cache)
        # the studio's restic runs at a low CPU and I/O priority (training comes first):
        # so does every baseline, or a busy machine would favour them
        self.command = [*_low_priority(), engine.restic, "-r", engine.repository]
        self.command += engine._options()
        self.env = engine.env()
        self.data_dir = data_dir

    def backup(self, *, init: bool) -> dict[str, Any]:
        if init:
            run([*self.command, "init", "--repository-version", "2"], env=self.env)
        done = run(
            [*self.command, "backup", "--json", *SAME_FLAGS, *studio_files(self.data_dir)],
            env=self.env, cwd=self.data_dir,
        )  # fmt: skip
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        return {"snapshot": summary["snapshot_id"], "sent": summary["data_added"]}

    def restore(self, snapshot_id: str, into: Path, *, verify: bool = False) -> None:
        extra = ["--verify"] if verify else []
        run([*self.command, "restore", snapshot_id, "--target", str(into), *extra], env=self.env)


class PlainCopy:
    """Baseline B: `rclone copy` of the same files to the same server, and back."""

    def __init__(self, target: BackupTarget, data_dir: Path) -> None:
        self.rclone = [*_low_priority(), find_program("rclone")]
        self.env = Engine(target, cache_dir=data_dir).env()
        self.remote = f"lastedocation:{target.path}"
        skipped = sorted(set(snapshot.SKIPPED_TOP) - {"studio.db"})
        self.filters = [arg for name in skipped for arg in ("--exclude", f"/{name}/**")]
        self.filters += [arg for name in skipped for arg in ("--exclude", f"/{name}")]
        self.data_dir = data_dir

    def _copy(self, source: str, dest: str, filters: list[str]) -> int:
        done = run([*self.rclone, "copy", source, dest, *filters, *LOG_STATS], env=self.env)
        sent = 0
        for line in done.stderr.splitlines():
            if '"stats"' in line:
                sent = int(json.loads(line)["stats"]["bytes"])
        return sent

    def backup(self) -> dict[str, Any]:
        return {"sent": self._copy(str(self.data_dir), self.remote, self.filters)}

    def restore(self, into: Path) -> None:
        self._copy(self.remote, str(into), [])


# --- one repeat -------------------------------------------------------------------------


def change_something(settings: Settings, delta: int, rng: np.random.Generator) -> list[Path]:
    """A small day's work: a new 1 MB dataset, one checkpoint, a run's events grow."""
    data_dir = settings.data_dir
    dataset = add_dataset(data_dir, MB, seed=10_000 + int(rng.integers(1 << 30)))
    run_dir = data_dir / "runs" / "000001"
    ckpt = add_checkpoint(run_dir, 1500, delta, rng)
    with (run_dir / "events.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"seq": 20001, "type": "checkpoint", "step": 1500}\n')
    return [dataset, ckpt]


def undo(paths: list[Path], events: Path, events_size: int) -> None:
    for path in paths:
        shutil.rmtree(path)
    os.truncate(events, events_size)


def repeat(
    i: int, settings: Settings, sessions: Any, s3: tuple[str, Path, Path], work: Path, delta: int
) -> dict[str, Any]:
    endpoint, served, secret = s3
    data_dir = settings.data_dir
    shutil.rmtree(snapshot.backup_dir(settings), ignore_errors=True)  # cold: no verified.json
    buckets = {side: f"{side}-{i}" for side in ("studio", "restic", "copy")}
    studio = Studio(
        settings, sessions, s3_target("bench", endpoint, served, secret, buckets["studio"])
    )
    restic_target = s3_target("plain", endpoint, served, secret, buckets["restic"])
    plain = PlainRestic(restic_target, work / f"cache-{i}", data_dir)
    copy = PlainCopy(s3_target("copy", endpoint, served, secret, buckets["copy"]), data_dir)
    out: dict[str, Any] = {}

    def mirrored(
        sides: dict[str, Callable[[], Any]], after: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        names = list(sides) if i % 2 == 0 else list(reversed(sides))
        results = {}
        for name in names:
            seconds, result = timed(sides[name])
            out[f"{name}_s"] = seconds
            results[name] = result
            if after is not None:
                after(name)
        return results

    first = mirrored({
        "backup_studio": studio.backup,
        "backup_restic": lambda: plain.backup(init=True),
        "backup_copy": copy.backup,
    })  # fmt: skip
    out["steps"] = first["backup_studio"]["steps"]
    for side in ("studio", "restic", "copy"):
        out[f"sent_{side}"] = first[f"backup_{side}"]["sent"]
    studio_id, restic_id = first["backup_studio"]["snapshot"], first["backup_restic"]["snapshot"]

    def into(name: str) -> Path:
        return work / f"{name}-{i}"

    def restored(name: str) -> None:  # what arrived, then make room for the next side
        out[f"{name}_files_bytes"] = tree_bytes(into(name))
        shutil.rmtree(into(name))

    mirrored({
        "restore_studio": lambda: studio.restore(studio_id, into("restore_studio")),
        "restore_restic": lambda: plain.restore(restic_id, into("restore_restic")),
        "restore_restic_verify": lambda: plain.restore(
            restic_id, into("restore_restic_verify"), verify=True
        ),
        "restore_copy": lambda: copy.restore(into("restore_copy")),
    }, after=restored)  # fmt: skip

    events = data_dir / "runs" / "000001" / "events.jsonl"
    events_size = events.stat().st_size
    added = change_something(settings, delta, np.random.default_rng(i))
    try:
        second = mirrored({
            "incr_studio": studio.backup,
            "incr_restic": lambda: plain.backup(init=False),
            "incr_copy": copy.backup,
        })  # fmt: skip
    finally:
        undo(added, events, events_size)
    out["incr_sent_studio"] = second["incr_studio"]["sent"]
    out["incr_sent_restic"] = second["incr_restic"]["sent"]
    out["incr_sent_copy"] = second["incr_copy"]["sent"]
    out["incr_steps"] = second["incr_studio"]["steps"]
    for bucket in buckets.values():
        shutil.rmtree(served / bucket, ignore_errors=True)
    shutil.rmtree(work / f"cache-{i}", ignore_errors=True)
    return out


# --- the report -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and "cpu" not in info:
            info["cpu"] = value.strip()
        if key.strip() == "flags" and "flags" not in info:
            have = set(value.split())
            info["flags"] = {f: f in have for f in ("sha_ni", "aes", "avx2", "avx512f")}
    info["restic"] = run([find_program("restic"), "version"]).stdout.split(" compiled")[0]
    rclone = run(
        [find_program("rclone"), "version"], env={**os.environ, "RCLONE_CONFIG": os.devnull}
    )
    info["rclone"] = rclone.stdout.splitlines()[0]
    return info


RATIOS = {  # name: (baseline, studio)
    "backup vs plain restic": ("backup_restic_s", "backup_studio_s"),
    "backup vs rclone copy": ("backup_copy_s", "backup_studio_s"),
    "restore vs plain restic": ("restore_restic_s", "restore_studio_s"),
    "restore vs restic --verify": ("restore_restic_verify_s", "restore_studio_s"),
    "restore vs rclone copy": ("restore_copy_s", "restore_studio_s"),
    "incremental vs plain restic": ("incr_restic_s", "incr_studio_s"),
    "incremental vs rclone copy": ("incr_copy_s", "incr_studio_s"),
}


def paired(repeats: list[dict[str, Any]], top: str, bottom: str) -> float:
    return float(statistics.median(r[top] / r[bottom] for r in repeats))


def summarize(repeats: list[dict[str, Any]], size: int) -> dict[str, Any]:
    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in repeats))

    times = {k: median(k) for k in repeats[0] if k.endswith("_s")}
    steps = {
        k: statistics.median(r["steps"].get(k, 0.0) for r in repeats) for k in repeats[0]["steps"]
    }
    incr_steps = {
        k: statistics.median(r["incr_steps"].get(k, 0.0) for r in repeats)
        for k in repeats[0]["incr_steps"]
    }
    sent = {k: int(median(k)) for k in repeats[0] if k.startswith(("sent_", "incr_sent_"))}
    return {
        "times_s": times,
        "mb_per_s": {k: size / MB / t for k, t in times.items() if not k.startswith("incr_")},
        "sent": sent,
        "steps_s": steps,
        "restored": {k: v for k, v in repeats[-1].items() if k.endswith("_files_bytes")},
        "incr_steps_s": incr_steps,
        # each repeat's sides ran back to back: the median of their ratios is steadier
        # than a ratio of medians on a machine whose speed drifts
        "ratios": {name: paired(repeats, base, ours) for name, (base, ours) in RATIOS.items()},
        "incremental": {
            "time_vs_first": paired(repeats, "incr_studio_s", "backup_studio_s"),
            "sent_vs_first": sent["incr_sent_studio"] / max(1, sent["sent_studio"]),
        },
    }


def report(info: dict[str, Any], size: tuple[int, int], result: dict[str, Any], n: int) -> None:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info.get("flags", {}).items())
    print(f"machine: {info.get('cpu', '?')}, {info['cores']} cores ({flags})")
    load = info["load"]
    busy = max(load) > (info["cores"] or 1) * 0.5
    print(f"load average (1 min) before {load[0]:.2f}, after {load[1]:.2f}" + (
        ": other work shared the CPUs, so the figures are noisy" if busy else ""))  # fmt: skip
    print(f"engines: {info['restic']}; {info['rclone']}")
    print(f"studio: {size[0]} files, {size[1] / MB:.0f} MB; medians of {n} repeats\n")
    times, rates = result["times_s"], result["mb_per_s"]
    print(f"{'side':34} {'seconds':>8} {'MB/s':>8}")
    for key, seconds in times.items():
        rate = f"{rates[key]:8.1f}" if key in rates else " " * 8
        print(f"{key.removesuffix('_s'):34} {seconds:8.2f} {rate}")
    print("\nstudio backup steps (s): " + ", ".join(
        f"{k} {v:.2f}" for k, v in result["steps_s"].items()))  # fmt: skip
    print("incremental steps (s): " + ", ".join(
        f"{k} {v:.2f}" for k, v in result["incr_steps_s"].items()))  # fmt: skip
    sent = result["sent"]
    first = [f"{k[5:]} {v / MB:.1f} MB" for k, v in sent.items() if k.startswith("sent_")]
    again = [f"{k[10:]} {v / MB:.2f} MB" for k, v in sent.items() if k.startswith("incr_")]
    print("\nbytes sent, first backup: " + ", ".join(first))
    print("bytes sent, incremental: " + ", ".join(again))
    arrived = [f"{k[8:-12]} {v[1] / MB:.1f} MB" for k, v in result["restored"].items()]
    print("restored (last repeat, files on disk): " + ", ".join(arrived))
    incr = result["incremental"]
    print(f"incremental studio backup: {incr['time_vs_first']:.2f}x the first one's time, "
          f"{incr['sent_vs_first'] * 100:.2f}% of its bytes")  # fmt: skip
    print("\nratios, baseline time / studio time, median over repeats (above 1: the studio "
          "is faster):")  # fmt: skip
    for name, ratio in result["ratios"].items():
        mark = ""
        if name == "backup vs plain restic" or name == "restore vs plain restic":
            mark = f"  ({'meets' if ratio >= TARGET else 'misses'} the {TARGET}x target)"
        print(f"  {name:30} {ratio:6.3f}x{mark}")
    print(
        "\nrclone copy sends plain files: no encryption, no content-defined chunking, no "
        "SHA-256 of every chunk, no dedup and no compression (restic does all of that, "
        "so its first backup is slower but its second one sends only new chunks)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="studio size in MB")
    parser.add_argument("--quick", action="store_true", help="a 100 MB smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--delta-mb", type=float, default=4.0, help="the incremental checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temp folder)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    total = (100 if args.quick else args.mb) * MB
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    if free < 6 * total:  # the studio, three buckets, one restore at a time, slack
        print(f"not enough free disk in {base}: {free / MB:.0f} MB, need {6 * total / MB:.0f}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="backup-bench-", dir=base))
    server = None
    try:
        info = machine()
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        settings = build_studio(work / "studio", total, args.seed)
        size = tree_bytes_of(settings.data_dir)
        print(f"built the studio in {time.perf_counter() - started:.1f} s (not timed)")
        from lastedocation.db import make_engine, session_factory

        sessions = session_factory(make_engine(settings))
        server, endpoint, served, secret = start_s3(work)
        results = []
        for i in range(args.repeats):
            results.append(repeat(i, settings, sessions, (endpoint, served, secret), work,
                                  int(args.delta_mb * MB)))  # fmt: skip
            print(f"repeat {i + 1}/{args.repeats}: studio backup "
                  f"{results[-1]['backup_studio_s']:.2f} s, plain restic "
                  f"{results[-1]['backup_restic_s']:.2f} s", flush=True)  # fmt: skip
        info["load"] = (load_before, os.getloadavg()[0])
        summary = summarize(results, size[1])
        report(info, size, summary, args.repeats)
        if args.json:
            payload = {"machine": info, "files": size[0], "bytes": size[1], **summary,
                       "repeats": results}  # fmt: skip
            args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def tree_bytes_of(data_dir: Path) -> tuple[int, int]:
    """Files and bytes of what the studio backs up (its staging adds a manifest)."""
    files = size = 0
    for name in studio_files(data_dir):
        path = data_dir / name
        if path.is_dir():
            f, s = tree_bytes(path)
            files, size = files + f, size + s
        elif path.is_file():
            files, size = files + 1, size + path.stat().st_size
    return files, size


if __name__ == "__main__":
    raise SystemExit(main())
