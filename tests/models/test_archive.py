"""Archive extraction refuses every trick a malicious upload can play, and leaves
nothing behind (inside or outside the destination) when it does."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lastedocation.api import create_app
from lastedocation.errors import Conflict, InvalidInput, PayloadTooLarge, StudioError
from lastedocation.models.archive import archive_kind, extract_archive, make_archive
from lastedocation.settings import Settings
from tests.conftest import ADMIN, add_account, sign_in

LIMITS = {"max_total_bytes": 10 * 2**20, "max_files": 50}
MB = 2**20


@pytest.fixture
def area(tmp_path: Path) -> tuple[Path, Path]:
    """(folder that holds the archives, folder the extraction goes into)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "studio").mkdir()
    return tmp_path / "in", tmp_path / "studio"


def _tar(path: Path, add: Callable[[tarfile.TarFile], None], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        add(tf)
    return path


def _file(tf: tarfile.TarFile, name: str, data: bytes = b"{}") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _link(tf: tarfile.TarFile, name: str, kind: bytes, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tf.addfile(info)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _refused(
    archive: Path, studio: Path, error: type[StudioError], match: str, **limits: int
) -> StudioError:
    before = sorted(archive.parent.parent.rglob("*"))
    with pytest.raises(error, match=match) as caught:
        extract_archive(archive, studio / "model", **{**LIMITS, **limits})  # type: ignore[arg-type]
    # nothing inside the destination (it does not exist), nothing anywhere else
    assert not (studio / "model").exists()
    assert sorted(archive.parent.parent.rglob("*")) == before
    assert list(studio.iterdir()) == []
    return caught.value


def test_dot_dot_member_is_refused(area: tuple[Path, Path]) -> None:
    src, studio = area
    archive = _tar(
        src / "m.tar.gz", lambda tf: (_file(tf, "model/config.json"), _file(tf, "../evil.txt"))
    )
    error = _refused(archive, studio, InvalidInput, r"'\.\./evil\.txt' is refused: `\.\.`")
    assert error.extra == {"member": "../evil.txt", "rule": "`..` path components are not allowed"}
    assert not (studio.parent / "evil.txt").exists()


def test_nested_dot_dot_in_zip_is_refused(area: tuple[Path, Path]) -> None:
    src, studio = area
    archive = _zip(src / "m.zip", {"model/config.json": b"{}", "model/../../x": b"!"})
    _refused(archive, studio, InvalidInput, r"'model/\.\./\.\./x' is refused")


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("/etc/evil", "absolute paths"),
        ("C:/evil.txt", "drive letters"),
        ("model\\..\\..\\evil", "backslash"),
    ],
)
def test_absolute_drive_and_backslash_names_are_refused(
    area: tuple[Path, Path], name: str, rule: str
) -> None:
    src, studio = area
    archive = _zip(src / "m.zip", {"ok.json": b"{}", name: b"!"})
    _refused(archive, studio, InvalidInput, rule)
    tar = _tar(src / "m.tar", lambda tf: _file(tf, name), mode="w")
    _refused(tar, studio, InvalidInput, rule)


def test_symlink_is_refused_in_tar_and_zip(area: tuple[Path, Path]) -> None:
    src, studio = area
    tar = _tar(
        src / "m.tgz",
        lambda tf: (
            _file(tf, "model/config.json"),
            _link(tf, "model/w", tarfile.SYMTYPE, "/etc/passwd"),
        ),
    )
    _refused(
        tar,
        studio,
        InvalidInput,
        r"'model/w' is refused: symlinks are not allowed \(it points to /etc/passwd\)",
    )

    info = zipfile.ZipInfo("model/w")
    info.external_attr = 0o120777 << 16  # what `zip --symlinks` writes
    with zipfile.ZipFile(src / "m.zip", "w") as zf:
        zf.writestr("model/config.json", b"{}")
        zf.writestr(info, "/etc/passwd")
    _refused(src / "m.zip", studio, InvalidInput, "symlinks are not allowed")


def test_hard_link_is_refused(area: tuple[Path, Path]) -> None:
    src, studio = area
    tar = _tar(
        src / "m.tar.gz",
        lambda tf: (
            _file(tf, "model/config.json"),
            _link(tf, "model/copy", tarfile.LNKTYPE, "model/config.json"),
        ),
    )
    _refused(tar, studio, InvalidInput, "hard links are not allowed")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(area: tuple[Path, Path], kind: bytes) -> None:
    src, studio = area
    tar = _tar(src / "m.tar", lambda tf: _link(tf, "model/dev", kind), mode="w")
    _refused(tar, studio, InvalidInput, "device files and fifos are not allowed")


