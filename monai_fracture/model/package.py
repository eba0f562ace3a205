"""Models on disk: a folder with ``model.pt`` (a plain ``state_dict``) and ``model_info.json``.

Everything another module needs to use a trained model travels in ``model_info.json``
(``ModelInfo``): how to rebuild the network, how to preprocess, and the decision threshold
chosen on validation. Exported ``model.ts`` / ``model.onnx`` live beside them and load through
the same ``load_model`` call, so scoring code never cares which format it got.

Checkpoints are always read with ``torch.load(..., weights_only=True)``: a file that carries a
pickled object (which could run code on load) is refused with ``UnsafeCheckpointError``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

MODEL_WEIGHTS = "model.pt"
MODEL_TORCHSCRIPT = "model.ts"
MODEL_ONNX = "model.onnx"
MODEL_INFO = "model_info.json"
_FORMATS = {".pt": "pytorch", ".pth": "pytorch", ".ts": "torchscript", ".onnx": "onnx"}


class ModelPackageError(Exception):
    """A model folder or file that cannot be used, naming the path and the reason."""

    def __init__(self, path: str | PathLike, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class UnsafeCheckpointError(ModelPackageError):
    """A checkpoint that holds pickled objects beyond tensors and plain containers."""


@dataclass
class ModelInfo:
    """What a trained model needs beside its weights (serialised as ``model_info.json``).

    ``network`` holds the keyword arguments of ``monai_fracture.networks.build_network``
    (without ``pretrained``), ``preprocessing`` those of
    ``monai_fracture.transforms.presets.build_preprocessing``. ``threshold`` applies to
    P(fracture) = softmax(logits)[:, 1]; ``threshold_rule`` says how it was chosen.
    """

    name: str = "fracture_classification"
    version: str = "0.1.0"
    network: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    threshold_rule: str = "fixed 0.5"
    class_names: list[str] = field(default_factory=lambda: ["no_fracture", "fracture"])
    modality: str = "xr"
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    # {"onnx"|"torchscript": {"file", "sha256", "source_sha256", "max_abs_difference"}} written by export
    exports: dict[str, Any] = field(default_factory=dict)
    # the model's own heatmap recipe (model.gradcam.heatmap_settings): {"method", "layers", ...}; {} = the defaults
    heatmap: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    monai_fracture_version: str = field(default_factory=lambda: _package_version())

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Build from a dict, ignoring keys this version does not know (forward compatible)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.debug("model_info keys ignored: %s", unknown)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | PathLike) -> ModelInfo:
        path = Path(path)
        if not path.is_file():
            raise ModelPackageError(path, f"no {MODEL_INFO} found")
        try:
            info = cls.from_json(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
            raise ModelPackageError(path, f"not a valid {MODEL_INFO}: {err}") from err
        _check_info(info, path)
        return info


def _check_info(info: ModelInfo, path: Path) -> None:
    """Values the loader and the decision rule trust: a message (exit 2), never a traceback later."""
    threshold = info.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or not 0.0 <= threshold <= 1.0:
        raise ModelPackageError(path, f"threshold must be a number in [0, 1], not {threshold!r}")
    for key in ("network", "preprocessing", "heatmap"):
        if not isinstance(getattr(info, key), dict):
            raise ModelPackageError(path, f"{key} must be a mapping, not {type(getattr(info, key)).__name__}")
    from monai_fracture.model.gradcam import heatmap_settings

    try:
        heatmap_settings(info.heatmap)
    except ValueError as err:
        raise ModelPackageError(path, str(err)) from err


def _package_version() -> str:
    from monai_fracture import __version__

    return __version__


def _jsonable(value: Any) -> Any:
    """Plain JSON types from numpy / torch scalars and tuples; an undefined score (NaN, inf) becomes null,
    since NaN is not JSON and strict parsers (jq, JavaScript) reject the file."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _looks_like_torch_file(path: Path) -> bool:
    """A torch.save zip archive or a legacy pickle stream (protocol 2+ starts with 0x80)."""
    import zipfile

    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"


