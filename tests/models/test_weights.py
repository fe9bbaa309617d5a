"""Only safetensors weights get in: pickles are refused by name and by content,
and the summary comes from the headers alone."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lastedocation.errors import InvalidInput
from lastedocation.models.weights import check_model_folder, read_safetensors_header


@pytest.fixture
def model_dir(full_run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(full_run / "model", folder)
    return folder


def test_summary_of_a_trained_model(model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    summary = check_model_folder(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    # tied embeddings are stored once, as the model counts them
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["architecture"] == "LlamaForCausalLM" and summary["model_type"] == "llama"
    assert summary["dtype"] == "float32"
    assert summary["weight_files"] == ["model.safetensors"]
    assert summary["total_bytes"] == sum(p.stat().st_size for p in model_dir.iterdir())
    assert summary["has_tokenizer"] and summary["has_chat_template"]
    json.dumps(summary)  # the registry stores it as JSON


def test_a_pickle_named_model_safetensors_is_refused_without_unpickling(
    model_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    (model_dir / "model.safetensors").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(
        InvalidInput, match=r"model\.safetensors is refused: not a safetensors file"
    ) as caught:
        check_model_folder(model_dir)
    assert "pickle" in caught.value.detail
    assert not marker.exists()

    torch.save({"w": torch.zeros(2)}, model_dir / "model.safetensors")  # a torch zip pickle
    with pytest.raises(InvalidInput, match="not a safetensors file"):
        check_model_folder(model_dir)


@pytest.mark.parametrize(
    "name", ["pytorch_model.bin", "model.pt", "w.pth", "x.pkl", "last.ckpt", "sub/optimizer.PT"]
)
def test_pickle_formats_are_refused_by_name(model_dir: Path, name: str) -> None:
    (model_dir / name).parent.mkdir(exist_ok=True)
    (model_dir / name).write_bytes(b"\x80\x04N.")
    with pytest.raises(InvalidInput, match=rf"{Path(name).name} is refused: pickle-based weights"):
        check_model_folder(model_dir)


def _header_file(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "problem"),
    [
        (b"[1, 2]", b"", "not a JSON object"),
        (b"\xff\xfe{}", b"", "not JSON"),
        (
            b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}',
            b"\0" * 8,
            "lies outside",
        ),
        (
            b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}',
            b"\0" * 16,
            "lies outside",
        ),
        (b'{"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}', b"\0" * 16, "malformed"),
        (
            b'{"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}',
            b"\0" * 16,
            "malformed",
        ),
        (b'{"w": [1]}', b"", "malformed"),
    ],
)
def test_bad_safetensors_headers_are_refused(
    tmp_path: Path, header: bytes, data: bytes, problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        read_safetensors_header(_header_file(tmp_path / "w.safetensors", header, data))


def test_short_and_oversized_headers(tmp_path: Path) -> None:
    (tmp_path / "a.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(InvalidInput, match="shorter than its 8-byte header length"):
        read_safetensors_header(tmp_path / "a.safetensors")
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(InvalidInput, match="header length 1099511627776 does not fit"):
        read_safetensors_header(tmp_path / "b.safetensors")


def test_sharded_weights_with_an_index(tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file(
        {"a": torch.zeros(3, 4, dtype=torch.bfloat16)}, folder / "model-00001-of-00002.safetensors"
    )
    save_file(
        {"b": torch.zeros(5, dtype=torch.bfloat16)}, folder / "model-00002-of-00002.safetensors"
    )
    save_file({"stray": torch.zeros(100)}, folder / "notes.safetensors")  # checked, not counted
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    summary = check_model_folder(folder)
    assert summary["parameters"] == 17 and summary["dtype"] == "bfloat16"
    assert summary["architecture"] == "llama"
    assert summary["weight_files"] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert not summary["has_tokenizer"] and not summary["has_chat_template"]

    index["weight_map"]["b"] = "../elsewhere.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidInput, match=r"is not a \.safetensors file in this folder"):
        check_model_folder(folder)
    index["weight_map"]["b"] = "model-00003-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidInput, match="is missing"):
        check_model_folder(folder)
    (folder / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(InvalidInput, match="no `weight_map`"):
        check_model_folder(folder)


def test_config_and_weights_are_required(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a folder"):
        check_model_folder(tmp_path / "missing")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(InvalidInput, match=r"no \.safetensors weights"):
        check_model_folder(model_dir)
    (model_dir / "config.json").unlink()
    with pytest.raises(InvalidInput, match=r"has no config\.json"):
        check_model_folder(model_dir)
    (model_dir / "config.json").write_text("{oops")
    with pytest.raises(InvalidInput, match=r"config\.json is refused: not valid JSON"):
        check_model_folder(model_dir)
