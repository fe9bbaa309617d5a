"""Speech dataset archives (.zip, .tar, .tar.gz): their audio and metadata files
extracted safely into a staging folder.

    members = extract(upload, staging / "extract", limits=ArchiveLimits(...))

The rules are those of model archives (`models/archive.py`), worded for datasets.
The kind is read from the content, not the name. Every member name is checked
(`member_parts`: no absolute paths, drive letters, backslashes or `..`); only regular
files and folders pass (symlinks, hard links, devices, fifos, sparse files and
encrypted zip members are refused). The member count is capped before anything is
built from it: a zip's central directory is walked header by header first (zipfile
would build every entry of a hostile directory in memory at once), a tar's members
are counted as the stream is read, and a tar's long-name and pax headers may hold at
most `MAX_HEADER_BYTES` (tarfile would read a header of any size whole). Bytes are
counted as they are written, against the extracted-size cap and the compression-ratio
cap, so a bomb that lies in its headers stops while it is copied.

Only audio files and metadata files are written; other files are only listed. The
caller removes `dest` on any error.
"""

from __future__ import annotations

import errno
import gzip
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from lastedocation.errors import InvalidInput, PayloadTooLarge
from lastedocation.models.archive import (
    CHUNK,
    RATIO_FLOOR_BYTES,
    SKIPPED,
    archive_kind,
    member_parts,
)

AUDIO_EXTENSIONS = frozenset({"wav", "mp3", "ogg", "oga", "opus", "webm", "m4a", "flac"})
METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
MAX_HEADER_BYTES = 64 * 1024  # a pax or GNU long-name header: a few hundred bytes in practice
_ZIP_EOCD, _ZIP64_LOCATOR, _ZIP_ENTRY = b"PK\x05\x06", b"PK\x06\x07", b"PK\x01\x02"
_LONG_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                 tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)  # fmt: skip

_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)