def test_zip_bomb_is_stopped_by_bytes_written_not_by_its_headers(area: tuple[Path, Path]) -> None:
    src, studio = area
    archive = src / "bomb.zip"
    with (
        zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("model/model.safetensors", "w") as member,
    ):
        zeros = bytes(2**20)
        for _ in range(200):  # 200 MB of zeros
            member.write(zeros)
    assert archive.stat().st_size < 2**20
    # (the ratio cap alone would stop it sooner: this is the size cap's own test)
    error = _refused(
        archive, studio, PayloadTooLarge, "over the limit of 10485760 bytes", max_ratio=10**6
    )
    assert error.extra["rule"] == "max_total_bytes"

    # the same bomb with headers that lie (1 KB declared): refused all the same
    liar = src / "liar.zip"
    real, fake = (200 * 2**20).to_bytes(4, "little"), (1024).to_bytes(4, "little")
    liar.write_bytes(archive.read_bytes().replace(real, fake))
    with zipfile.ZipFile(liar) as zf:
        assert zf.infolist()[0].file_size == 1024
    _refused(liar, studio, InvalidInput, "damaged")


def _compressible(ratio: int, size: int = 4 * MB) -> bytes:
    """`size` bytes that deflate to a little more than size / ratio: random, then zeros."""
    head = os.urandom(size // ratio)
    return head + bytes(size - len(head))


def test_compression_ratio_is_capped(area: tuple[Path, Path]) -> None:
    src, studio = area
    archive = _zip(src / "m.zip", {"model/zeros.bin.txt": bytes(5 * MB)})
    error = _refused(
        archive,
        studio,
        PayloadTooLarge,
        "more than 20 times its compressed size .*LASTEDOCATION_MAX_ARCHIVE_RATIO",
        max_total_bytes=2**30,
    )
    assert error.extra == {"member": "model/zeros.bin.txt", "rule": "max_ratio", "limit": 20.0}

    # 15x is refused when the limit is 10x, and passes the default of 20x
    fifteen = _zip(src / "fifteen.zip", {"model/w.safetensors": _compressible(15)})
    assert 14 < 4 * MB / fifteen.stat().st_size < 16
    _refused(fifteen, studio, PayloadTooLarge, "more than 10 times", max_ratio=10)
    folder = extract_archive(fifteen, studio / "model", **LIMITS)  # type: ignore[arg-type]
    assert (folder / "w.safetensors").stat().st_size == 4 * MB

    # the first MiB is not judged: small text files compress very well and are harmless
    text = _zip(src / "text.zip", {"model/tokenizer.json": b" " * (MB - 1)})
    assert extract_archive(text, studio / "text", **LIMITS)  # type: ignore[arg-type]


def test_file_count_is_capped(area: tuple[Path, Path]) -> None:
    src, studio = area
    many = {f"model/{i}.json": b"{}" for i in range(6)}
    _refused(
        _zip(src / "m.zip", many), studio, PayloadTooLarge, "6 members; at most 5", max_files=5
    )
    tar = _tar(src / "m.tar.gz", lambda tf: [_file(tf, name) for name in many])
    _refused(tar, studio, PayloadTooLarge, "more than 5 members", max_files=5)


def test_damaged_empty_duplicate_and_unknown_archives(area: tuple[Path, Path]) -> None:
    src, studio = area
    (src / "notes.zip").write_text("just text, named like a zip")
    _refused(
        src / "notes.zip", studio, InvalidInput, r"notes\.zip is not a \.zip, \.tar or \.tar\.gz"
    )
    good = _tar(src / "good.tar.gz", lambda tf: _file(tf, "model/config.json", b"x" * 5000))
    (src / "cut.tar.gz").write_bytes(good.read_bytes()[:60])
    _refused(src / "cut.tar.gz", studio, InvalidInput, "damaged")
    _refused(_zip(src / "empty.zip", {"model/": b""}), studio, InvalidInput, "holds no files")
    twice = _tar(src / "twice.tar", lambda tf: (_file(tf, "a.json"), _file(tf, "a.json")), mode="w")
    _refused(twice, studio, InvalidInput, "'a.json' is refused: it appears twice")
    clash = _zip(src / "clash.zip", {"a": b"file", "a/b": b"under a file"})
    _refused(clash, studio, InvalidInput, "'a/b' is refused: it appears twice, or clashes")


def test_content_decides_the_kind_not_the_name(area: tuple[Path, Path]) -> None:
    src, studio = area
    members = {"config.json": b"{}", "w.safetensors": b"1", "__MACOSX/._w.safetensors": b"junk"}
    zip_named_tar = _zip(src / "model.tar.gz", members)
    assert archive_kind(zip_named_tar) == "zip"
    folder = extract_archive(zip_named_tar, studio / "model", **LIMITS)  # type: ignore[arg-type]
    assert folder == studio / "model"  # two top-level files: the model folder is dest
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "w.safetensors"]
    with pytest.raises(Conflict, match="already exists"):
        extract_archive(zip_named_tar, studio / "model", **LIMITS)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", ["tar.gz", "tgz", "tar", "zip"])
