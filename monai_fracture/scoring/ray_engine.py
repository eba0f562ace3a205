"""``--engine ray``: the scoring stages on a Ray cluster, through Ray Data.

The driver keeps what must happen once and in one place: listing the inputs, the journal
(resume), study bookkeeping, results.csv and the manifest. Ray runs the heavy stages:

- read + preprocess: stateless CPU tasks (``map_batches`` over a function), one row per work item;
- classify (+ Grad-CAM region of positives): an actor pool, each actor holding one ``Classifier``
  (``num_gpus`` per actor when the cluster has GPUs);
- DICOM outputs of a finished study: Ray tasks (``write_study_task``).

Ray Data streams blocks through these stages with backpressure, so only a bounded number of
decoded images exists at any time, whatever the archive size. Failed tasks are retried by Ray
(a killed worker or actor costs a retry, not a result); rows reach the journal only from the
driver, so nothing is recorded twice.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from monai_fracture.scoring.catalog import WorkItem

logger = logging.getLogger(__name__)

#: Ray's default GCS port, used when ``--address`` names a host without a port.
DEFAULT_RAY_PORT = 6379


class RayUnavailable(RuntimeError):
    """Ray is not installed or the cluster cannot be reached."""


@dataclass(frozen=True)
class RaySettings:
    """How the Ray engine sizes its stages (see docs/scaling.md).

    ``address``: an existing cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); ``None`` starts
    a local one bound to 127.0.0.1. ``actors``: classifier actors (default: one per GPU, else one).
    ``gpus_per_actor``: default 1 when the cluster has GPUs, else 0. ``read_cpus`` / ``actor_cpus``: CPUs
    reserved per read task / classifier actor; they must differ, or Ray Data fuses reading into the
    actors and decoding loses its parallelism. ``local_cpus``: CPUs of the local cluster (default: all).
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    read_cpus: float = 0.5
    actor_cpus: float = 1.0
    local_cpus: int | None = None


# --------------------------------------------------------------------------- cluster
def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:  # pragma: no cover - ray is a declared dependency
        raise RayUnavailable("--engine ray needs Ray Data: pip install 'monai-fracture[ray]'") from err
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the address, instead of Ray's long connection retries."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host:
        host, port = target, str(DEFAULT_RAY_PORT)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as err:
        raise RayUnavailable(f"Ray cluster at {address} is unreachable: {err}") from err


def connect(settings: RaySettings) -> bool:
    """Join ``settings.address`` or start a private local cluster; True when this call started Ray."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if settings.address:
        _check_reachable(settings.address)
        try:
            ray.init(address=settings.address, **common)
        except Exception as err:
            raise RayUnavailable(f"cannot join the Ray cluster at {settings.address}: {err}") from err
        return True
    ray.init(num_cpus=settings.local_cpus or os.cpu_count() or 1, _node_ip_address="127.0.0.1", **common)
    return True


def disconnect(started: bool) -> None:
    if started:
        _import_ray().shutdown()


# --------------------------------------------------------------------------- stages
def read_task(batch: dict[str, np.ndarray], preprocessing: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Ray task: the stream's ``read_and_preprocess`` over a batch of (pickled) work items."""
    from monai_fracture.scoring.stream import read_and_preprocess

    chain = _preprocessing(preprocessing)
    samples = [read_and_preprocess(pickle.loads(blob), chain) for blob in batch["item"]]
    shape = next((tuple(s["image"].shape) for s in samples if s["image"] is not None), (1,))
    images = np.zeros((len(samples), *shape), dtype=np.float32)
    for i, sample in enumerate(samples):
        if sample["image"] is not None and tuple(sample["image"].shape) == shape:
            images[i] = sample["image"].numpy()
        elif sample["image"] is not None:  # a fixed-size preprocessing cannot get here; say so if it does
            sample["image"], sample["error"] = None, ("preprocessing_failed",
                                                      f"network input {tuple(sample['image'].shape)} != {shape}")
    return {"position": batch["position"], "item": batch["item"], "image": images,
            "error": np.array([pickle.dumps(s["error"]) for s in samples], dtype=object),
            "geometry": np.array([pickle.dumps(s.get("geometry")) for s in samples], dtype=object)}