Opener = Callable[[], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int
    max_total_bytes: int
    max_ratio: float


@dataclass
class Members:
    """What the archive holds: written files by their NFC-normalized path (to the path
    on disk), and the names of every other file."""

    kind: str
    files: dict[str, str] = field(default_factory=dict)
    others: set[str] = field(default_factory=set)


def key(name: str) -> str:
    """How a path is looked up: NFC (macOS writes decomposed names: آ as ا + ٓ)."""
    return unicodedata.normalize("NFC", name)


def extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""


def _refuse(member: str, rule: str) -> InvalidInput:
    return InvalidInput(f"archive member {member!r} is refused: {rule}", member=member, rule=rule)


def _too_many(count: str, max_files: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the archive has {count} members; at most {max_files:,} are allowed "
        "(LASTEDOCATION_MAX_SPEECH_FILES)",
        rule="max_files",
        limit=max_files,
    )


class _Budget:
    """Bytes extracted so far, against the size and compression-ratio caps."""

    def __init__(self, limits: ArchiveLimits, archive_bytes: int) -> None:
        self.written = 0
        self.limits = limits
        self.ratio_cap = max(RATIO_FLOOR_BYTES, int(limits.max_ratio * archive_bytes))

    def spend(self, member: str, n: int) -> None:
        self.written += n
        if self.written > self.limits.max_total_bytes:
            raise PayloadTooLarge(
                f"archive member {member!r} takes the extracted size over the limit of "
                f"{self.limits.max_total_bytes:,} bytes (LASTEDOCATION_MAX_SPEECH_EXTRACTED_MB)",
                member=member,
                rule="max_total_bytes",
                limit=self.limits.max_total_bytes,
            )
        if self.written > self.ratio_cap:
            raise PayloadTooLarge(
                f"archive member {member!r} expands the archive more than "
                f"{self.limits.max_ratio:g} times its size (a zip bomb?); audio barely "
                "compresses (LASTEDOCATION_MAX_ARCHIVE_RATIO)",
                member=member,
                rule="max_ratio",
                limit=self.limits.max_ratio,
            )


def _zip_count(path: Path, max_files: int) -> None:
    """Walk the zip's central directory header by header and refuse it past `max_files`
    entries, before zipfile builds them all in memory."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        tail_start = max(0, size - (1 << 16) - 22)
        f.seek(tail_start)
        tail = f.read()
        at = tail.rfind(_ZIP_EOCD)
        if at < 0 or len(tail) - at < 22:
            return  # not found: zipfile reports the damage
        eocd = tail_start + at
        cd_size = struct.unpack("<L", tail[at + 12 : at + 16])[0]
        end = eocd
        locator = tail[at - 20 : at] if at >= 20 else b""
        if locator[:4] == _ZIP64_LOCATOR:
            end = eocd - 20 - 56  # the zip64 end record stands before its locator
            f.seek(end + 40)
            cd_size = struct.unpack("<Q", f.read(8))[0]
        position, count = max(0, end - cd_size), 0
        while position < end:
            f.seek(position)
            header = f.read(46)
            if len(header) < 46 or header[:4] != _ZIP_ENTRY:
                return  # damaged: zipfile says so
            count += 1
            if count > max_files:
                raise _too_many(f"more than {max_files:,}", max_files)
            name_len, extra_len, comment_len = struct.unpack("<HHH", header[28:34])
            position += 46 + name_len + extra_len + comment_len


def _zip_members(archive: zipfile.ZipFile) -> Iterator[tuple[str, bool, int, Opener]]:
    for info in archive.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise _refuse(info.filename, "symlinks are not allowed")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(info.filename, "only regular files and folders are allowed")
        if info.flag_bits & 0x1:
            raise _refuse(info.filename, "encrypted members are not supported")

        def opener(info: zipfile.ZipInfo = info) -> AbstractContextManager[IO[bytes]]:
            return archive.open(info)

        yield info.filename, info.is_dir(), 0, opener


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses long-name and pax headers past MAX_HEADER_BYTES, and
    sparse files, before tarfile reads them (`_proc_member` is tarfile's hook for this)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in _LONG_HEADERS and self.size > MAX_HEADER_BYTES:
            raise _refuse(
                self.name,
                f"its extended header is {self.size:,} bytes (at most {MAX_HEADER_BYTES:,})",
            )
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _refuse(self.name, "sparse files are not allowed")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _tar_members(
    archive: tarfile.TarFile, max_files: int
) -> Iterator[tuple[str, bool, int, Opener]]:
    for count, member in enumerate(archive, start=1):
        if count > max_files:
            raise _too_many(f"more than {max_files:,}", max_files)
        if member.issym():
            raise _refuse(member.name, f"symlinks are not allowed (it points to {member.linkname})")
        if member.islnk():
            raise _refuse(member.name, f"hard links are not allowed (to {member.linkname})")
        if not (member.isreg() or member.isdir()):
            raise _refuse(member.name, "only regular files and folders are allowed")

        def opener(member: tarfile.TarInfo = member) -> AbstractContextManager[IO[bytes]]:
            stream = archive.extractfile(member)
            assert stream is not None  # a regular file always has one
            return stream

        # a skipped member is still read (and decompressed) to reach the next one
        yield member.name, member.isdir(), member.size, opener


def wanted(parts: tuple[str, ...]) -> bool:
    """Whether a file is extracted: audio, or a metadata file."""
    return parts[-1] in METADATA_NAMES or extension(parts[-1]) in AUDIO_EXTENSIONS


def _take(
    root: Path, name: str, is_dir: bool, size: int, opener: Opener, budget: _Budget, out: Members
) -> None:
    parts = member_parts(name)
    if not parts or parts[0] in SKIPPED or parts[-1] in SKIPPED or is_dir:
        return
    relative = "/".join(parts)
    if key(relative) in out.files or key(relative) in out.others:
        raise _refuse(name, "it appears twice in the archive")
    if not wanted(parts):
        budget.spend(name, size)
        out.others.add(key(relative))
        return
    target = root.joinpath(*parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as src, target.open("xb") as dst:
            while chunk := src.read(CHUNK):
                budget.spend(name, len(chunk))
                dst.write(chunk)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise _refuse(name, "it clashes with another member of the same name") from None
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise _refuse(name, "its name is too long for a file name") from None
    out.files[key(relative)] = relative


def extract(path: Path, dest: Path, *, limits: ArchiveLimits) -> Members:
    """Extract the audio and metadata files of the archive at `path` into `dest` (made
    here). Raises InvalidInput or PayloadTooLarge naming the member and the rule."""
    kind = archive_kind(path)
    dest.mkdir()
    budget = _Budget(limits, path.stat().st_size)
    out = Members(kind)
    try:
        if kind == "zip":
            _zip_count(path, limits.max_files)
            with zipfile.ZipFile(path) as zf:
                for name, is_dir, size, opener in _zip_members(zf):
                    _take(dest, name, is_dir, size, opener, budget, out)
        else:
            # a stream: no seeking back, no index of all members built first
            mode: Literal["r|gz", "r|"] = "r|gz" if kind == "tar.gz" else "r|"
            with tarfile.open(path, mode=mode, tarinfo=_BoundedTarInfo) as tf:
                for name, is_dir, size, opener in _tar_members(tf, limits.max_files):
                    _take(dest, name, is_dir, size, opener, budget, out)
    except _DAMAGED as exc:
        raise InvalidInput(
            f"the {kind} archive is damaged and cannot be read ({exc})", rule="archive format"
        ) from None
    return out
