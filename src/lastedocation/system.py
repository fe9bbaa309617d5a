"""Real figures of the machine: CPU, memory, disk of the data folder, GPUs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import psutil


def system_figures(data_dir: Path, *, for_admin: bool) -> dict[str, Any]:
    """The machine's figures; the data folder's path only for admins (members are
    never shown the server's paths)."""
    memory = psutil.virtual_memory()
    disk = shutil.disk_usage(data_dir)
    return {
        "cpu": {
            "cores": psutil.cpu_count(logical=True),
            "percent": psutil.cpu_percent(interval=0.1),
            "load_average": list(os.getloadavg()),
        },
        "memory": {"total": memory.total, "available": memory.available, "percent": memory.percent},
        "disk": {
            "path": str(data_dir) if for_admin else None,
            "total": disk.total,
            "free": disk.free,
            "used": disk.used,
        },
        "gpus": gpu_figures(),
    }


def gpu_figures() -> list[dict[str, Any]]:
    """Per GPU: name, memory, and utilization and temperature where NVML is present."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        gpu: dict[str, Any] = {
            "index": index,
            "name": torch.cuda.get_device_name(index),
            "memory_total": total,
            "memory_used": total - free,
        }
        try:
            gpu["utilization_percent"] = torch.cuda.utilization(index)
            gpu["temperature_c"] = torch.cuda.temperature(index)
        except Exception:  # NVML (nvidia-ml-py) missing: leave those figures out
            pass
        gpus.append(gpu)
    return gpus
