"""The rule that picks a backend: fastest among those that agree with fp32.

``choose_backend`` is the rule scoring follows with ``--backend auto``: a candidate qualifies
when its P(fracture) on a real batch stays within ``tolerance`` (1e-3) of fp32 and every
decision at the model's threshold is identical; among those the fastest (best of a few timed
passes over the run's first batch, taking turns) wins. The measurement is cached per model, device, machine and
batch size (``model.backend_cache``), so later runs only re-check agreement on their first batch.
It runs once per model and run, from ``Classifier.prepare``.

Every network call of the choice sees at most ``CHOICE_IMAGES_PER_CALL`` images: eager fp32 on a
whole batch of 16 at 320 px held about 0.6 GB of activations at once, the largest transient of a
scoring run (docs/performance.md, Memory). Probabilities do not depend on how a batch is split.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from monai_fracture.model import backends as runtime
from monai_fracture.model.backend_cache import cache_key, read_cache, write_cache
from monai_fracture.model.backend_table import AUTO_CANDIDATES, DEFAULT_ORDER, BackendUnavailable
from monai_fracture.model.backends import Backend
from monai_fracture.model.package import LoadedModel

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-3
#: Images per network call while backends are checked and raced (memory: see the module docstring).
CHOICE_IMAGES_PER_CALL = 4


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
        backend = runtime.build_backend(name, model, device, threads=threads)
        backend.micro_batch = CHOICE_IMAGES_PER_CALL
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
    backend.micro_batch = None  # the choice's own call size; a run's is measured below
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
        return runtime.build_backend(model.format, model, device, threads), BackendChoice(model.format, "native", tolerance, size)
    reference_backend = runtime.build_backend("fp32", model, device)
    reference_backend.micro_batch = CHOICE_IMAGES_PER_CALL
    reference = reference_backend.predict_proba(batch)
    if requested != "auto":
        backend = reference_backend if requested == "fp32" else runtime.build_backend(requested, model, device, threads)
        backend.micro_batch = CHOICE_IMAGES_PER_CALL
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


__all__ = ["CHOICE_IMAGES_PER_CALL", "DEFAULT_TOLERANCE", "BackendChoice", "Trial", "choose_backend"]
