"""SIGKILL a backup part-way, at five seeded moments, some while packs are being
uploaded, to the S3 server on loopback and to a folder: the target never holds a
snapshot that looks whole, restic's repository stays sound, no restic or rclone is
left running, the job the killed process left `running` is marked failed by the next
start, the next backup completes, and a verify that reads back every byte passes.

The backup runs as `lastedocation backup now` runs it: one job in a process of its own
(backup_child.py), killed with its whole process group."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lastedocation.backup.entries import BackupJob
from lastedocation.backup.runner import INTERRUPTED
from lastedocation.backup.targets import BackupTarget
from tests.backup.conftest import S3Server, Studio, make_studio, random_bytes

SEED = 20240612
MB = 2**20
NEW_DATA = 64 * MB  # what each killed backup has to send: several restic packs
CHILD = Path(__file__).with_name("backup_child.py")
# (target, the moment): "upload" waits until the target has received a few packs of
# this backup; a step's name waits until the child starts that step. Each then waits a
# seeded moment more. (Moments are tied to what the backup does, not to a clock: a
# backup's pace varies too much between machines and runs for seeded delays alone.)
KILLS = [
    ("s3", "upload"),
    ("nas", "staging the studio"),
    ("s3", "opening the repository"),
    ("nas", "upload"),
    ("s3", "upload"),
]


@dataclass
class Child:
    proc: subprocess.Popen[str]
    job_id: int
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    engine_pids: set[int] = field(default_factory=set)
    threads: list[threading.Thread] = field(default_factory=list)

    def ended(self, timeout_s: float) -> None:
        """Wait for the process, then for what its threads saw."""
        self.proc.wait(timeout=timeout_s)
        for thread in self.threads:
            thread.join(timeout=30)

    def last(self, prefix: str) -> str | None:
        found = [line for _, line in list(self.lines) if line.startswith(prefix)]
        return found[-1] if found else None

    def when(self, line: str) -> float:
        return next(moment for moment, text in self.lines if text == line) - self.started


@dataclass
class Chaos:
    studio: Studio
    repositories: dict[str, Path]  # where each target's packs are, as files

    whole: set[str] = field(default_factory=set)
    sizes: dict[Path, int] = field(default_factory=dict)

    def packs(self, name: str, *, settled: bool = True) -> set[str]:
        """The whole packs on the target. A pack is named by its content's SHA-256: a
        file being written, or cut short by the kill, is not one. While a backup runs
        (`settled` False) a file is hashed only once its size has stopped changing."""
        found = set()
        for path in (self.repositories[name] / "data").rglob("*"):
            if path.name not in self.whole:
                try:
                    size = path.stat().st_size
                    if not settled and self.sizes.get(path) != size:
                        self.sizes[path] = size
                        continue
                    if not path.is_file() or _sha256(path) != path.name:
                        continue
                except OSError:
                    continue  # removed meanwhile: an upload that was cut
                self.whole.add(path.name)
            found.add(path.name)
        return found

    def start(self, name: str) -> Child:
        targets = [
            t.model_dump(mode="json", exclude_none=True) for t in self.studio.backups.targets
        ]
        env = {
            **os.environ,
            "LASTEDOCATION_DATA_DIR": str(self.studio.settings.data_dir),
            "LASTEDOCATION_BACKUP_TARGETS": json.dumps(targets),
        }
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("job "), first + proc.stdout.read()
        child = Child(proc=proc, job_id=int(first.split()[1]), started=time.monotonic())

        def read() -> None:
            assert proc.stdout is not None
            with proc.stdout:
                for line in proc.stdout:
                    child.lines.append((time.monotonic(), line.strip()))

        data_dir = self.studio.settings.data_dir
        child.threads = [
            threading.Thread(target=read, daemon=True),
            threading.Thread(target=_watch, args=(child, data_dir), daemon=True),
        ]
        for thread in child.threads:
            thread.start()
        return child


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Chaos]:
    root = tmp_path_factory.mktemp("chaos")
    targets = [
        s3_server.target(name="s3", bucket="chaos"),
        BackupTarget(name="nas", kind="folder", path=str(root / "nas")),
    ]
    with make_studio(root / "studio", *targets) as studio:
        studio.add_file("datasets/weights/base.bin", random_bytes(SEED, 16 * MB))
        yield Chaos(
            studio, {"s3": s3_server.served / "chaos" / "lastedocation", "nas": root / "nas"}
        )


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _engine_processes(data_dir: Path) -> set[int]:
    """restic and its rclone, at work in the backup's staging folder."""
    stage = str(data_dir / "backup" / "stage")
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(stage):
                    found.add(int(entry.name))
            except OSError:
                continue  # gone, or a zombie (it has no cwd)
    return found


