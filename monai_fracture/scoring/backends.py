"""Ways to run one trained model, and the rule that picks one: fastest among those that agree with fp32.

A *backend* runs the same weights differently: ``fp32`` (eager PyTorch, the reference),
``channels_last`` (NHWC, oneDNN's fast path on CPU), ``bf16`` / ``fp16`` (autocast), ``compile``
(``torch.compile``), ``torchscript`` (the exported ``model.ts``) and ``onnx`` (the exported
``model.onnx`` under ONNX Runtime). Exported files are used only when ``model_info.json`` says
they were exported from the very ``model.pt`` beside them (``exports`` with its SHA-256), so a
retrained checkpoint never runs with a stale export.

``choose_backend`` is the rule scoring follows with ``--backend auto``: a candidate qualifies
when its P(fracture) on a real batch stays within ``tolerance`` (1e-3) of fp32 and every
decision at the model's threshold is identical; among those the fastest (best of a few timed
calls at the run's batch size, taking turns) wins. The measurement is cached per model, device, machine and
batch size, so later runs only re-check agreement on their first batch.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_fracture import cache
from monai_fracture.model_package import MODEL_ONNX, MODEL_TORCHSCRIPT, LoadedModel, OnnxNetwork, file_digest

logger = logging.getLogger(__name__)

BACKENDS = ("fp32", "channels_last", "bf16", "fp16", "compile", "torchscript", "onnx")
# torch.compile is left to explicit requests: its first compile costs about a minute on a CPU.
AUTO_CANDIDATES = ("onnx", "channels_last", "torchscript", "bf16", "fp16", "fp32")
# Without a measurement (small runs, nothing cached), the order that measured fastest on CPUs.
DEFAULT_ORDER = {"cpu": ("onnx", "channels_last", "fp32"), "cuda": ("fp32",)}
DEFAULT_TOLERANCE = 1e-3
CACHE_ENV = cache.CACHE_ENV


class BackendUnavailable(ValueError):
    """A backend that cannot run this model here, with the reason (missing export, no GPU, ...)."""


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
        """P(fracture) = softmax(logits)[:, 1] as float32 numpy."""
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
        return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy().astype(np.float32)


def _memory_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def _spatial_dims(model: LoadedModel) -> int:
    return int(model.info.network.get("spatial_dims", 3 if model.info.modality == "ct" else 2))


def export_path(model: LoadedModel, name: str) -> Path:
    """Where the exported file of backend ``name`` lives: beside ``model.pt``."""
    return model.path.parent / (MODEL_ONNX if name == "onnx" else MODEL_TORCHSCRIPT)


def export_is_current(model: LoadedModel, name: str) -> tuple[bool, str]:
    """Whether ``model.onnx`` / ``model.ts`` was exported from this ``model.pt`` (and why not)."""
    path = export_path(model, name)
    if not path.is_file():
        return False, f"{path.name} not found beside {model.path.name} (python -m monai_fracture.export {model.path.parent})"
    record = (getattr(model.info, "exports", None) or {}).get(name) or {}
    source = record.get("source_sha256")
    if not source:
        return False, f"{path.name} has no export record in model_info.json: export it again to use it"
    if source != file_digest(model.path):
        return False, f"{path.name} was exported from another {model.path.name} (stale): export it again"
    if record.get("sha256") and record["sha256"] != file_digest(path):
        return False, f"{path.name} changed after export: export it again"
    return True, ""


def _onnx_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailable("onnx on cuda needs onnxruntime-gpu (CUDAExecutionProvider not available)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def build_backend(name: str, model: LoadedModel, device: str | torch.device | None = None,
                  threads: int | None = None) -> Backend:
    """Backend ``name`` for ``model`` on ``device``; ``BackendUnavailable`` says why it cannot be built.

    Every PyTorch variant gets its own copy of the network, so the fp32 reference is never
    touched (the same object also serves Grad-CAM).
    """
    device = torch.device(device if device is not None else model.device)
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    if model.format != "pytorch":
        if name != model.format:
            raise BackendUnavailable(f"{model.path.name} is a {model.format} model: only backend {model.format!r} runs it")
        return Backend(name, model.network, device)
    spatial_dims = _spatial_dims(model)
    if name in ("onnx", "torchscript"):
        current, reason = export_is_current(model, name)
        if not current:
            raise BackendUnavailable(reason)
        path = export_path(model, name)
        if name == "onnx":
            return Backend(name, OnnxNetwork(path, providers=_onnx_providers(device), threads=threads), device)
        return Backend(name, torch.jit.load(str(path), map_location=device).eval(), device)
    if name == "fp32":
        return Backend(name, model.network, device)
    if name == "fp16" and device.type != "cuda":
        raise BackendUnavailable("fp16 autocast runs on CUDA only")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BackendUnavailable("this GPU has no bfloat16 support")
    memory_format = _memory_format(spatial_dims)
    network = copy.deepcopy(model.network).to(device=device, memory_format=memory_format).eval()
    if name == "channels_last":
        return Backend(name, network, device, memory_format=memory_format)
    if name in ("bf16", "fp16"):
        dtype = torch.bfloat16 if name == "bf16" else torch.float16
        return Backend(name, network, device, memory_format=memory_format, autocast_dtype=dtype)
    # compile: the inductor cache defaults to /tmp; keep it per user and reusable
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return Backend(name, torch.compile(network), device, memory_format=memory_format)


def available_backends(model: LoadedModel, device: str | torch.device | None = None,
                       names: Sequence[str] = AUTO_CANDIDATES) -> dict[str, str]:
    """``{name: ""}`` for the backends that can be built, ``{name: reason}`` for those that cannot (cheap checks)."""
    device = torch.device(device if device is not None else model.device)
    out: dict[str, str] = {}
    for name in names:
        reason = ""
        if model.format != "pytorch":
            reason = "" if name == model.format else f"only {model.format} for a {model.format} model"
        elif name in ("onnx", "torchscript"):
            reason = export_is_current(model, name)[1]
            if not reason and name == "onnx":
                try:
                    _onnx_providers(device)
                except (BackendUnavailable, ImportError) as err:
                    reason = str(err)
        elif name == "fp16" and device.type != "cuda":
            reason = "fp16 autocast runs on CUDA only"
        elif name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            reason = "this GPU has no bfloat16 support"
        out[name] = reason
    return out


@dataclass
class Trial:
    """One backend tried against fp32 on the same batch."""

    name: str
    max_abs_difference: float | None = None
    decisions_identical: bool | None = None
    seconds_per_image: float | None = None
    accepted: bool = False
    reason: str = ""


@dataclass
class BackendChoice:
    """What ran and why: ``how`` is requested, measured, cached, default or native."""

    name: str
    how: str
    tolerance: float
    batch_size: int
    trials: list[Trial] = field(default_factory=list)
    micro_batch: int | None = None
    micro_batch_seconds_per_image: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _agreement(reference: np.ndarray, probabilities: np.ndarray, threshold: float) -> tuple[float, bool]:
    difference = float(np.max(np.abs(reference - probabilities))) if reference.size else 0.0
    if not np.all(np.isfinite(probabilities)):
        difference = float("inf")
    identical = bool(np.array_equal(reference >= threshold, probabilities >= threshold))
    return difference, identical


def _time_once(backend: Backend, batch: torch.Tensor) -> float:
    started = time.perf_counter()
    backend.predict_proba(batch)
    if backend.device.type == "cuda":
        torch.cuda.synchronize(backend.device)
    return (time.perf_counter() - started) / max(1, len(batch))


def _race(backends: dict[str, Backend], batch: torch.Tensor, repeats: int) -> dict[str, float]:
    """Fastest seconds per image of each backend over ``repeats`` rounds, taking turns.

    Turns spread a busy spell of the machine over all candidates, and the minimum is the
    figure least inflated by other load (the call that checked agreement was the warm-up).
    """
    best = {name: float("inf") for name in backends}
    for _ in range(max(1, repeats)):
        for name, backend in backends.items():
            best[name] = min(best[name], _time_once(backend, batch))
    return best


def _try(name: str, model: LoadedModel, batch: torch.Tensor, reference: np.ndarray, threshold: float,
         tolerance: float, device: torch.device, threads: int | None) -> tuple[Trial, Backend | None]:
    trial = Trial(name)
    try:
        backend = build_backend(name, model, device, threads=threads)
        probabilities = backend.predict_proba(batch)
    except (BackendUnavailable, RuntimeError, ImportError) as err:
        trial.reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return trial, None
    trial.max_abs_difference, trial.decisions_identical = _agreement(reference, probabilities, threshold)
    if trial.max_abs_difference > tolerance:
        trial.reason = f"max |P - P_fp32| = {trial.max_abs_difference:.2e} > {tolerance:g}"
    elif not trial.decisions_identical:
        trial.reason = "a decision differs from fp32 at the threshold"
    else:
        trial.accepted = True
    return trial, backend


MICRO_BATCHES = (1, 2, 4, 8)


def _best_micro_batch(backend: Backend, batch: torch.Tensor, rounds: int = 2) -> tuple[int, dict[str, float]]:
    """The per-call image count that runs ``batch`` fastest on this CPU.

    Measured here: EfficientNet at 320 px ran 208 img/s at batch 1 against 153 at batch 16 on
    ONNX Runtime (44 against 17 in eager PyTorch), because a single image's activations stay in
    cache. The whole batch is always one candidate, so this never makes things slower.
    """
    sizes = sorted({s for s in MICRO_BATCHES if s < len(batch)} | {len(batch)})
    best = {str(s): float("inf") for s in sizes}
    for _ in range(rounds):
        for size in sizes:
            backend.micro_batch = size
            best[str(size)] = min(best[str(size)], _time_once(backend, batch))
    winner = int(min(best, key=best.get))
    backend.micro_batch = winner
    return winner, best


def choose_backend(
    model: LoadedModel,
    batch: torch.Tensor,
    threshold: float,
    requested: str = "auto",
    device: str | torch.device | None = None,
    measure: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int | None = None,
    repeats: int = 3,
    use_cache: bool = True,
    expected_images: int = 0,
) -> tuple[Backend, BackendChoice]:
    """The backend to score with, checked against fp32 on ``batch`` (a real preprocessed batch).

    ``requested`` other than ``auto`` is honoured as long as it can be built; its agreement with
    fp32 is still measured and a breach of ``tolerance`` is logged as a warning. ``auto`` uses
    the cached choice for this model/device/machine/batch size, else measures every candidate
    when ``measure`` (and caches the winner), else takes the first of ``DEFAULT_ORDER`` that
    agrees with fp32. On a CPU, when the run is long enough (``measure`` or ``expected_images``
    at least four batches), the number of images per network call is measured too
    (``micro_batch``; cached with a measured choice).
    """
    device = torch.device(device if device is not None else model.device)
    batch = torch.as_tensor(batch).as_subclass(torch.Tensor) if hasattr(batch, "as_tensor") else batch
    backend, choice = _choose(model, batch, threshold, requested, device, measure, tolerance, threads, repeats,
                              use_cache)
    if device.type != "cpu" or len(batch) < 2:
        return backend, choice
    key = cache_key(model, device, len(batch), threads)
    entry = read_cache().get(key) if use_cache else None
    if choice.how == "cached" and entry and entry.get("micro_batch"):
        backend.micro_batch = int(entry["micro_batch"])
    elif measure or expected_images >= 4 * len(batch):
        backend.micro_batch, choice.micro_batch_seconds_per_image = _best_micro_batch(backend, batch)
        if choice.how == "measured" and entry is not None:
            write_cache(key, {**entry, "micro_batch": backend.micro_batch})
    choice.micro_batch = backend.micro_batch
    return backend, choice


def _choose(model: LoadedModel, batch: torch.Tensor, threshold: float, requested: str, device: torch.device,
            measure: bool, tolerance: float, threads: int | None, repeats: int,
            use_cache: bool) -> tuple[Backend, BackendChoice]:
    """``choose_backend`` up to the backend itself (the images-per-call step comes after)."""
    size = int(batch.shape[0])
    if model.format != "pytorch":
        return build_backend(model.format, model, device, threads), BackendChoice(model.format, "native", tolerance, size)
    reference_backend = build_backend("fp32", model, device)
    reference = reference_backend.predict_proba(batch)
    if requested != "auto":
        backend = reference_backend if requested == "fp32" else build_backend(requested, model, device, threads)
        trial = Trial(requested, accepted=True)
        trial.max_abs_difference, trial.decisions_identical = _agreement(reference, backend.predict_proba(batch), threshold)
        if trial.max_abs_difference > tolerance or not trial.decisions_identical:
            logger.warning("backend %s: max |P - P_fp32| = %.2e, decisions identical: %s (requested, so used anyway)",
                           requested, trial.max_abs_difference, trial.decisions_identical)
        return backend, BackendChoice(requested, "requested", tolerance, size, [trial])

    key = cache_key(model, device, size, threads)
    cached = read_cache().get(key) if use_cache else None
    if measure and not cached:
        trials, backends = [], {}
        for name in AUTO_CANDIDATES:
            trial, backend = (
                _try(name, model, batch, reference, threshold, tolerance, device, threads)
                if name != "fp32" else (Trial("fp32", 0.0, True, None, True), reference_backend)
            )
            trials.append(trial)
            if backend is not None and trial.accepted:
                backends[name] = backend
        fastest = _race(backends, batch, repeats)
        for trial in trials:
            trial.seconds_per_image = fastest.get(trial.name)
        winner = min((t for t in trials if t.accepted), key=lambda t: t.seconds_per_image)
        if use_cache:
            write_cache(key, {"backend": winner.name, "trials": [dataclasses.asdict(t) for t in trials],
                              "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        logger.info("backend %s chosen by measurement (%s)", winner.name, ", ".join(
            f"{t.name} {1 / t.seconds_per_image:.1f} img/s" if t.seconds_per_image else f"{t.name}: {t.reason}"
            for t in trials))
        return backends[winner.name], BackendChoice(winner.name, "measured", tolerance, size, trials)

    order = [cached["backend"]] if cached else []
    order += [n for n in DEFAULT_ORDER.get(device.type, ("fp32",)) if n not in order]
    trials = []
    for name in order:
        if name == "fp32":
            trials.append(Trial("fp32", 0.0, True, None, True))
            return reference_backend, BackendChoice("fp32", "cached" if cached and cached["backend"] == "fp32" else "default",
                                                    tolerance, size, trials)
        trial, backend = _try(name, model, batch, reference, threshold, tolerance, device, threads)
        trials.append(trial)
        if backend is not None and trial.accepted:
            how = "cached" if cached and name == cached["backend"] else "default"
            return backend, BackendChoice(name, how, tolerance, size, trials)
        logger.info("backend %s not used: %s", name, trial.reason)
    trials.append(Trial("fp32", 0.0, True, None, True))
    return reference_backend, BackendChoice("fp32", "default", tolerance, size, trials)


# -- the cache of measured choices ----------------------------------------------------------------
def cache_dir() -> Path:
    """``$MONAI_FRACTURE_CACHE``, else ``$XDG_CACHE_HOME/monai-fracture``, else ``~/.cache/monai-fracture``."""
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


def _cache_file() -> Path:
    return cache_dir() / "backends.json"


def read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache(key: str, entry: dict[str, Any]) -> None:
    """Add one measured choice; a cache that cannot be written only costs a re-measurement later."""
    from monai_fracture.files import atomic_write_bytes

    try:
        data = read_cache()
        data[key] = entry
        path = _cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    except OSError as err:
        logger.warning("could not cache the backend choice in %s: %s", _cache_file(), err)
