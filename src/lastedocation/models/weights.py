"""What a model folder must hold before the studio accepts it: safetensors weights only.

    summary = check_model_folder(folder)   # InvalidInput names the file and the rule

Pickle-based formats (`.bin`, `.pt`, `.pth`, `.pkl`, `.ckpt`, ...) can run code when
loaded, so they are refused outright. Every `.safetensors` file has its header read
and checked with bounds checks (8-byte little-endian length, then JSON), so a pickle
renamed `model.safetensors` is refused too. Nothing is ever unpickled or loaded as a
tensor here; the parameter count comes from the headers alone.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from lastedocation.errors import InvalidInput

PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit
# config.json, tokenizer_config.json and the index are read whole; the largest real one
# we know is the index of a 1T-parameter mixture of experts, about 13 MB
MAX_JSON_BYTES = 32 * 2**20
# bytes per element, by safetensors dtype name
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
TORCH_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


@dataclass(frozen=True)
class TensorFile:
    """What one safetensors header says: how many parameters, of which dtypes."""

    parameters: int
    parameters_by_dtype: dict[str, int]


class ModelSummary(TypedDict):
    """What a model folder holds (plain JSON, so the registry can store it as is)."""

    architecture: str
    model_type: str
    parameters: int
    dtype: str  # the dtype most parameters have, in torch's words ("float32")
    total_bytes: int
    weight_files: list[str]
    has_tokenizer: bool
    has_chat_template: bool


def _refuse(path: Path, rule: str, fix: str = "") -> InvalidInput:
    detail = f"{path.name} is refused: {rule}" + (f"; {fix}" if fix else "")
    return InvalidInput(detail, file=path.name, rule=rule)


def _read_json(path: Path) -> Any:
    """One of the model's JSON files; refused, naming it, when it is too large to read,
    nested too deeply to parse, or not JSON."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        limit = f"{MAX_JSON_BYTES:,}"
        raise _refuse(path, f"it is {size:,} bytes; a model's JSON files have at most {limit}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise _refuse(path, "its JSON is nested too deeply") from None
    except ValueError:  # UnicodeDecodeError is one too
        raise _refuse(path, "not valid JSON") from None


def read_safetensors_header(path: Path) -> TensorFile:
    """Parse and check a safetensors header without loading a tensor."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _refuse(path, "not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise _refuse(
                path,
                f"not a safetensors file (its header length {length} does not fit "
                f"a {size}-byte file); it may be a pickle with a safetensors name",
                "save the weights with safetensors (`save_pretrained` does by default)",
            )
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _refuse(path, "not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise _refuse(path, "not a safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - length
    by_dtype: Counter[str] = Counter()
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        by_dtype[_check_entry(path, name, entry, data_bytes)] += _numel(entry)
    return TensorFile(sum(by_dtype.values()), dict(by_dtype))


def _numel(entry: dict[str, Any]) -> int:
    return math.prod(entry["shape"])


def _check_entry(path: Path, name: str, entry: Any, data_bytes: int) -> str:
    """The dtype of one header entry, after checking its shape and offsets."""
    bad = f"not a valid safetensors file (tensor {name!r} has a malformed header entry)"
    if not isinstance(entry, dict):
        raise _refuse(path, bad)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if (
        not isinstance(dtype, str)  # (a list here would be unhashable below)
        or dtype not in DTYPE_BYTES
        or not isinstance(shape, list)
        or not all(isinstance(d, int) and d >= 0 for d in shape)
        or not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
    ):
        raise _refuse(path, bad)
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes or end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise _refuse(
            path, f"not a valid safetensors file (tensor {name!r} lies outside the file's data)"
        )
    return str(dtype)


def _weight_files(folder: Path) -> list[Path]:
    """The top-level safetensors files that make up the model (the index's shards, if any)."""
    index = folder / INDEX_FILE
    if not index.is_file():
        return sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    content = _read_json(index)
    try:
        shards = sorted(set(content["weight_map"].values()))
    except (KeyError, TypeError, AttributeError):
        raise _refuse(index, "not a valid safetensors index (no `weight_map`)") from None
    files = []
    for shard in shards:
        shard_path = folder / str(shard)
        if "/" in str(shard) or "\\" in str(shard) or not str(shard).endswith(".safetensors"):
            raise _refuse(index, f"its shard {shard!r} is not a .safetensors file in this folder")
        if not shard_path.is_file():
            raise _refuse(index, f"its shard {shard!r} is missing")
        files.append(shard_path)
    return files


def _chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return False
    content = _read_json(config)
    if not isinstance(content, dict):
        raise _refuse(config, "not a JSON object")
    return bool(content.get("chat_template"))


def check_model_folder(folder: Path) -> ModelSummary:
    """Check that `folder` is a model in Hugging Face format with safetensors weights only.

    Raises InvalidInput (naming the file and the rule) otherwise.
    """
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder", rule="model folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        if path.suffix.lower() in PICKLED_SUFFIXES:
            raise _refuse(
                path,
                f"pickle-based weights ({path.suffix}) can run code when loaded",
                "convert them to safetensors (`save_pretrained` writes safetensors)",
            )
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidInput(
            f"{folder.name} has no config.json; a model folder in Hugging Face format needs one",
            file="config.json",
            rule="config.json required",
        )
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise _refuse(config_path, "not a JSON object")
    # every safetensors file is checked, also ones the model does not use
    headers = {p: read_safetensors_header(p) for p in files if p.suffix == ".safetensors"}
    weights = _weight_files(folder)
    if not weights:
        raise InvalidInput(
            f"{folder.name} has no .safetensors weights; only safetensors weights are accepted",
            rule="safetensors weights required",
        )
    by_dtype: Counter[str] = Counter()
    for path in weights:
        header = headers.get(path) or read_safetensors_header(path)
        by_dtype.update(header.parameters_by_dtype)
    main_dtype = by_dtype.most_common(1)[0][0] if by_dtype else "F32"
    architectures = config.get("architectures") or [config.get("model_type") or "unknown"]
    if not isinstance(architectures, list):
        raise _refuse(config_path, "its `architectures` is not a list")
    return ModelSummary(
        architecture=str(architectures[0]),
        model_type=str(config.get("model_type") or "unknown"),
        parameters=sum(by_dtype.values()),
        dtype=TORCH_DTYPE_NAMES.get(main_dtype, main_dtype.lower()),
        total_bytes=sum(p.stat().st_size for p in files),
        weight_files=[p.name for p in weights],
        has_tokenizer=any((folder / name).is_file() for name in TOKENIZER_FILES),
        has_chat_template=_chat_template(folder),
    )
