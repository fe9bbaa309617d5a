"""Checkpoints are complete or absent, verified, and pruned to the last K plus the best."""

from __future__ import annotations

from pathlib import Path

import pytest

from lastedocation.training import checkpoint as ckpt


def _write(folder: Path) -> None:
    (folder / "a.bin").write_bytes(b"x" * 100)
    (folder / "b.json").write_text("{}")


def test_write_verify_and_detect_corruption(tmp_path: Path) -> None:
    path = ckpt.write_checkpoint(tmp_path, 7, _write, {"state": {"step": 7}})
    assert path.name == "step-00000007" and not list(tmp_path.glob("*.tmp"))
    manifest = ckpt.verify(path)
    assert set(manifest["files"]) == {"a.bin", "b.json"} and manifest["state"] == {"step": 7}
    (path / "a.bin").write_bytes(b"y" * 100)
    with pytest.raises(ckpt.CheckpointError, match=r"a\.bin"):
        ckpt.verify(path)


def test_latest_valid_skips_broken_and_partial(tmp_path: Path) -> None:
    ckpt.write_checkpoint(tmp_path, 1, _write, {})
    broken = ckpt.write_checkpoint(tmp_path, 2, _write, {})
    (broken / "manifest.json").unlink()
    (tmp_path / "step-00000003.tmp").mkdir()
    found = ckpt.latest_valid(tmp_path)
    assert found is not None and found[0].name == "step-00000001"
    assert ckpt.clean_partial(tmp_path) == ["step-00000003.tmp"]


def test_prune_keeps_last_and_best(tmp_path: Path) -> None:
    for step in range(1, 7):
        ckpt.write_checkpoint(tmp_path, step, _write, {})
    assert ckpt.prune(tmp_path, keep_last=2, keep={2}) == [1, 3, 4]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 5, 6]
