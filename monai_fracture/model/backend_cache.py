"""The cache of measured backend choices: one JSON file per user, keyed by everything the ranking depends on.

A cache that cannot be read or written only costs a re-measurement later, never a failed run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from monai_fracture import cache
from monai_fracture.model.backend_table import export_is_current
from monai_fracture.model.package import LoadedModel, file_digest

logger = logging.getLogger(__name__)

CACHE_ENV = cache.CACHE_ENV


def cache_dir() -> Path:
    """The package's one cache folder (``monai_fracture.cache``)."""
    return cache.cache_dir()


def _machine_signature(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cache_key(model: LoadedModel, device: torch.device, batch_size: int, threads: int | None) -> str:
    """Everything the speed ranking depends on: weights and current exports, device and machine, batch size,
    threads, versions."""
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    exports = {name: (model.info.exports.get(name) or {}).get("sha256") for name in ("onnx", "torchscript")
               if export_is_current(model, name)[0]}
    parts = {
        "model": file_digest(model.path),
        "exports": exports,  # a new export must get its chance
        "device": str(device),
        "machine": _machine_signature(device),
        "cpus": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "batch_size": batch_size,
        "torch": torch.__version__,
        "onnxruntime": ort_version,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cache_file() -> Path:
    return cache_dir() / "backends.json"


def read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache(key: str, entry: dict[str, Any]) -> None:
    """Add one measured choice; a cache that cannot be written only costs a re-measurement later."""
    from monai_fracture.files import atomic_write_bytes

    try:
        data = read_cache()
        data[key] = entry
        path = cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    except OSError as err:
        logger.warning("could not cache the backend choice in %s: %s", cache_file(), err)


__all__ = ["CACHE_ENV", "cache_dir", "cache_file", "cache_key", "read_cache", "write_cache"]
