"""Model archives (.zip, .tar, .tar.gz): extracted safely, written deterministically.

    folder = extract_archive(upload, dest, max_total_bytes=..., max_files=..., max_ratio=...)
    make_archive(model_folder, out / "model.tar.gz")

Extraction trusts nothing the archive says about itself. The kind is read from
the content, not the name. Every member name is checked (no absolute paths,
drive letters, backslashes or `..`); only regular files and folders are made
(symlinks, hard links, devices and fifos are refused); sizes are counted from the
bytes actually written, so a zip bomb that lies in its headers is stopped while
it is copied, as is one that expands more than `max_ratio` times the archive's size
(the studio passes its settings `max_model_extracted_mb` and `max_archive_ratio`).
Everything goes to a temporary folder beside `dest` that is renamed to `dest` only
when all members passed; on any error it is removed again.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

from lastedocation.errors import Conflict, InvalidInput, PayloadTooLarge

CHUNK = 1 << 20
# compression ratios below this many written bytes are not judged (tiny text files
# compress very well and are harmless)
RATIO_FLOOR_BYTES = 1 << 20
# safetensors weights compress about 1.1x and tokenizer files 4-5x, so a real model
# archive stays far below this; a bomb (gzip's best is about 1000x) does not
MAX_RATIO = 20.0
SKIPPED = ("__MACOSX", ".DS_Store")  # what macOS adds to every zip it makes
_DRIVE = re.compile(r"^[A-Za-z]:")
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)

Opener = Callable[[], AbstractContextManager[IO[bytes]]]


def _refuse(member: str, rule: str) -> InvalidInput:
    return InvalidInput(f"archive member {member!r} is refused: {rule}", member=member, rule=rule)


def archive_kind(path: Path) -> str:
    """'zip', 'tar.gz' or 'tar', read from the file's content (not its name)."""
    with path.open("rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or zipfile.is_zipfile(path):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[257:262] == b"ustar":
        return "tar"
    raise InvalidInput(f"{path.name} is not a .zip, .tar or .tar.gz archive", rule="archive format")


def member_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, or InvalidInput if it could escape."""
    if "\x00" in name:
        raise _refuse(name, "its name holds a NUL character")
    if "\\" in name:
        raise _refuse(name, "its name holds a backslash (a Windows path separator)")
    if name.startswith("/"):
        raise _refuse(name, "absolute paths are not allowed")
    if _DRIVE.match(name):
        raise _refuse(name, "drive letters are not allowed")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(name, "`..` path components are not allowed")
    return parts


def _zip_members(archive: zipfile.ZipFile, max_files: int) -> Iterator[tuple[str, bool, Opener]]:
    infos = archive.infolist()
    if len(infos) > max_files:
        raise PayloadTooLarge(
            f"the archive has {len(infos)} members; at most {max_files} are allowed "
            "(LASTEDOCATION_MAX_ARCHIVE_FILES)",
            rule="max_files",
            limit=max_files,
        )
    for info in infos:
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise _refuse(info.filename, "symlinks are not allowed")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(info.filename, "only regular files and folders are allowed")
        if info.flag_bits & 0x1:
            raise _refuse(info.filename, "encrypted members are not supported")

        def opener(info: zipfile.ZipInfo = info) -> AbstractContextManager[IO[bytes]]:
            return archive.open(info)

        yield info.filename, info.is_dir(), opener


def _tar_members(archive: tarfile.TarFile, max_files: int) -> Iterator[tuple[str, bool, Opener]]:
    for count, member in enumerate(archive, start=1):
        if count > max_files:
            raise PayloadTooLarge(
                f"the archive has more than {max_files} members (LASTEDOCATION_MAX_ARCHIVE_FILES)",
                rule="max_files",
                limit=max_files,
            )
        if member.issym():
            raise _refuse(member.name, f"symlinks are not allowed (it points to {member.linkname})")
        if member.islnk():
            raise _refuse(member.name, f"hard links are not allowed (to {member.linkname})")
        if member.isdev():
            raise _refuse(member.name, "device files and fifos are not allowed")
        if not (member.isreg() or member.isdir()):
            raise _refuse(member.name, "only regular files and folders are allowed")

        def opener(member: tarfile.TarInfo = member) -> AbstractContextManager[IO[bytes]]:
            stream = archive.extractfile(member)
            assert stream is not None  # a regular file always has one
            return stream

        yield member.name, member.isdir(), opener


class _Budget:
    """Bytes written so far, against the size and compression-ratio caps."""

    def __init__(self, max_total_bytes: int, max_ratio: float, archive_bytes: int) -> None:
        self.written = 0
        self.max_total_bytes = max_total_bytes
        self.ratio_cap = max(RATIO_FLOOR_BYTES, int(max_ratio * archive_bytes))
        self.max_ratio = max_ratio

    def spend(self, member: str, n: int) -> None:
        self.written += n
        if self.written > self.max_total_bytes:
            raise PayloadTooLarge(
                f"archive member {member!r} takes the extracted size over the limit of "
                f"{self.max_total_bytes} bytes (LASTEDOCATION_MAX_MODEL_EXTRACTED_MB)",
                member=member,
                rule="max_total_bytes",
                limit=self.max_total_bytes,
            )
        if self.written > self.ratio_cap:
            raise PayloadTooLarge(
                f"archive member {member!r} expands the archive more than {self.max_ratio:g} "
                "times its compressed size (a zip bomb?); model weights compress about 1.1x "
                "(LASTEDOCATION_MAX_ARCHIVE_RATIO)",
                member=member,
                rule="max_ratio",
                limit=self.max_ratio,
            )


def _write(root: Path, name: str, is_dir: bool, opener: Opener, budget: _Budget) -> bool:
    """Write one member under root; True when it was a file (not a folder, not skipped)."""
    parts = member_parts(name)
    if not parts or parts[0] in SKIPPED or parts[-1] in SKIPPED:
        return False
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):  # belt and braces
        raise _refuse(name, "it would be written outside the destination")
    try:
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as src, target.open("xb") as dst:
            while chunk := src.read(CHUNK):
                budget.spend(name, len(chunk))
                dst.write(chunk)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise _refuse(name, "it appears twice, or clashes with another member") from None
    return True


def extract_archive(
    path: Path,
    dest: Path,
    *,
    max_total_bytes: int,
    max_files: int,
    max_ratio: float = MAX_RATIO,
) -> Path:
    """Extract a model archive into `dest` (which must not exist yet); return the model folder.

    The model folder is `dest`, or the archive's single top-level folder inside it.
    Raises InvalidInput or PayloadTooLarge naming the member and the rule; then
    nothing is left behind.
    """
    if dest.exists():
        raise Conflict(f"{dest} already exists; extract into a new folder", rule="destination")
    kind = archive_kind(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    budget = _Budget(max_total_bytes, max_ratio, path.stat().st_size)
    try:
        files = 0
        try:
            if kind == "zip":
                with zipfile.ZipFile(path) as zf:
                    for name, is_dir, opener in _zip_members(zf, max_files):
                        files += _write(tmp, name, is_dir, opener, budget)
            else:
                # a stream: no seeking back, no index of all members built first
                with tarfile.open(path, mode="r|gz" if kind == "tar.gz" else "r|") as tf:
                    for name, is_dir, opener in _tar_members(tf, max_files):
                        files += _write(tmp, name, is_dir, opener, budget)
        except _DAMAGED as exc:
            raise InvalidInput(
                f"{path.name} is damaged and cannot be extracted ({exc})", rule="archive format"
            ) from None
        if not files:
            raise InvalidInput(f"{path.name} holds no files", rule="empty archive")
        entries = list(tmp.iterdir())
        single = entries[0].name if len(entries) == 1 and entries[0].is_dir() else None
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / single if single else dest


def _files(folder: Path) -> list[tuple[Path, str]]:
    """Every file under folder (symlinks followed) with its archive name, sorted."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [(folder / rel, f"{folder.name}/{rel}") for rel in files]


def make_archive(folder: Path, out_path: Path) -> Path:
    """Write `folder` as a .tar.gz, .tgz, .tar or .zip with one top-level folder.

    The bytes depend only on the files' names and contents (sorted members, fixed
    times, owners and modes), so the same model always gives the same archive.
    """
    name = out_path.name
    if not name.endswith((".tar.gz", ".tgz", ".tar", ".zip")):
        raise InvalidInput(
            f"{name}: the archive name must end in .tar.gz, .tgz, .tar or .zip",
            rule="archive format",
        )
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder", rule="model folder")
    partial = out_path.with_name(f".{name}.partial")
    try:
        with partial.open("wb") as raw:
            if name.endswith(".zip"):
                _write_zip(folder, raw)
            elif name.endswith(".tar"):
                _write_tar(folder, raw)
            else:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                    _write_tar(folder, gz)
            raw.flush()
            os.fsync(raw.fileno())
        partial.replace(out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out_path


def _write_tar(folder: Path, stream: IO[bytes] | gzip.GzipFile) -> None:
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, arcname in _files(folder):
            info = tarfile.TarInfo(arcname)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as src:
                tf.addfile(info, src)


def _write_zip(folder: Path, stream: IO[bytes]) -> None:
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, arcname in _files(folder):
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.file_size = path.stat().st_size
            with path.open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, CHUNK)
