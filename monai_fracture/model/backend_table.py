"""The runtime backends a model can run on, and the one place that says whether one can run here.

``BACKEND_TABLE`` is the only list of backends: the CLI help, ``Classifier`` validation,
``build_backend`` and the ``auto`` candidates all read it. ``check_backend`` is the single
validation point and the only raiser of ``BackendUnavailable``. Nothing here imports torch at
module level, so the CLI can render ``--help`` from the table without loading PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BackendUnavailable(ValueError):
    """A backend that cannot run this model here, with the reason (missing export, no GPU, ...)."""


@dataclass(frozen=True)
class BackendSpec:
    """One way to run the same weights: what it is, where it runs, what it needs."""

    name: str
    description: str
    devices: tuple[str, ...] = ("cpu", "cuda")
    requires: str = ""  # beyond PyTorch; checked by ``unavailable_reason``
    auto: bool = True  # a candidate of ``--backend auto``


# Table order is the order ``auto`` tries candidates in when it measures (onnx measured fastest on CPUs).
BACKEND_TABLE: tuple[BackendSpec, ...] = (
    BackendSpec("onnx", "the exported model.onnx under ONNX Runtime",
                requires="a current model.onnx export; onnxruntime (onnxruntime-gpu on CUDA)"),
    BackendSpec("channels_last", "eager PyTorch in NHWC layout (oneDNN's fast path on CPU)"),
    BackendSpec("torchscript", "the exported model.ts", requires="a current model.ts export"),
    BackendSpec("bf16", "bfloat16 autocast", requires="bfloat16 support on a GPU"),
    BackendSpec("fp16", "float16 autocast", devices=("cuda",)),
    BackendSpec("fp32", "eager PyTorch, the reference every other backend is checked against"),
    # torch.compile is left to explicit requests: its first compile costs about a minute on a CPU.
    BackendSpec("compile", "torch.compile (first call compiles for about a minute on a CPU)", auto=False),
)
BACKEND_SPECS: dict[str, BackendSpec] = {spec.name: spec for spec in BACKEND_TABLE}
BACKENDS: tuple[str, ...] = tuple(BACKEND_SPECS)
AUTO_CANDIDATES: tuple[str, ...] = tuple(spec.name for spec in BACKEND_TABLE if spec.auto)
# Without a measurement (small runs, nothing cached), the order that measured fastest on CPUs.
DEFAULT_ORDER: dict[str, tuple[str, ...]] = {"cpu": ("onnx", "channels_last", "fp32"), "cuda": ("fp32",)}
EXPORTED = {"onnx": "model.onnx", "torchscript": "model.ts"}


def backend_help() -> str:
    """The ``--backend`` help text, one entry per table row (so no backend can be left out)."""
    entries = []
    for spec in BACKEND_TABLE:
        where = "" if spec.devices == ("cpu", "cuda") else f", {'/'.join(d.upper() for d in spec.devices)} only"
        entries.append(f"{spec.name} ({spec.description}{where})")
    auto = ", ".join(AUTO_CANDIDATES)
    return (f"how the network runs: auto (default) = the fastest of {auto} whose probabilities stay within 1e-3 "
            f"of fp32 with identical decisions, checked on the first batch (in a run of one batch: when it was "
            f"exported); or name one of: " + "; ".join(entries))


def export_is_current(model: Any, name: str) -> tuple[bool, str]:
    """Whether ``model.onnx`` / ``model.ts`` beside ``model.pt`` was exported from it (and why not)."""
    from monai_fracture.model.package import file_digest

    path = model.path.parent / EXPORTED[name]
    if not path.is_file():
        return False, (f"{path.name} not found beside {model.path.name} "
                       f"(python -m monai_fracture.model.export {model.path.parent})")
    record = (getattr(model.info, "exports", None) or {}).get(name) or {}
    source = record.get("source_sha256")
    if not source:
        return False, f"{path.name} has no export record in model_info.json: export it again to use it"
    if source != file_digest(model.path):
        return False, f"{path.name} was exported from another {model.path.name} (stale): export it again"
    if record.get("sha256") and record["sha256"] != file_digest(path):
        return False, f"{path.name} changed after export: export it again"
    return True, ""


def onnx_providers(device_type: str) -> tuple[list[str], str]:
    """ONNX Runtime execution providers for ``device_type``, or ``([], reason)`` when there are none."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        return [], f"onnxruntime is not installed ({err})"
    if device_type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return [], "onnx on cuda needs onnxruntime-gpu (CUDAExecutionProvider not available)"
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], ""
    return ["CPUExecutionProvider"], ""


def unavailable_reason(name: str, model: Any, device: Any) -> str:
    """``""`` when backend ``name`` can run ``model`` (a ``LoadedModel``) on ``device``, else why not.

    Cheap checks only (files, records, device capabilities); nothing is built or run.
    """
    spec = BACKEND_SPECS.get(name)
    if spec is None:
        return f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}"
    if model.format != "pytorch":
        return "" if name == model.format else \
            f"{model.path.name} is a {model.format} model: only backend {model.format!r} runs it"
    device_type = getattr(device, "type", str(device).split(":")[0])
    if device_type not in spec.devices:
        return f"{name} ({spec.description}) runs on {' or '.join(d.upper() for d in spec.devices)} only"
    if name == "bf16" and device_type == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            return "this GPU has no bfloat16 support"
    if name in EXPORTED:
        current, reason = export_is_current(model, name)
        if not current:
            return reason
    if name == "onnx":
        return onnx_providers(device_type)[1]
    return ""


def check_backend(name: str, model: Any, device: Any) -> None:
    """Raise ``BackendUnavailable`` (naming the backend and the reason) unless ``name`` can run here."""
    reason = unavailable_reason(name, model, device)
    if reason:
        raise BackendUnavailable(f"backend {name}: {reason}")


__all__ = [
    "AUTO_CANDIDATES",
    "BACKENDS",
    "BACKEND_SPECS",
    "BACKEND_TABLE",
    "BackendSpec",
    "BackendUnavailable",
    "DEFAULT_ORDER",
    "backend_help",
    "check_backend",
    "export_is_current",
    "onnx_providers",
    "unavailable_reason",
]