def _state(pid: int) -> str | None:
    """A process's state letter (Z: dead, not yet reaped); None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _watch(child: Child, data_dir: Path) -> None:
    """Note every restic and rclone the child starts, until it ends."""
    while child.proc.poll() is None:
        child.engine_pids |= _engine_processes(data_dir)
        time.sleep(0.02)


def _job(studio: Studio, job_id: int) -> BackupJob:
    with studio.app.state.sessions() as session:
        job = session.get(BackupJob, job_id)
        assert job is not None
        return job


def _whole_backup(chaos: Chaos, name: str) -> tuple[float, float, float]:
    """One whole backup in a child, the first to its target: (its duration, when it
    began and ended sending), printed to show where the kills fall."""
    child = chaos.start(name)
    child.ended(timeout_s=300)
    duration = time.monotonic() - child.started
    assert child.last("ended") == "ended done", child.lines
    return duration, child.when("step sending"), child.when("step applying retention")


def _kill_moment(chaos: Chaos, child: Child, name: str, how: str, rng: random.Random) -> None:
    """Wait for this kill's moment."""
    deadline = time.monotonic() + 120
    if how != "upload":
        while child.last("step") != f"step {how}":
            assert child.proc.poll() is None and time.monotonic() < deadline, child.lines
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))
        return
    before, enough, later = chaos.packs(name), rng.randint(1, 3), rng.uniform(0.0, 0.1)
    while len(chaos.packs(name, settled=False) - before) < enough:
        assert child.proc.poll() is None, f"the backup ended before it sent a pack: {child.lines}"
        assert time.monotonic() < deadline, child.lines
        time.sleep(0.01)
    time.sleep(later)


@pytest.mark.slow
def test_a_backup_killed_at_five_seeded_moments_leaves_no_snapshot_and_the_next_completes(
    chaos: Chaos,
) -> None:
    studio, rng = chaos.studio, random.Random(SEED)
    timing = {name: _whole_backup(chaos, name) for name in ("s3", "nas")}
    print("one whole backup (duration, sending from, to):", timing)

    mid_upload = []
    for kill, (name, how) in enumerate(KILLS):
        engine = studio.engine(name)
        snapshots = [snap.id for snap in engine.snapshots()]
        packs = chaos.packs(name)
        studio.add_file(
            f"datasets/weights/round-{kill}.bin", random_bytes(SEED + 1 + kill, NEW_DATA)
        )

        child = chaos.start(name)
        _kill_moment(chaos, child, name, how, rng)
        os.killpg(child.proc.pid, signal.SIGKILL)
        child.ended(timeout_s=30)
        at = time.monotonic() - child.started
        step, progress = child.last("step"), child.last("progress")
        sent = len(chaos.packs(name) - packs)
        print(f"kill {kill}: {name} {how} at {at:.2f} s, {step}, {progress}, {sent} new packs")
        if step == "step sending" and sent:
            mid_upload.append(name)

        assert child.last("ended") is None, f"kill {kill} came after the job ended"
        # restic and rclone die with the process that started them: none is left to
        # write a snapshot later. (Then init reaps them: until it does, restic takes the
        # dead one's lock, which names its pid, for a live one's.)
        for grace, gone in ((15, {None, "Z"}), (60, {None})):
            deadline = time.monotonic() + grace
            while left := {pid for pid in child.engine_pids if _state(pid) not in gone}:
                assert time.monotonic() < deadline, f"kill {kill}: {left} still there"
                time.sleep(0.05)
        assert child.engine_pids or how != "upload", "a kill mid-upload saw no restic"

        # the target: no new snapshot, whole or partial; restic's own view is sound
        assert [snap.id for snap in engine.snapshots()] == snapshots, f"kill {kill}"
        engine.unlock()
        assert engine.check(read_data=False, on_line=lambda _line: None) == [], f"kill {kill}"

        # the studio: the job the dead process left running ends failed on the next start
        assert _job(studio, child.job_id).state == "running"
        studio.backups.recover()
        job = _job(studio, child.job_id)
        assert (job.state, job.message) == ("failed", INTERRUPTED)

        # and the next backup finishes the job
        done = studio.run("backup", name)
        assert done.state == "done", done.message
        assert len(engine.snapshots()) == len(snapshots) + 1

    assert "s3" in mid_upload and len(mid_upload) >= 3, mid_upload
    for name in ("s3", "nas"):
        verify = studio.run("verify", name, read_data=True)
        assert (verify.state, verify.problems) == ("done", []), verify.message
