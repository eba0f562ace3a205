"""The backend for a run that fits in its first batch: checked at export, not again on the batch.

``model.backend_choice`` checks a candidate against fp32 on the run's first batch, which means
one eager fp32 forward pass before the candidate's own. For a long run that is a one-off; for a
run of one batch it is most of the model's cost: the first eager call pays oneDNN's start-up,
several times an ONNX Runtime session plus its call (see docs/performance.md, cold start). So a
CPU run whose images all fit in the first batch takes the first default backend whose agreement
with fp32 was already established when it was exported (``model.export`` loads the export back
and records the largest probability difference in ``model_info.json``), and fp32 itself (the
reference, nothing to check) when no such export is current. The manifest records the choice as
``how: "export-checked"`` with the export's recorded difference (``"reference"`` for fp32).
"""

from __future__ import annotations

import logging

import torch

from monai_fracture.model import backends as runtime
from monai_fracture.model.backend_choice import DEFAULT_TOLERANCE, BackendChoice, Trial
from monai_fracture.model.backend_table import DEFAULT_ORDER, EXPORTED, BackendUnavailable
from monai_fracture.model.backends import Backend
from monai_fracture.model.package import LoadedModel

logger = logging.getLogger(__name__)


def fits_first_batch(expected_images: int, batch_size: int) -> bool:
    """Whether the whole run is its first batch (``expected_images`` 0 means unknown: no)."""
    return 0 < expected_images <= batch_size


def export_difference(model: LoadedModel, name: str) -> float | None:
    """The probability difference to fp32 recorded when ``name`` was exported (None: unchecked)."""
    record = (getattr(model.info, "exports", None) or {}).get(name) or {}
    value = record.get("max_abs_difference")
    return float(value) if value is not None else None


def one_batch_backend(model: LoadedModel, batch_size: int, device: torch.device, threads: int | None = None,
                      tolerance: float = DEFAULT_TOLERANCE) -> tuple[Backend, BackendChoice] | None:
    """The backend for a CPU run of one batch, or None where the usual rule applies (GPU, not PyTorch)."""
    if device.type != "cpu" or model.format != "pytorch":
        return None
    trials = []
    for name in DEFAULT_ORDER["cpu"]:
        if name == "fp32":
            break
        if name not in EXPORTED:
            continue  # an eager variant has no export-time check: it would need the fp32 pass after all
        difference = export_difference(model, name)
        if difference is None or difference > tolerance:
            trials.append(Trial(name, difference, reason="no export-time check within tolerance"))
            continue
        try:
            backend = runtime.build_backend(name, model, device, threads=threads)
        except (BackendUnavailable, RuntimeError, ImportError) as err:
            trials.append(Trial(name, difference, reason=str(err).splitlines()[0] if str(err) else type(err).__name__))
            continue
        trials.append(Trial(name, difference, accepted=True, reason="checked against fp32 at export"))
        return backend, BackendChoice(name, "export-checked", tolerance, batch_size, trials)
    trials.append(Trial("fp32", 0.0, True, None, True, "the reference"))
    logger.info("one-batch run: no export checked within %g, running fp32", tolerance)
    return runtime.build_backend("fp32", model, device), BackendChoice("fp32", "reference", tolerance, batch_size,
                                                                       trials)


__all__ = ["export_difference", "fits_first_batch", "one_batch_backend"]
