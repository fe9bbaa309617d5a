"""What makes a backup trustworthy, with real restic, rclone and an S3 server on
loopback: the target never sees plaintext, a second backup sends only what changed, a
flipped byte on the target is named by verify and refused by restore, and retention
prunes nothing a kept snapshot needs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lastedocation.backup import restore
from lastedocation.backup.remote import BackupFailed
from lastedocation.backup.restore import RestoreFailed
from lastedocation.backup.targets import BackupTarget
from tests.backup.conftest import S3Server, Studio, make_studio, random_bytes, secret_file

PERSIAN_MARKER = "نشانهٔ آزمایشی پشتیبان‌گیری: گربهٔ سفید روی بام کاهگلی نشست"
ASCII_MARKER = "LASTEDOCATION-PLAINTEXT-MARKER-5e1c0a"
PASSPHRASE = "a-passphrase-only-the-studio-knows-7d2b"
MARKED = "datasets/marked/records.jsonl"
WEIGHTS = "datasets/weights/shard.bin"  # large and incompressible, like a checkpoint
MB = 2**20


def _row(text: str, row: int) -> str:
    return json.dumps({"row": row, "text": text}, ensure_ascii=False) + "\n"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """One studio for the module: the sample dataset, a dataset with both markers and
    20 MB of weights, so the database is a small part of a first backup."""
    with make_studio(tmp_path_factory.mktemp("integrity") / "studio") as made:
        rows = _row(PERSIAN_MARKER, 1) + _row(ASCII_MARKER, 2)
        made.add_file(MARKED, rows.encode("utf-8"))
        made.add_file(WEIGHTS, random_bytes(1, 20 * MB))
        yield made


def _sample_text(studio: Studio) -> str:
    """A sentence of the sample dataset the studio imported on its first start."""
    for records in studio.settings.datasets_dir.glob("*/records.jsonl"):
        first = json.loads(records.read_text(encoding="utf-8").splitlines()[0])
        for message in first.get("messages", []):
            if len(message["content"]) > 30:
                return str(message["content"][:60])
    raise AssertionError("the sample dataset was not imported")


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def _restored(studio: Studio, target: str, snapshot_id: str, into: Path) -> Path:
    restore.restore(
        engine=studio.engine(target), snapshot_id=snapshot_id, data_dir=into, database_url=None
    )
    return into


# --- encryption -------------------------------------------------------------------------


def test_an_encrypted_target_holds_no_plaintext_and_not_the_passphrase(
    studio: Studio, s3_server: S3Server, tmp_path: Path
) -> None:
    passphrase = secret_file(tmp_path, "passphrase", PASSPHRASE)
    sealed = studio.with_targets(
        s3_server.target(name="sealed-s3", bucket="sealed", passphrase_file=passphrase),
        BackupTarget(
            name="sealed-nas", kind="folder", path=str(tmp_path / "nas"), passphrase_file=passphrase
        ),
    )
    jobs = {name: sealed.run("backup", name) for name in ("sealed-s3", "sealed-nas")}
    for job in jobs.values():
        assert job.state == "done", job.message

    markers = {
        "the Persian marker": PERSIAN_MARKER.encode("utf-8"),
        "the ASCII marker": ASCII_MARKER.encode("ascii"),
        "a sentence of the sample dataset": _sample_text(studio).encode("utf-8"),
        "the passphrase": PASSPHRASE.encode("utf-8"),
    }
    stored = _files(s3_server.served / "sealed") + _files(tmp_path / "nas")
    assert len(stored) > 10  # config, keys, index, snapshots, packs of both
    for path in stored:
        data = path.read_bytes()
        for what, marker in markers.items():
            assert marker not in data, f"{what} is in plaintext on the target: {path}"

    # the markers were in what was sent: the snapshot, decrypted with the passphrase, has them
    again = _restored(sealed, "sealed-s3", jobs["sealed-s3"].snapshot_id or "", tmp_path / "again")
    assert (again / MARKED).read_text(encoding="utf-8").count("\n") >= 2
    assert PERSIAN_MARKER in (again / MARKED).read_text(encoding="utf-8")


def test_a_target_without_a_passphrase_restores(studio: Studio, tmp_path: Path) -> None:
    # restic encrypts even then, with a published key: readable by whoever reads the
    # target, so nothing here claims the target cannot read it
    plain = studio.with_targets(
        BackupTarget(name="plain", kind="folder", path=str(tmp_path / "nas"))
    )
    job = plain.run("backup", "plain")
    assert job.state == "done", job.message
    again = _restored(plain, "plain", job.snapshot_id or "", tmp_path / "again")
    assert ASCII_MARKER in (again / MARKED).read_text(encoding="utf-8")
    assert (again / WEIGHTS).read_bytes() == (studio.settings.data_dir / WEIGHTS).read_bytes()
    assert (again / "studio.db").is_file()


# --- incremental ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["s3", "folder"])
def test_a_second_backup_after_one_new_row_sends_under_5_percent(
    studio: Studio, s3_server: S3Server, tmp_path: Path, kind: str
) -> None:
    name = f"nightly-{kind}"
    target = (
        s3_server.target(name=name, bucket=name)
        if kind == "s3"
        else BackupTarget(name=name, kind="folder", path=str(tmp_path / "nas"))
    )
    nightly = studio.with_targets(target)
    first = nightly.run("backup", name)
    assert first.state == "done", first.message
    with (studio.settings.data_dir / MARKED).open("a", encoding="utf-8") as records:
        records.write(_row(f"ردیف تازه برای {kind}", 3))
    second = nightly.run("backup", name)
    assert second.state == "done", second.message

    numbers = f"{kind}: first backup sent {first.bytes_sent} bytes, the second {second.bytes_sent}"
    print(numbers)
    assert first.bytes_sent > 20 * MB, numbers
    assert 0 < second.bytes_sent < 0.05 * first.bytes_sent, numbers
    assert second.snapshot_id != first.snapshot_id


# --- corruption -------------------------------------------------------------------------


def _flip_one_byte(path: Path) -> None:
    path.chmod(0o644)  # restic writes its objects read-only
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_a_flipped_byte_is_named_by_verify_and_restore_refuses_the_snapshot(
    studio: Studio, s3_server: S3Server, tmp_path: Path, kind: str
) -> None:
    name = f"flipped-{kind}"
    if kind == "s3":
        target = s3_server.target(name=name, bucket=name)
        repository = s3_server.served / name / "lastedocation"
    else:
        target = BackupTarget(name=name, kind="folder", path=str(tmp_path / "nas"))
        repository = tmp_path / "nas"
    flipped = studio.with_targets(target)
    job = flipped.run("backup", name)
    assert job.state == "done", job.message

    largest = max(_files(repository / "data"), key=lambda path: path.stat().st_size)
    _flip_one_byte(largest)

    verify = flipped.run("verify", name, read_data=True)
    assert verify.state == "failed"
    assert verify.message and "problem" in verify.message
    object_name = f"data/{largest.name[:2]}/{largest.name}"
    naming = [problem for problem in verify.problems if object_name in problem]
    assert naming, verify.problems
    assert any(WEIGHTS in problem for problem in naming), naming

    new_studio = tmp_path / "new-studio"
    with pytest.raises((BackupFailed, RestoreFailed)) as refused:
        _restored(flipped, name, job.snapshot_id or "", new_studio)
    assert target.label in refused.value.detail and name in refused.value.detail
    assert _files(new_studio) == [], "a refused restore left files behind"
    assert not any((new_studio / n).exists() for n in ("datasets", "runs", "studio.db"))
    assert list((new_studio / "backup").glob("restore-*")) == []


# --- retention --------------------------------------------------------------------------


def test_retention_keeps_the_last_two_and_prunes_nothing_they_need(tmp_path: Path) -> None:
    target = BackupTarget(
        name="kept",
        kind="folder",
        path=str(tmp_path / "nas"),
        keep_last=2,
        keep_daily=0,
        keep_weekly=0,
    )
    with make_studio(tmp_path / "studio", target) as studio:
        shared = studio.add_file("datasets/shared/records.bin", random_bytes(10, 2 * MB))
        # each backup changes something: data only the pruned snapshots hold goes,
        # data the kept ones share with them must stay
        changes = [
            lambda: None,
            lambda: studio.add_file("datasets/a/records.bin", random_bytes(11, MB)),
            lambda: (
                (studio.settings.data_dir / "datasets/a/records.bin").unlink()
                or studio.add_file("datasets/b/records.bin", random_bytes(12, MB))
            ),
            lambda: studio.add_file("datasets/c/records.bin", random_bytes(13, MB)),
        ]
        made = []
        for change in changes:
            change()
            job = studio.run("backup", "kept")
            assert job.state == "done", job.message
            made.append(job.snapshot_id or "")
        # a job names its snapshot by restic's short id; restic's lists by the full one
        removed = job.options["removed"]
        assert len(removed) == 1 and removed[0].startswith(made[1]), (removed, made)

        kept = studio.engine("kept").snapshots()
        assert [snap.short_id for snap in kept] == made[2:]
        verify = studio.run("verify", "kept", read_data=True)
        assert verify.state == "done", verify.problems
        assert verify.problems == []

        oldest = _restored(studio, "kept", made[2], tmp_path / "again")
        assert (oldest / "datasets/shared/records.bin").read_bytes() == shared.read_bytes()
        assert (oldest / "datasets/b/records.bin").read_bytes() == random_bytes(12, MB)
        assert not (oldest / "datasets/a/records.bin").exists()
        assert not (oldest / "datasets/c").exists()
        assert (oldest / "studio.db").is_file()