def test_make_archive_round_trips_deterministically(tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "persian-tiny"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "b.txt").write_text("سلام")
    first = make_archive(folder, tmp_path / f"one.{suffix}")
    (folder / "config.json").touch()  # a new mtime must not change the bytes
    second = make_archive(folder, tmp_path / f"two.{suffix}")
    assert first.read_bytes() == second.read_bytes()
    assert not list(tmp_path.glob(".*partial"))

    out = extract_archive(first, tmp_path / "back", **LIMITS)  # type: ignore[arg-type]
    assert out == tmp_path / "back" / "persian-tiny"
    assert (out / "sub" / "b.txt").read_text() == "سلام"
    assert (out / "config.json").read_text() == '{"a": 1}'

    with pytest.raises(InvalidInput, match=r"must end in \.tar\.gz"):
        make_archive(folder, tmp_path / "x.rar")


def _safetensors(data: bytes) -> bytes:
    """A valid safetensors file that holds `data` as one U8 tensor."""
    entry = {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}
    header = json.dumps({"w": entry}).encode()
    return struct.pack("<Q", len(header)) + header + data


def _model_archive(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    """A model folder (config.json, weights, and `files` on top) as an archive."""
    members = {
        "config.json": b'{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}',
        "model.safetensors": _safetensors(bytes(16)),
        **files,
    }
    return _tar(
        path, lambda tf: [_file(tf, f"model/{n}", data) for n, data in members.items()], mode
    )


@contextmanager
def _studio(tmp_path: Path, **settings: Any) -> Iterator[tuple[TestClient, Path]]:
    """The app on its own data folder with these settings, signed in as an admin;
    also its folder of temporary files."""
    studio = Settings(data_dir=tmp_path / "studio-app", import_sample_dataset=False, **settings)
    with TestClient(create_app(studio)) as client:
        add_account(studio, ADMIN, role="admin")
        sign_in(client)
        yield client, studio.tmp_dir


def _upload(client: TestClient, archive: Path) -> Any:
    return client.post(
        "/api/v1/models/import/archive", files={"file": (archive.name, archive.read_bytes())}
    )


def test_the_studio_extracts_archives_within_its_settings(tmp_path: Path) -> None:
    with _studio(tmp_path, max_model_extracted_mb=3, max_archive_ratio=10) as (client, tmp):
        weights = _safetensors(os.urandom(4 * MB))  # random: it does not compress
        answer = _upload(
            client, _model_archive(tmp_path / "big.tgz", {"more.safetensors": weights})
        )
        assert answer.status_code == 413, answer.text
        assert "LASTEDOCATION_MAX_MODEL_EXTRACTED_MB" in answer.json()["detail"]
        assert answer.json()["rule"] == "max_total_bytes"
        assert answer.json()["limit"] == 3 * MB
        assert list(tmp.iterdir()) == []

        weights = _safetensors(_compressible(15, 2 * MB))
        answer = _upload(
            client, _model_archive(tmp_path / "x15.tgz", {"more.safetensors": weights})
        )
        assert answer.status_code == 413, answer.text
        assert "more than 10 times" in answer.json()["detail"]
        assert answer.json()["rule"] == "max_ratio"
        assert list(tmp.iterdir()) == []

        weights = _safetensors(os.urandom(2 * MB))
        answer = _upload(client, _model_archive(tmp_path / "ok.tgz", {"more.safetensors": weights}))
        assert answer.status_code == 201, answer.text
        assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["config.json", "tokenizer_config.json", "model.safetensors.index.json"]
)
def test_a_deeply_nested_json_file_is_a_400_naming_it(tmp_path: Path, name: str) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    with _studio(tmp_path) as (client, _):
        answer = _upload(client, _model_archive(tmp_path / "nested.tar.gz", {name: nested}))
    assert answer.status_code == 400, answer.text
    assert answer.json()["file"] == name
    assert answer.json()["detail"] == f"{name} is refused: its JSON is nested too deeply"


def test_a_huge_json_file_is_a_400_naming_it_and_is_not_read(tmp_path: Path) -> None:
    padding = os.urandom(17 * MB).hex()  # 34 MB of text that does not compress much
    huge = json.dumps({"model_type": "llama", "padding": padding}).encode()
    archive = _model_archive(tmp_path / "huge.tar", {"config.json": huge}, mode="w")
    with _studio(tmp_path) as (client, _):
        answer = _upload(client, archive)
    assert answer.status_code == 400, answer.text
    assert answer.json()["file"] == "config.json"
    assert f"is {len(huge):,} bytes; a model's JSON files have at most" in answer.json()["detail"]