_PREPROCESSING_CACHE: dict[str, Any] = {}


def _preprocessing(kwargs: Mapping[str, Any]):
    """One MONAI preprocessing chain per worker process and model (built once, reused by every task)."""
    key = json.dumps(kwargs, sort_keys=True, default=str)
    if key not in _PREPROCESSING_CACHE:
        from monai_fracture.transforms.presets import build_preprocessing

        _PREPROCESSING_CACHE[key] = build_preprocessing(**dict(kwargs), load=False)
    return _PREPROCESSING_CACHE[key]


class ClassifierActor:
    """Ray actor: the stream's ``classify_batch`` and, for positive radiographs, ``localise_batch``."""

    def __init__(self, model: str, device: str, threshold: float, backend: str, regions: bool, heatmaps: bool) -> None:
        import torch

        from monai_fracture.model.classifier import Classifier

        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        self.classifier = Classifier(model, device=device, backend=backend)
        self.threshold, self.regions, self.heatmaps = threshold, regions, heatmaps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from monai_fracture.scoring.stream import classify_batch, localise_batch, needs_region

        items = [pickle.loads(blob) for blob in batch["item"]]
        errors = [pickle.loads(blob) for blob in batch["error"]]
        geometry = [pickle.loads(blob) for blob in batch["geometry"]]
        samples = [{"index": i, "image": None if error else torch.from_numpy(np.ascontiguousarray(batch["image"][i])),
                    "error": error, "geometry": geometry[i]} for i, error in enumerate(errors)]
        scores = classify_batch(samples, items, self.classifier, self.threshold)
        wanted = [self.regions and s.result is not None and needs_region(s.item, s.result, self.classifier)
                  for s in scores]
        located = localise_batch([s for s, w in zip(scores, wanted) if w], self.classifier, self.heatmaps)
        evidence = [next(located) if w else None for w in wanted]
        scores = [replace(s, cam_input=None) for s in scores]  # the network inputs stay in this actor
        return {"position": batch["position"], "score": np.array([pickle.dumps(s) for s in scores], dtype=object),
                "evidence": np.array([pickle.dumps(e) for e in evidence], dtype=object),
                "pid": np.full(len(scores), os.getpid())}