def safe_torch_load(path: str | PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` that names the file when it refuses a pickled payload."""
    path = Path(path)
    if not path.is_file():
        raise ModelPackageError(path, "checkpoint file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not _looks_like_torch_file(path):
            raise ModelPackageError(path, f"not a readable PyTorch checkpoint: {err}") from err
        raise UnsafeCheckpointError(
            path,
            "refused to load: the checkpoint contains pickled objects other than tensors and plain "
            f"containers, which could run code when loaded (torch.load weights_only=True said: {err})",
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ModelPackageError(path, f"not a readable PyTorch checkpoint: {err}") from err


def extract_state_dict(checkpoint: Any, path: str | PathLike = "<memory>") -> dict[str, torch.Tensor]:
    """The network weights from a plain state_dict or a ``{"model"|"network"|"state_dict": ...}`` checkpoint."""
    if not isinstance(checkpoint, Mapping):
        raise ModelPackageError(path, f"expected a state_dict, got {type(checkpoint).__name__}")
    for key in ("model", "network", "state_dict"):
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            checkpoint = inner
            break
    if not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ModelPackageError(path, "checkpoint holds no network state_dict (keys: %s)" % sorted(checkpoint)[:8])
    # Weights saved from a DistributedDataParallel wrapper carry a "module." prefix.
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module."):]: v for k, v in checkpoint.items()}
    return dict(checkpoint)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def file_digest(path: str | PathLike) -> str:
    """SHA-256 of a file (remembered per path, size and modification time)."""
    stat = os.stat(path)
    return _digest(os.fspath(path), stat.st_size, stat.st_mtime_ns)


def save_model(model_dir: str | PathLike, network: torch.nn.Module, info: ModelInfo) -> Path:
    """Write ``model.pt`` (state_dict, unwrapped from DDP) and ``model_info.json``; returns the folder."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    module = getattr(network, "module", network)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save(state, model_dir / MODEL_WEIGHTS)
    info.save(model_dir / MODEL_INFO)
    logger.info("saved model to %s", model_dir)
    return model_dir


def fracture_probability(logits: torch.Tensor) -> np.ndarray:
    """P(fracture) = softmax(logits)[:, 1] as float32 numpy: the one place logits become probabilities."""
    return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy().astype(np.float32)


class OnnxNetwork:
    """An ONNX Runtime session behind the call interface of a torch network (tensor in, logits out)."""

    def __init__(self, path: str | PathLike, providers: list[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        if hasattr(ort, "disable_telemetry_events"):  # else it writes a database under ~/.cache
            ort.disable_telemetry_events()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # No CPU arena: it keeps the peak of every batch shape it has seen (the backend choice runs whole
        # batches) for the life of the session; without it, speed measured the same (docs/performance.md)
        options.enable_cpu_mem_arena = False
        if threads:  # scoring shares the cores with decode workers: do not oversubscribe
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelPackageError(self.path, f"ONNX Runtime cannot load the model: {err}") from err
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        (logits,) = self.session.run(None, {self.input_name: array.astype(np.float32, copy=False)})
        return torch.from_numpy(logits)

    def eval(self) -> OnnxNetwork:
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxNetwork:
        return self


@dataclass
class LoadedModel:
    """A network ready for inference, its ``ModelInfo``, and where and in which format it came from."""

    network: Any
    info: ModelInfo
    path: Path
    format: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def threshold(self) -> float:
        return float(self.info.threshold)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """P(fracture) for a preprocessed batch (N, C, H, W[, D])."""
        return fracture_probability(self.network(images.to(self.device) if self.format != "onnx" else images))


def _resolve_model_file(path: Path) -> Path:
    """A bundle folder (uses ``models/``), a model folder, or a model file."""
    if path.is_dir():
        folder = path / "models" if (path / "models" / MODEL_INFO).is_file() else path
        for name in (MODEL_WEIGHTS, MODEL_TORCHSCRIPT, MODEL_ONNX):
            if (folder / name).is_file():
                return folder / name
        raise ModelPackageError(path, f"no {MODEL_WEIGHTS}, {MODEL_TORCHSCRIPT} or {MODEL_ONNX} in this folder")
    if not path.is_file():
        raise ModelPackageError(path, "model path not found")
    return path


def load_model(path: str | PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model for inference from a bundle folder, a model folder or a .pt/.ts/.onnx file.

    ``model_info.json`` must sit beside the model file. ``.pt`` weights are read with
    ``weights_only=True`` into a network rebuilt with ``build_network(**info.network)``;
    ``.onnx`` returns an ONNX Runtime backed object with the same call interface.
    """
    model_file = _resolve_model_file(Path(path))
    fmt = _FORMATS.get(model_file.suffix.lower())
    if fmt is None:
        raise ModelPackageError(model_file, f"unknown model format {model_file.suffix!r} (expected .pt, .ts, .onnx)")
    info = ModelInfo.load(model_file.parent / MODEL_INFO)
    device = torch.device(device)
    if fmt == "pytorch":
        from monai_fracture.networks import build_network

        state = extract_state_dict(safe_torch_load(model_file, map_location=device), model_file)
        kwargs = {k: v for k, v in info.network.items() if k != "pretrained"}
        try:
            network = build_network(**kwargs, pretrained=False)
        except (TypeError, ValueError, KeyError) as err:
            raise ModelPackageError(model_file, f"network {kwargs} cannot be built: {err}") from err
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ModelPackageError(model_file, f"weights do not fit network {kwargs}: {err}") from err
        network = network.to(device).eval()
    elif fmt == "torchscript":
        try:
            network = torch.jit.load(str(model_file), map_location=device).eval()
        except RuntimeError as err:
            raise ModelPackageError(model_file, f"not a loadable TorchScript model: {err}") from err
    else:
        network = OnnxNetwork(model_file)
    logger.info("loaded %s model %s (threshold %.4f)", fmt, model_file, info.threshold)
    return LoadedModel(network=network, info=info, path=model_file, format=fmt, device=device)
