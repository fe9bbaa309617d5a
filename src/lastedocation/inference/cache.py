"""Models loaded for chat, kept in memory between requests.

    cache = ModelCache(max_models=2, min_free_memory_mb=1024)
    loaded = cache.get(folder)          # loads once; later calls return the same model
    with loaded.lock: ...               # one answer at a time per model

A model is known by its folder and the newest modification time of the folder's
files, so a folder written again (a new export) is loaded afresh. The least
recently used model is unloaded when more than `max_models` are loaded, and
before a load while the machine's available memory is short of what the new
model needs plus `min_free_memory_mb`.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from lastedocation.errors import InvalidInput, NotFound

log = logging.getLogger("lastedocation.inference")
MB = 1024 * 1024


@dataclass
class LoadedModel:
    folder: Path
    stamp: int  # newest mtime (ns) of the folder's files when it was loaded
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def device(self) -> torch.device:
        return self.model.device


class ModelCache:
    """Thread-safe: requests for a loaded model do not wait for another model's load,
    and two requests for the same model load it once."""

    def __init__(self, max_models: int = 2, min_free_memory_mb: int = 1024) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be 1 or more, got {max_models}")
        self.max_models = max_models
        self.min_free_bytes = max(0, min_free_memory_mb) * MB
        self._models: OrderedDict[Path, LoadedModel] = OrderedDict()  # least recent first
        self._lock = threading.Lock()
        self._loading: dict[Path, threading.Lock] = {}

    def get(self, folder: Path) -> LoadedModel:
        """The model in `folder`, loaded now or earlier."""
        folder = folder.resolve()
        stamp = _stamp(folder)
        with self._lock:
            found = self._fresh(folder, stamp)
            if found is not None:
                return found
            loading = self._loading.setdefault(folder, threading.Lock())
        with loading:
            with self._lock:  # another request may have loaded it meanwhile
                found = self._fresh(folder, stamp)
                if found is not None:
                    return found
                self._drop(folder)  # an older version of the folder
            self._make_room(_weights_size(folder))
            loaded = _load(folder, stamp)
            with self._lock:
                self._models[folder] = loaded
                while len(self._models) > self.max_models:
                    self._drop(next(iter(self._models)))
        _release_memory()
        return loaded

    def loaded(self) -> list[Path]:
        """Folders of the loaded models, the least recently used first."""
        with self._lock:
            return list(self._models)

    def unload(self, folder: Path) -> bool:
        """Forget a model (e.g. one deleted from the registry); False if it was not loaded."""
        with self._lock:
            dropped = self._drop(folder.resolve())
        if dropped:
            _release_memory()
        return dropped

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
        _release_memory()

    def _fresh(self, folder: Path, stamp: int) -> LoadedModel | None:
        found = self._models.get(folder)
        if found is None or found.stamp != stamp:
            return None
        self._models.move_to_end(folder)
        return found

    def _drop(self, folder: Path) -> bool:
        # an answer being generated keeps its own reference: its memory is freed when it ends
        return self._models.pop(folder, None) is not None

    def _make_room(self, needed: int) -> None:
        """Unload the least recently used models while memory is short."""
        while psutil.virtual_memory().available - needed < self.min_free_bytes:
            with self._lock:
                if not self._models:
                    break
                folder = next(iter(self._models))
                self._drop(folder)
            log.info("unloaded %s: available memory is low", folder)
            _release_memory()
        available = psutil.virtual_memory().available
        if available - needed < self.min_free_bytes:
            log.warning(
                "loading a model of %d MB with %d MB of memory available (wanted %d MB free)",
                needed // MB,
                available // MB,
                self.min_free_bytes // MB,
            )


def _stamp(folder: Path) -> int:
    if not folder.is_dir():
        raise NotFound(f"the model folder {folder} does not exist (moved or deleted?)")
    with os.scandir(folder) as entries:
        times = [entry.stat().st_mtime_ns for entry in entries]
    return max([folder.stat().st_mtime_ns, *times])


def _weights_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def _load(folder: Path, stamp: int) -> LoadedModel:
    if not any(folder.glob("*.safetensors")):
        raise InvalidInput(
            f"{folder} has no .safetensors weights; the studio does not load pickled weights "
            "(convert them with `save_pretrained(..., safe_serialization=True)`)"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot load the model in {folder}: {exc}") from None
    model.to(device)  # type: ignore[arg-type]
    model.eval()  # type: ignore[no-untyped-call]
    log.info("loaded %s on %s (%s)", folder, device, dtype)
    return LoadedModel(folder=folder, stamp=stamp, model=model, tokenizer=tokenizer)


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
