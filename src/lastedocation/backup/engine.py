"""The backup engine: restic keeps the snapshots, rclone carries them to the target.

restic (the Debian package) gives what a trustworthy backup needs without code of our
own: content-defined chunks deduplicated by their SHA-256 (a second backup sends only
what changed), encryption and authentication of everything it writes, snapshots that
appear only when complete (the snapshot file is written last), `check --read-data`
to read back and verify every object, and `forget --prune` that never removes data a
kept snapshot needs. rclone is its transport for S3, SFTP and Google Drive (restic's
`rclone:` backend starts `rclone serve restic --stdio`); a folder target is restic's
own local backend. The remote's settings reach rclone only in the child process's
environment (`RCLONE_CONFIG_LASTEDOCATION_*`), never on a command line or on disk.

Every call has a deadline: a target that does not answer fails within
`target.timeout_s` with a message that names the target and what failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lastedocation.backup import output
from lastedocation.backup.remote import (
    REMOTE,
    BackupFailed,
    find_program,
    rclone_env,
    rclone_flags,
)
from lastedocation.backup.targets import BackupTarget, read_secret
from lastedocation.errors import StudioError

# restic always encrypts; without a passphrase the key is this published one, so the
# snapshots are as readable as plain files to whoever can read the target
PUBLIC_KEY = "lastedocation-backup-without-a-passphrase"
_STDERR_KEPT = 200


class TargetUnreachable(BackupFailed):
    code = "target_unreachable"


class Cancelled(StudioError):
    status_code = 409
    code = "cancelled"


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str
    tags: list[str]
    hostname: str

    @classmethod
    def from_restic(cls, raw: dict[str, Any]) -> Snapshot:
        return cls(
            id=raw["id"],
            short_id=raw.get("short_id", raw["id"][:8]),
            time=raw["time"],
            tags=list(raw.get("tags") or []),
            hostname=raw.get("hostname", ""),
        )


class Engine:
    """restic on one target; `cache_dir` holds restic's local index cache."""

    def __init__(self, target: BackupTarget, *, cache_dir: Path) -> None:
        self.target = target
        self.cache_dir = cache_dir
        self.restic = find_program("restic")
        self._proc: subprocess.Popen[str] | None = None
        self._cancelled = threading.Event()

    # --- where and how --------------------------------------------------------------

    @property
    def repository(self) -> str:
        if self.target.kind == "folder":
            return self.target.path
        return f"rclone:{REMOTE}:{self.target.path}"

    def env(self) -> dict[str, str]:
        password = (
            read_secret(self.target, "passphrase_file") if self.target.encrypted else PUBLIC_KEY
        )
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RESTIC_", "RCLONE_", "AWS_", "B2_", "GOOGLE_"))
        }
        env.update(rclone_env(self.target))
        env["RESTIC_PASSWORD"] = password
        env["RESTIC_CACHE_DIR"] = str(self.cache_dir)
        env["RESTIC_PROGRESS_FPS"] = "2"
        return env

    def _options(self) -> list[str]:
        if self.target.kind == "folder":
            return []
        rclone = find_program("rclone")
        args = " ".join(["serve", "restic", "--stdio", *rclone_flags(self.target)])
        return ["-o", f"rclone.program={rclone}", "-o", f"rclone.args={args}"]

    # --- running restic -------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the running command (its whole process group: rclone too)."""
        self._cancelled.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)

    def _run(
        self,
        args: list[str],
        *,
        cwd: Path | None = None,
        on_line: Callable[[str], None] | None = None,
        deadline_s: float | None = None,
        ok_codes: tuple[int, ...] = (0,),
        what: str,
    ) -> tuple[int, list[str], list[str]]:
        """Run restic; (exit code, stdout lines, last stderr lines). Raises BackupFailed
        with `what` and restic's reason unless the exit code is in `ok_codes`."""
        if self._cancelled.is_set():
            raise Cancelled(f"{what}: cancelled")
        command = [
            *_low_priority(),
            *_dies_with_us(),
            self.restic,
            "-r",
            self.repository,
            *self._options(),
            *args,
        ]
        out: list[str] = []
        err: deque[str] = deque(maxlen=_STDERR_KEPT)
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # SIGTERM reaches rclone too; not the server's group
        )
        self._proc = proc
        reader = threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)
        reader.start()
        timer = None
        if deadline_s is not None:
            timer = threading.Timer(deadline_s, _kill_group, args=(proc,))
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                if on_line is not None:
                    on_line(line)
                elif len(out) < 100_000:
                    out.append(line)
            code = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
            reader.join(timeout=5)
            self._proc = None
            # closed here, not when the Popen is collected (a ResourceWarning then)
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.stderr is not None and not reader.is_alive():
                proc.stderr.close()
        if self._cancelled.is_set():
            raise Cancelled(f"{what}: cancelled")
        if code not in ok_codes:
            late = deadline_s is not None and code < 0
            reason = "it did not answer in time" if late else output.reason(list(err))
            raise self._failure(what, reason)
        return code, out, list(err)

    def _failure(self, what: str, reason: str) -> BackupFailed:
        t = self.target
        kind = TargetUnreachable if output.unreachable(reason) else BackupFailed
        return kind(f"{t.label} (target {t.name!r}): {what} failed: {reason}", target=t.name)

    def _json(self, args: list[str], *, what: str) -> Any:
        _, out, _ = self._run([*args, "--json"], what=what, deadline_s=self._quick_deadline())
        text = "\n".join(out).strip()
        try:
            return json.loads(text) if text else None
        except ValueError:
            unreadable = f"restic answered something unreadable: {text[:200]}"
            raise self._failure(what, unreadable) from None

    def _quick_deadline(self) -> float:
        # restic derives its key (scrypt, about a second) before it reaches the target
        return self.target.timeout_s * 3 + 10

    # --- what the studio asks -------------------------------------------------------

    def probe(self) -> None:
        """Fail fast, naming the target and the reason, if it cannot be reached at all."""
        if self.target.kind == "folder":
            parent = Path(self.target.path)
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if not (parent.is_dir() and os.access(parent, os.W_OK)):  # a file: never
                raise TargetUnreachable(
                    f"folder (target {self.target.name!r}): {self.target.path} cannot be "
                    "written (is it mounted, and may this account write to it?)",
                    target=self.target.name,
                )
            return
        rclone = find_program("rclone")
        command = [
            rclone,
            "lsf",
            "--max-depth",
            "1",
            *rclone_flags(self.target),
            "--retries",
            "1",
            f"{REMOTE}:{self.target.path.split('/')[0]}",
        ]
        try:
            done = subprocess.run(
                command,
                env=self.env(),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.target.timeout_s + 5,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            late = f"no answer within {self.target.timeout_s:g} s"
            raise self._failure("reaching it", late) from None
        if done.returncode != 0 and not output.missing_only(done.stderr):
            raise TargetUnreachable(
                f"{self.target.label} (target {self.target.name!r}): cannot reach it: "
                f"{output.reason(done.stderr.splitlines())}",
                target=self.target.name,
            )

    def ensure_repository(self) -> None:
        """Open the repository and remove stale locks (a killed restic's), or create it
        if the target has none yet. `unlock` is the probe: every restic start derives
        the key (about half a second), so one start does both."""
        code, _, err = self._run(
            ["unlock"],
            what="opening the repository",
            ok_codes=(0, 1),
            deadline_s=self._quick_deadline(),
        )
        if code == 0:
            return
        reason = output.reason(err)
        if not output.no_repository(reason):
            raise self._failure("opening the repository", reason)
        self._run(
            ["init", "--repository-version", "2"],
            what="creating the repository",
            deadline_s=self._quick_deadline(),
        )

    def unlock(self) -> None:
        """Remove locks left by a restic that was killed (live ones are kept)."""
        self._run(["unlock"], what="removing stale locks", deadline_s=self._quick_deadline())

    def backup(
        self, folder: Path, *, tags: list[str], on_status: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Back up `folder`'s contents (paths relative to it); restic's summary."""
        summary: dict[str, Any] = {}

        def line(text: str) -> None:
            try:
                message = json.loads(text)
            except ValueError:
                return
            if message.get("message_type") == "status":
                on_status(message)
            elif message.get("message_type") == "summary":
                summary.update(message)

        tag_args = [arg for tag in tags for arg in ("--tag", tag)]
        # hard links and copies of unchanged files keep size and mtime: compare those
        self._run(
            ["backup", ".", "--json", "--ignore-ctime", "--ignore-inode", *tag_args],
            cwd=folder,
            on_line=line,
            what="the backup",
        )
        if "snapshot_id" not in summary:
            raise self._failure("the backup", "restic ended without naming its snapshot")
        return summary

    def snapshots(self) -> list[Snapshot]:
        raw = self._json(["snapshots"], what="listing snapshots") or []
        return [Snapshot.from_restic(item) for item in raw]

    def restore_size(self, snapshot_id: str) -> dict[str, int]:
        raw = self._json(["stats", snapshot_id, "--mode", "restore-size"], what="sizing it")
        return {
            "bytes": int(raw.get("total_size", 0)),
            "files": int(raw.get("total_file_count", 0)),
        }

    def check(self, *, read_data: bool, on_line: Callable[[str], None]) -> list[str]:
        """Problems `restic check` found (empty: the repository is sound)."""
        problems: list[str] = []

        def line(text: str) -> None:
            on_line(text)
            if output.is_problem(text):
                problems.append(text.strip())

        args = ["check", *(["--read-data"] if read_data else [])]
        code, _, err = self._run(args, on_line=line, what="the check", ok_codes=(0, 1))
        problems += [text.strip() for text in err if output.is_problem(text)]
        if code != 0 and not problems:
            raise self._failure("the check", output.reason(err))
        return list(dict.fromkeys(problems))

    def files_in_pack(self, pack_id: str) -> list[str]:
        raw = self._json(["find", "--pack", pack_id], what="finding what a pack holds") or []
        return sorted({item["path"] for item in raw if item.get("path")})

    def restore(self, snapshot_id: str, into: Path) -> None:
        """Restore into `into`; every blob is authenticated as it is read and every file
        read back (`--verify`): any error fails the whole restore."""
        code, out, err = self._run(
            ["restore", snapshot_id, "--target", str(into), "--verify"],
            what="the restore",
            ok_codes=(0, 1),
        )
        if code != 0:
            details = [line for line in out + err if "error" in line.lower()]
            raise self._failure("the restore", "; ".join(details[:5]) or output.reason(err))

    def forget(self, *, keep_last: int, keep_daily: int, keep_weekly: int) -> list[str]:
        """Apply the retention policy and prune; the ids of the snapshots removed."""
        raw = (
            self._json(
                [
                    "forget",
                    "--keep-last",
                    str(keep_last),
                    "--keep-daily",
                    str(keep_daily),
                    "--keep-weekly",
                    str(keep_weekly),
                ],
                what="applying retention",
            )
            or []
        )
        removed = [snap["id"] for group in raw for snap in (group.get("remove") or [])]
        if removed:
            # its own command: `forget --prune --json` follows the JSON with prune's text
            self._run(["prune"], what="pruning")
        return removed


def _low_priority() -> list[str]:
    """Training comes first: restic runs at a low CPU and idle I/O priority."""
    prefix = []
    if nice := shutil.which("nice"):
        prefix += [nice, "-n", "10"]
    if ionice := shutil.which("ionice"):
        prefix += [ionice, "-c", "3"]
    return prefix


def _dies_with_us() -> list[str]:
    """restic runs in a session of its own (so a cancel reaches rclone, not the server),
    which a SIGKILL of the server or the CLI does not reach: it would go on, write its
    snapshot for a job already marked failed, and read a staging folder the next backup
    is refilling. Linux's parent-death signal ends it with the thread that started it
    (`_run` waits for it, so that thread outlives it otherwise); restic's rclone ends
    when its pipe closes."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv and sys.platform == "linux" else []


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _drain(stream: Any, into: deque[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))
