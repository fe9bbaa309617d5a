"""CTranslate2's `model.bin`, read with every size checked against the file.

The format is small and documented in ctranslate2's own source
(ctranslate2/specs/model_spec.py, `ModelSpec._serialize`), little-endian:

    u32 version (6), string spec name, u32 spec revision, u32 variable count,
    per variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, bytes
    u32 alias count, per alias: string alias, string variable
    string = u16 length (with the NUL), UTF-8 bytes, NUL

dtype ids follow ctranslate2's DataType enum: float32, int8, int16, int32, float16,
bfloat16. A byte count must match rank, dims and dtype and fit in what is left of the
file before anything is read, so a damaged or hostile file costs at most its own size.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import torch

from lastedocation.errors import InvalidInput

_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
_MAX_VARIABLES = 100_000


class ConversionError(InvalidInput):
    """A model folder that cannot be converted; the message names the file and why."""


def read_ctranslate2(path: Path, *, meta: bool = False) -> tuple[str, dict[str, torch.Tensor]]:
    """The spec name and the variables of a CTranslate2 `model.bin` (aliases resolved).
    With `meta`, only shapes (and scalars): the weights are skipped, not read."""
    size = path.stat().st_size
    with path.open("rb") as f:
        reader = _Reader(f, size, path.name)
        version = reader.unpack("I")
        if not 1 <= version <= 6:
            raise ConversionError(f"{path.name}: unknown CTranslate2 binary version {version}")
        spec = reader.string() if version >= 2 else ""
        if version >= 2:
            reader.unpack("I")  # the spec's revision: the layout below is the same
        count = reader.unpack("I")
        if count > _MAX_VARIABLES:
            raise ConversionError(f"{path.name}: {count:,} variables is not a model")
        variables: dict[str, torch.Tensor] = {}
        for _ in range(count):
            name = reader.string()
            shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
            type_id = reader.unpack("B")
            if type_id >= len(_DTYPES):
                raise ConversionError(f"{path.name}: {name} has an unknown dtype {type_id}")
            dtype = _DTYPES[type_id]
            nbytes = reader.unpack("I")
            numel = 1
            for dim in shape:
                numel *= dim
            if nbytes != numel * dtype.itemsize:
                raise ConversionError(f"{path.name}: {name} says {nbytes} bytes for {shape}")
            if meta and shape:
                reader.skip(nbytes)
                variables[name] = torch.empty(shape, dtype=dtype, device="meta")
                continue
            data = bytearray(reader.take(nbytes))
            tensor = torch.frombuffer(data, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
            variables[name] = tensor.reshape(shape)
        if version >= 3:
            for _ in range(reader.unpack("I")):
                alias, target = reader.string(), reader.string()
                if target not in variables:
                    raise ConversionError(f"{path.name}: alias {alias} names no variable")
                variables[alias] = variables[target]
        if f.tell() != size:
            raise ConversionError(f"{path.name}: {size - f.tell():,} bytes after the last entry")
    return spec, variables


class _Reader:
    def __init__(self, f: BinaryIO, size: int, name: str) -> None:
        self.f, self.size, self.name = f, size, name

    def take(self, n: int) -> bytes:
        if self.f.tell() + n > self.size:
            raise ConversionError(f"{self.name} is cut short (truncated or not a model.bin)")
        return self.f.read(n)

    def skip(self, n: int) -> None:
        if self.f.tell() + n > self.size:
            raise ConversionError(f"{self.name} is cut short (truncated or not a model.bin)")
        self.f.seek(n, os.SEEK_CUR)

    def unpack(self, fmt: str) -> int:
        return int(struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0])

    def string(self) -> str:
        raw = self.take(self.unpack("H"))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionError(f"{self.name}: a name is not UTF-8") from None