def ray_batches(settings: RaySettings, batch_size: int, regions: bool, heatmaps: bool):
    """A ``scoring.stream.BatchSource`` that runs read tasks and classifier actors on the Ray cluster.

    Batches come back as they finish (not in item order): the stream's study collector counts, so
    studies still complete exactly once.
    """

    def source(family: str, items: list[WorkItem], classifier: Any, threshold: float):
        ray = _import_ray()
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = False
        context.enable_progress_bars = False
        gpus = float(ray.cluster_resources().get("GPU", 0))
        gpus_per_actor = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        actors = settings.actors or max(1, int(gpus // gpus_per_actor) if gpus_per_actor else 1)
        preprocessing = {**classifier.info.preprocessing, "modality": classifier.modality}
        rows = [{"position": i, "item": pickle.dumps(item)} for i, item in enumerate(items)]
        dataset = (
            ray.data.from_items(rows, override_num_blocks=max(1, -(-len(items) // batch_size)))
            .map_batches(read_task, batch_size=batch_size, batch_format="numpy",
                         fn_kwargs={"preprocessing": preprocessing}, num_cpus=settings.read_cpus)
            .map_batches(
                ClassifierActor, batch_size=batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus_per_actor or None,
                num_cpus=settings.actor_cpus,
                fn_constructor_kwargs={
                    "model": os.fspath(classifier.model.path),
                    "device": "cuda" if gpus_per_actor else str(classifier.device),
                    "threshold": threshold, "backend": classifier.requested_backend,
                    "regions": regions, "heatmaps": heatmaps,
                },
            )
        )
        for out in dataset.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
            scores = [pickle.loads(blob) for blob in out["score"]]
            evidence = {i: e for i, blob in enumerate(out["evidence"]) if (e := pickle.loads(blob)) is not None}
            yield scores, evidence

    return source


class RayReportPool:
    """The report pool of the local engine, as Ray tasks: ``submit`` returns a ``concurrent.futures.Future``.

    Writing is atomic and the journal records a study only when its future is done, so a retried
    or lost task never leaves half a study behind.
    """

    def __init__(self, cpus: float = 0.5, retries: int = 3) -> None:
        self._ray = _import_ray()
        self._options = {"num_cpus": cpus, "max_retries": retries}
        self._remote: dict[Any, Any] = {}

    def submit(self, fn: Any, *args: Any):
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(**self._options)(fn)
        return self._remote[fn].remote(*args).future()

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to stop: the driver waits on the futures it holds before it calls this."""


class RayEngine:
    """``--engine ray`` for ``score_paths``: a context that joins (or starts) the cluster, and the two
    things the run asks of an engine: its batch source for the stream and its report pool."""

    name = "ray"

    def __init__(self, settings: RaySettings | None = None) -> None:
        self.settings = settings or RaySettings()
        self._started = False
        self._depth = 0  # re-entrant: a DICOMweb run holds the cluster across its chunks' score_paths calls

    def __enter__(self) -> RayEngine:
        if self._depth == 0:
            self._started = connect(self.settings)
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            disconnect(self._started)
            self._started = False

    def batches(self, batch_size: int, regions: bool, heatmaps: bool):
        return ray_batches(self.settings, batch_size, regions, heatmaps)

    def report_pool(self) -> RayReportPool:
        return RayReportPool()


def engine_for(engine: str | RayEngine | None, settings: RaySettings | None = None,
               sharded: bool = False) -> RayEngine | None:
    """``"local"``/None -> None (the stream's own loop); ``"ray"`` or a ``RayEngine`` -> a ``RayEngine``."""
    if engine in (None, "local"):
        return None
    if engine != "ray" and not isinstance(engine, RayEngine):
        raise ValueError(f"unknown engine {engine!r}; choose local or ray")
    if sharded:
        raise ValueError("--engine ray partitions the work itself: drop --shard (and torchrun)")
    return engine if isinstance(engine, RayEngine) else RayEngine(settings)


# --------------------------------------------------------------------------- command line
def add_arguments(parser: Any) -> None:
    """``score`` options of the engine choice (``--engine``) and of the Ray engine."""
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local (default): this process and its workers; ray: Ray Data stages on a Ray cluster "
                        "(docs/scaling.md)")
    parser.add_argument("--address", metavar="HOST:PORT",
                        help="--engine ray: join this Ray cluster (HOST:PORT, ray://HOST:PORT or auto); "
                        "default: start a local one on 127.0.0.1")
    parser.add_argument("--ray-actors", type=int, metavar="N",
                        help="--engine ray: classifier actors (default: one per GPU, else one)")
    parser.add_argument("--ray-gpus-per-actor", type=float, metavar="G",
                        help="--engine ray: GPUs per classifier actor (default 1 when the cluster has GPUs, else 0)")
    parser.add_argument("--ray-read-cpus", type=float, default=RaySettings.read_cpus, metavar="C",
                        help=f"--engine ray: CPUs per read/preprocess task (default {RaySettings.read_cpus})")


def engine_from_arguments(args: Any) -> str | RayEngine:
    """``"local"`` or a ``RayEngine`` from parsed ``score`` arguments; ``ValueError`` names a bad combination."""
    if args.engine != "ray":
        if args.address or args.ray_actors or args.ray_gpus_per_actor is not None:
            raise ValueError("--address and --ray-* options need --engine ray")
        return "local"
    if args.ray_actors is not None and args.ray_actors < 1:
        raise ValueError("--ray-actors must be >= 1")
    if not 0 < args.ray_read_cpus or args.ray_read_cpus == RaySettings.actor_cpus:
        raise ValueError(f"--ray-read-cpus must be > 0 and differ from {RaySettings.actor_cpus} (the actors' CPUs)")
    return RayEngine(RaySettings(address=args.address, actors=args.ray_actors, gpus_per_actor=args.ray_gpus_per_actor,
                                 read_cpus=args.ray_read_cpus))
