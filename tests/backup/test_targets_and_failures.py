"""Each kind of target, for real: an SFTP round trip through `rclone serve sftp`; and
what an operator sees when a target cannot be used: Google Drive or S3 out of reach,
a folder that cannot be written, a secret file others may read, a wrong passphrase
and settings that contradict themselves. Every failure is quick and names the target
and the reason; none shows a secret."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from lastedocation.backup import restore
from lastedocation.backup.engine import TargetUnreachable
from lastedocation.backup.remote import find_program
from lastedocation.backup.targets import BackupTarget, TargetInvalid
from lastedocation.settings import Settings
from tests.backup.conftest import Studio, free_port, make_studio, secret_file

SLOW = 60.0  # loose: a failure must come in seconds, never hang; no tight timings here


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with make_studio(tmp_path_factory.mktemp("targets") / "studio") as made:
        yield made


def _quick_failure(studio: Studio, target: BackupTarget) -> str:
    """Back up to `target`: the job must fail within SLOW seconds; its message."""
    started = time.monotonic()
    job = studio.with_targets(target).run("backup", target.name)
    elapsed = time.monotonic() - started
    assert job.state == "failed", job.message
    assert elapsed < SLOW, f"the failure took {elapsed:.0f} s"
    assert job.message
    return job.message


# --- Google Drive -----------------------------------------------------------------------


def _private_key_pem(folder: Path) -> str:
    """A real RSA key, as a service account's JSON holds one."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor openssl is here to make a key")
        key = folder / "key.pem"
        subprocess.run(
            [
                openssl,
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                str(key),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return key.read_text(encoding="ascii")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


@pytest.fixture
def drive_target(tmp_path: Path) -> BackupTarget:
    key = _private_key_pem(tmp_path)
    account = {
        "type": "service_account",
        "project_id": "lastedocation-tests",
        "private_key_id": "5d1f0c0e9a7b4c3d2e1f0a9b8c7d6e5f4a3b2c1d",
        "private_key": key,
        "client_email": "backups@lastedocation-tests.iam.gserviceaccount.com",
        "client_id": "104729104729104729104",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = secret_file(tmp_path, "service-account.json", json.dumps(account))
    return BackupTarget(
        name="gdrive", kind="drive", path="studio-backups", service_account_file=path, timeout_s=10
    )


def _no_key_in(message: str, target: BackupTarget) -> None:
    assert target.service_account_file is not None
    account = json.loads(target.service_account_file.read_text(encoding="utf-8"))
    body = account["private_key"].splitlines()[1]
    assert "PRIVATE KEY" not in message and body not in message


def _offline_reason(message: str) -> bool:
    words = (
        "no such host",
        "lookup",
        "dial tcp",
        "connection",
        "network",
        "timeout",
        "no answer",
        "did not answer",
        "oauth2",
    )
    return any(word in message.lower() for word in words)


def test_google_drive_offline_fails_fast_naming_google_drive_and_the_reason(
    studio: Studio, drive_target: BackupTarget
) -> None:
    started = time.monotonic()
    with pytest.raises(TargetUnreachable) as unreachable:
        studio.backups.engine(drive_target).probe()
    assert time.monotonic() - started < SLOW
    message = unreachable.value.detail
    assert "Google Drive" in message and "'gdrive'" in message, message
    assert _offline_reason(message), message
    assert unreachable.value.extra.get("target") == "gdrive"
    _no_key_in(message, drive_target)

    message = _quick_failure(studio, drive_target)
    assert "Google Drive" in message and "'gdrive'" in message and _offline_reason(message)
    _no_key_in(message, drive_target)


# --- S3 and folder out of reach ---------------------------------------------------------


def test_s3_on_a_closed_port_fails_fast_naming_s3_and_the_target(
    studio: Studio, tmp_path: Path
) -> None:
    target = BackupTarget(
        name="closed-s3",
        kind="s3",
        provider="Other",
        endpoint=f"http://127.0.0.1:{free_port()}",
        path="studio/lastedocation",
        access_key_id="AKIACLOSED",
        secret_access_key_file=secret_file(tmp_path, "s3.secret", "closed-port-secret"),
        timeout_s=5,
    )
    started = time.monotonic()
    with pytest.raises(TargetUnreachable) as unreachable:
        studio.backups.engine(target).probe()
    assert time.monotonic() - started < SLOW
    assert "S3 (target 'closed-s3')" in unreachable.value.detail
    assert "connection refused" in unreachable.value.detail.lower()

    message = _quick_failure(studio, target)
    assert "S3 (target 'closed-s3')" in message and "closed-port-secret" not in message


def test_a_folder_that_cannot_be_written_is_a_clear_error(studio: Studio, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    paths = [blocker / "backups"]
    if os.geteuid() != 0:  # root may write to any folder, whatever its mode
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o500)
        paths.append(read_only / "backups")
    for path in paths:
        message = _quick_failure(studio, BackupTarget(name="nas", kind="folder", path=str(path)))
        assert "folder (target 'nas')" in message and str(path) in message, message
        assert "cannot be written" in message, message


# --- secrets ----------------------------------------------------------------------------


def test_a_secret_file_others_may_read_is_refused_with_chmod_600(
    studio: Studio, tmp_path: Path
) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("everyone-can-read-this\n")
    passphrase.chmod(0o644)
    target = BackupTarget(
        name="loose", kind="folder", path=str(tmp_path / "nas"), passphrase_file=passphrase
    )
    with pytest.raises(TargetInvalid) as refused:
        studio.backups.engine(target).env()
    assert refused.value.status_code < 500
    assert "passphrase_file" in refused.value.detail and "chmod 600" in refused.value.detail

    message = _quick_failure(studio, target)
    assert "chmod 600" in message and "'loose'" in message
    assert "everyone-can-read-this" not in message
    assert not (tmp_path / "nas").exists(), "nothing may be written with a refused secret"


def test_a_wrong_passphrase_is_a_clear_error_not_a_hang(studio: Studio, tmp_path: Path) -> None:
    nas = str(tmp_path / "nas")
    right = secret_file(tmp_path, "right", "the-right-passphrase")
    wrong = secret_file(tmp_path, "wrong", "not-the-passphrase")
    sealed = BackupTarget(name="sealed", kind="folder", path=nas, passphrase_file=right)
    job = studio.with_targets(sealed).run("backup", "sealed")
    assert job.state == "done", job.message

    message = _quick_failure(
        studio, BackupTarget(name="sealed", kind="folder", path=nas, passphrase_file=wrong)
    )
    assert "folder (target 'sealed')" in message and "wrong password" in message, message
    assert "the-right-passphrase" not in message and "not-the-passphrase" not in message
    # and the repository is the one it was: the right passphrase still opens it
    assert len(studio.with_targets(sealed).engine("sealed").snapshots()) == 1


# --- SFTP, for real ---------------------------------------------------------------------


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`rclone serve sftp` on loopback with a user and password; (port, served folder)."""
    served = tmp_path / "sftp"
    served.mkdir()
    port = free_port()
    log = (tmp_path / "sftp.log").open("w")
    env = {**os.environ, "RCLONE_CONFIG": os.devnull, "RCLONE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [
            find_program("rclone"),
            "serve",
            "sftp",
            "--addr",
            f"127.0.0.1:{port}",
            "--user",
            "backup",
            "--pass",
            "sftp-password-1",
            str(served),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "sftp.log").read_text()
                time.sleep(0.1)
        yield port, served
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_sftp_backup_list_and_restore_round_trip(
    studio: Studio, sftp_server: tuple[int, Path], tmp_path: Path
) -> None:
    port, served = sftp_server
    target = BackupTarget(
        name="sftp",
        kind="sftp",
        host="127.0.0.1",
        port=port,
        user="backup",
        password_file=secret_file(tmp_path, "sftp.pass", "sftp-password-1"),
        path="backups/studio",
        timeout_s=10,
    )
    over_sftp = studio.with_targets(target)
    job = over_sftp.run("backup", "sftp")
    assert job.state == "done", job.message
    assert (served / "backups/studio/config").is_file()  # the repository is on the server

    snapshots = over_sftp.engine("sftp").snapshots()
    assert [snap.short_id for snap in snapshots] == [job.snapshot_id]

    again = tmp_path / "again"
    restore.restore(
        engine=over_sftp.engine("sftp"),
        snapshot_id=snapshots[0].id,
        data_dir=again,
        database_url=None,
    )
    for records in studio.settings.datasets_dir.glob("*/records.jsonl"):
        copy = again / records.relative_to(studio.settings.data_dir)
        assert copy.read_bytes() == records.read_bytes()
    assert (again / "studio.db").is_file()


# --- settings ---------------------------------------------------------------------------


def test_settings_refuse_targets_that_contradict_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "studio"
    nas = {"name": "nas", "kind": "folder", "path": str(tmp_path / "nas")}

    with pytest.raises(ValidationError) as twice:
        Settings(data_dir=data_dir, backup_targets=[nas, {**nas, "path": str(tmp_path / "b")}])
    assert "backup_targets" in str(twice.value) and "same name" in str(twice.value)

    inside = {**nas, "path": str(data_dir / "backups")}
    with pytest.raises(ValidationError) as within:
        Settings(data_dir=data_dir, backup_targets=[inside])
    assert "'nas'" in str(within.value) and "inside the data folder" in str(within.value)

    keyless = {
        "name": "cloud",
        "kind": "s3",
        "endpoint": "http://127.0.0.1:9",
        "access_key_id": "A",
    }
    monkeypatch.setenv("LASTEDOCATION_BACKUP_TARGETS", json.dumps([keyless]))
    with pytest.raises(ValidationError) as no_secret:
        Settings(data_dir=data_dir)
    assert "'cloud'" in str(no_secret.value)
    assert "secret_access_key_file: needed for a s3 target" in str(no_secret.value)

    with pytest.raises(ValidationError) as secret_inline:
        BackupTarget.model_validate({**keyless, "secret_access_key": "inline-secret"})
    assert "secret_access_key" in str(secret_inline.value)
