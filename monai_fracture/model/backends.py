"""Ways to run one trained model: ``fp32`` (eager PyTorch, the reference), ``channels_last`` (NHWC,
oneDNN's fast path on CPU), ``bf16`` / ``fp16`` (autocast), ``compile`` (``torch.compile``),
``torchscript`` (the exported ``model.ts``) and ``onnx`` (the exported ``model.onnx`` under ONNX
Runtime); see ``model.backend_table`` for the table and ``model.backend_choice`` for the rule that
picks one. Exported files are used only when ``model_info.json`` says they were exported from the
very ``model.pt`` beside them (``exports`` with its SHA-256), so a retrained checkpoint never runs
with a stale export.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from monai_fracture.model.backend_table import (
    AUTO_CANDIDATES,
    EXPORTED,
    check_backend,
    onnx_providers,
    unavailable_reason,
)
from monai_fracture.model.package import LoadedModel, OnnxNetwork, fracture_probability

logger = logging.getLogger(__name__)

@dataclass
class Backend:
    """A callable from a preprocessed batch to logits, and how to hand it its input."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    memory_format: torch.memory_format | None = None
    autocast_dtype: torch.dtype | None = None
    micro_batch: int | None = None  # the network sees at most this many images per call

    @torch.no_grad()
    def predict_proba(self, batch: torch.Tensor) -> np.ndarray:
        """P(fracture) for a preprocessed batch, ``micro_batch`` images per network call."""
        size = self.micro_batch
        if size and len(batch) > size:
            return np.concatenate([self._predict(batch[i : i + size]) for i in range(0, len(batch), size)])
        return self._predict(batch)

    def _predict(self, batch: torch.Tensor) -> np.ndarray:
        batch = batch.float()
        if self.name != "onnx":
            batch = batch.to(self.device, non_blocking=True)
        if self.memory_format is not None and batch.ndim in (4, 5):
            batch = batch.contiguous(memory_format=self.memory_format)
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                logits = self.forward(batch)
        else:
            logits = self.forward(batch)
        return fracture_probability(logits)


def _memory_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def _spatial_dims(model: LoadedModel) -> int:
    return int(model.info.network.get("spatial_dims", 3 if model.info.modality == "ct" else 2))


def export_path(model: LoadedModel, name: str) -> Path:
    """Where the exported file of backend ``name`` lives: beside ``model.pt``."""
    return model.path.parent / EXPORTED[name]


def build_backend(name: str, model: LoadedModel, device: str | torch.device | None = None,
                  threads: int | None = None) -> Backend:
    """Backend ``name`` for ``model`` on ``device``; ``BackendUnavailable`` says why it cannot be built.

    Every PyTorch variant gets its own copy of the network, so the fp32 reference is never
    touched (the same object also serves Grad-CAM).
    """
    device = torch.device(device if device is not None else model.device)
    check_backend(name, model, device)
    if model.format != "pytorch":
        return Backend(name, model.network, device)
    spatial_dims = _spatial_dims(model)
    if name in EXPORTED:
        path = export_path(model, name)
        if name == "onnx":
            return Backend(name, OnnxNetwork(path, providers=onnx_providers(device.type)[0], threads=threads), device)
        return Backend(name, torch.jit.load(str(path), map_location=device).eval(), device)
    if name == "fp32":
        return Backend(name, model.network, device)
    memory_format = _memory_format(spatial_dims)
    network = copy.deepcopy(model.network).to(device=device, memory_format=memory_format).eval()
    if name == "channels_last":
        return Backend(name, network, device, memory_format=memory_format)
    if name in ("bf16", "fp16"):
        dtype = torch.bfloat16 if name == "bf16" else torch.float16
        return Backend(name, network, device, memory_format=memory_format, autocast_dtype=dtype)
    # compile: the inductor cache defaults to /tmp; keep it per user and reusable
    from monai_fracture.model.backend_cache import cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return Backend(name, torch.compile(network), device, memory_format=memory_format)


def available_backends(model: LoadedModel, device: str | torch.device | None = None,
                       names: Sequence[str] = AUTO_CANDIDATES) -> dict[str, str]:
    """``{name: ""}`` for the backends that can be built, ``{name: reason}`` for those that cannot (cheap checks)."""
    device = torch.device(device if device is not None else model.device)
    return {name: unavailable_reason(name, model, device) for name in names}


__all__ = ["Backend", "available_backends", "build_backend", "export_path"]
