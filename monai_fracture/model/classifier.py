"""A loaded model plus its preprocessing: scores images that are already in memory.

This is the piece a MONAI Deploy operator or the PACS node reuses: give it ``(array, meta)``
pairs as ``monai_fracture.io.read_image`` returns them and get P(fracture) back. Batch
scoring (``score_paths``) uses the same object, with decoding moved into DataLoader workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _load(model: Any, device: str | torch.device):
    from monai_fracture.model.package import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model
    return load_model(model, device=device)


def channel_first(array: np.ndarray, meta: Mapping[str, Any]):
    """A channel-first MONAI ``MetaTensor`` carrying our metadata (and spacing as MONAI expects)."""
    from monai.data import MetaTensor

    tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None]
    meta_dict = {k: v for k, v in dict(meta).items() if v is not None and k != "affine"}
    affine = meta.get("affine")
    if affine is None:
        affine = torch.eye(4)
        for axis, value in enumerate(meta.get("spacing") or ()):
            if axis < 3:
                affine[axis, axis] = float(value)
    return MetaTensor(tensor, affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)), meta=meta_dict)


def undo_spatial_operations(values: torch.Tensor, operations: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Map a channel-first tensor in network-input geometry back through recorded pads and resizes.

    Reads MONAI's ``applied_operations`` (``SpatialPad``: ``padded`` widths; ``Resize``:
    ``orig_size``) newest first, so a heatmap lands on the source pixels it explains.
    """
    out = values
    for op in reversed(list(operations)):
        name = str(op.get("class", ""))
        extra = op.get("extra_info") or {}
        if name in {"SpatialPad", "BorderPad", "DivisiblePad"} and "padded" in extra:
            spatial_pads = list(extra["padded"])[1:]  # first entry is the channel axis
            index = [slice(None)]
            for (before, after), size in zip(spatial_pads, out.shape[1:]):
                index.append(slice(int(before), int(size) - int(after)))
            out = out[tuple(index)]
        elif name == "Resize" and op.get("orig_size") is not None:
            size = tuple(int(s) for s in op["orig_size"])
            mode = "bilinear" if len(size) == 2 else "trilinear"
            out = torch.nn.functional.interpolate(out[None].float(), size=size, mode=mode, align_corners=False)[0]
    return out


@dataclass(frozen=True)
class InputGeometry:
    """How a network input maps back onto its source pixels: the source shape and MONAI's applied operations."""

    shape: tuple[int, ...]
    operations: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(cls, processed: Any, shape: Sequence[int]) -> "InputGeometry":
        """The geometry of ``processed`` (the preprocessing's output, a ``MetaTensor``) from an image of ``shape``."""
        operations = tuple(getattr(processed, "applied_operations", None) or ())
        return cls(tuple(int(n) for n in shape), operations)


@dataclass(frozen=True)
class CamInput:
    """A network input (C, *spatial) for a heatmap, with the geometry that maps the map back to the source."""

    image: torch.Tensor
    geometry: InputGeometry


class Classifier:
    """A model ready for inference with the preprocessing stored beside it (``ModelInfo``).

    ``model`` is a ``LoadedModel`` or anything ``model.package.load_model`` accepts (bundle
    folder, model folder, ``model.pt`` / ``model.ts`` / ``model.onnx``). ``threshold`` overrides
    the model's own decision threshold. ``backend`` is ``auto`` (the fastest variant that agrees
    with fp32, see ``model.backend_choice``) or one of ``model.backend_table.BACKENDS``.
    """

    def __init__(
        self,
        model: Any,
        device: str | torch.device = "cpu",
        threshold: float | None = None,
        preprocessing: Any = None,
        backend: str = "auto",
    ) -> None:
        from monai_fracture.model.backend_table import check_backend

        self.device = torch.device(device)
        self.model = _load(model, self.device)
        self.info = self.model.info
        self.threshold = float(self.info.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")
        self.modality = str(self.info.preprocessing.get("modality", getattr(self.info, "modality", "xr")))
        self.use_model_heatmap_recipe()
        if self.info.heatmap and self.supports_heatmaps:
            from monai_fracture.model.gradcam import check_heatmap_layers
            from monai_fracture.model.package import ModelPackageError

            try:  # a misspelt layer fails here, not on every positive image's heatmap
                check_heatmap_layers(self.model.network, self.info.heatmap)
            except ValueError as err:
                raise ModelPackageError(self.model.path, str(err)) from err
        if backend != "auto":
            check_backend(backend, self.model, self.device)  # fail before any image is read
        self.preprocessing = preprocessing if preprocessing is not None else self._build_preprocessing()
        # How the network runs (model.backend_choice): chosen by prepare(), fp32 checked.
        self.requested_backend = backend
        self.backend = None
        self.backend_choice = None

    # Heatmap recipe (model.gradcam): these defaults, then the model's own (ModelInfo.heatmap); set on an
    # instance to compare others (use_model_heatmap_recipe() undoes that).
    heatmap_layer: str | Sequence[str] | None = None  # None = the family default (model.gradcam.default_layers)
    heatmap_method = "layercam"
    heatmap_fusion = "mean"  # of the family's layers: the best FracAtlas pointing (docs/validation.md, Localisation)
    heatmap_flip = False
    heatmap_scale = 1.0  # >1: the heatmap pass alone sees a larger input

    def use_model_heatmap_recipe(self) -> None:
        """Back to the model's own heatmap recipe (``model_info.json`` ``heatmap``), else the class defaults."""
        from monai_fracture.model.gradcam import heatmap_settings

        for key in ("heatmap_method", "heatmap_layer", "heatmap_fusion", "heatmap_flip", "heatmap_scale"):
            vars(self).pop(key, None)
        for key, value in heatmap_settings(self.info.heatmap or {}).items():
            setattr(self, key, value)

    @property
    def model_id(self) -> str:
        """``name@version``: the ``model`` column of results.csv."""
        return f"{self.info.name}@{self.info.version}"

    @property
    def spatial_dims(self) -> int:
        return 3 if self.modality == "ct" else 2

    def _build_preprocessing(self):
        from monai_fracture.transforms.presets import build_preprocessing

        kwargs = dict(self.info.preprocessing)
        kwargs.setdefault("modality", self.modality)
        kwargs["load"] = False
        return build_preprocessing(**kwargs)

    def preprocess(self, array: np.ndarray, meta: Mapping[str, Any]) -> torch.Tensor:
        """One image as read by ``monai_fracture.io`` -> the network input (C, *spatial)."""
        output = self.preprocess_meta(array, meta)
        return torch.as_tensor(output).as_subclass(torch.Tensor) if hasattr(output, "as_tensor") else output

    def preprocess_meta(self, array: np.ndarray, meta: Mapping[str, Any]):
        """Like ``preprocess`` but keeps the ``MetaTensor`` (with its applied operations) for inversion."""
        data = self.preprocessing({"image": channel_first(array, meta)})
        image = data["image"] if isinstance(data, Mapping) else data
        return image

    @property
    def prepared(self) -> bool:
        return self.backend is not None

    def prepare(self, batch: torch.Tensor, expected_images: int = 0, min_images_to_measure: int = 1000):
        """Choose (or build the requested) backend once, checking it against fp32 on ``batch``.

        ``batch`` is a real preprocessed batch at the run's batch size. With ``auto``, a run of at
        least ``min_images_to_measure`` images times every candidate (and caches the winner, see
        ``model.backend_choice``); ``expected_images`` of four batches or more also measures the
        images per network call on a CPU; a CPU run that is all in ``batch`` takes a backend
        checked at export instead (``model.small_run``). Called by whoever runs the model, before ``predict``;
        returns the ``BackendChoice`` (also kept as ``backend_choice``).
        """
        from monai_fracture.model.backend_choice import choose_backend
        from monai_fracture.model.small_run import fits_first_batch, one_batch_backend

        batch = torch.as_tensor(batch).as_subclass(torch.Tensor) if hasattr(batch, "as_tensor") else batch
        chosen = None
        if self.requested_backend == "auto" and fits_first_batch(expected_images, len(batch)):
            chosen = one_batch_backend(self.model, len(batch), self.device, threads=torch.get_num_threads())
        self.backend, self.backend_choice = chosen or choose_backend(
            self.model, batch, self.threshold, requested=self.requested_backend, device=self.device,
            measure=expected_images >= min_images_to_measure, threads=torch.get_num_threads(),
            expected_images=expected_images,
        )
        logger.info("%s runs on backend %s (%s), %s image(s) per call", self.model_id, self.backend.name,
                    self.backend_choice.how, self.backend.micro_batch or len(batch))
        return self.backend_choice

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> np.ndarray:
        """P(fracture) for a preprocessed batch (N, C, *spatial), on the backend ``prepare`` chose."""
        if self.backend is None:
            raise RuntimeError(f"{self.model.path}: call Classifier.prepare(batch) before predict()")
        batch = torch.as_tensor(batch).as_subclass(torch.Tensor) if hasattr(batch, "as_tensor") else batch
        return self.backend.predict_proba(batch)

    def score(self, images: Sequence[tuple[np.ndarray, Mapping[str, Any]]], batch_size: int = 16) -> np.ndarray:
        """P(fracture) for in-memory images, ``batch_size`` at a time (``prepare`` on the first batch if needed)."""
        probabilities: list[np.ndarray] = []
        for start in range(0, len(images), max(1, batch_size)):
            chunk = images[start : start + batch_size]
            batch = torch.stack([self.preprocess(array, meta) for array, meta in chunk])
            if self.backend is None:
                self.prepare(batch)
            probabilities.append(self.predict(batch))
        return np.concatenate(probabilities) if probabilities else np.zeros(0, dtype=np.float32)

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        return np.asarray(probabilities) >= self.threshold

    def check_settings(self, device: str | torch.device | None = None, threshold: float | None = None,
                       backend: str | None = None) -> None:
        """Raise ``ValueError`` when a setting given beside this ``Classifier`` differs from its own.

        A ``Classifier`` carries its device, threshold and backend; a caller that also passes them
        (e.g. ``score_paths(model=classifier, threshold=...)``) must agree, rather than be ignored.
        """
        conflicts = []
        if threshold is not None and float(threshold) != self.threshold:
            conflicts.append(f"threshold {threshold} (the Classifier has {self.threshold})")
        if device is not None and torch.device(device) != self.device:
            conflicts.append(f"device {device} (the Classifier has {self.device})")
        if backend is not None and backend != self.requested_backend:
            conflicts.append(f"backend {backend} (the Classifier has {self.requested_backend})")
        if conflicts:
            raise ValueError(f"{self.model.path}: a Classifier keeps its own settings, but got "
                             + "; ".join(conflicts) + ": set them when building the Classifier instead")

    # -- Grad-CAM -----------------------------------------------------------------------------
    @property
    def supports_heatmaps(self) -> bool:
        return isinstance(self.model.network, torch.nn.Module) and self.model.format == "pytorch"

    def cam_layers(self) -> tuple[str, ...]:
        """The layers the heatmap reads: ``heatmap_layer`` when set ('last' = last convolution), else the family default."""
        from monai_fracture.model.gradcam import default_layers
        from monai_fracture.networks.registry import last_convolution

        if self.heatmap_layer is None:
            return default_layers(self.model.network)
        names = (self.heatmap_layer,) if isinstance(self.heatmap_layer, str) else tuple(self.heatmap_layer)
        return tuple(last_convolution(self.model.network) if n == "last" else n for n in names)

    def _heatmap_preprocessing(self):
        if self.heatmap_reuses_input:
            return self.preprocessing
        from monai_fracture.transforms.presets import build_preprocessing

        kwargs = dict(self.info.preprocessing)
        kwargs.update(modality=self.modality, load=False, size=int(round(int(kwargs["size"]) * self.heatmap_scale)))
        return build_preprocessing(**kwargs)

    @property
    def heatmap_reuses_input(self) -> bool:
        """Whether the heatmap sees the classification input itself (``heatmap_scale`` 1), so it needs no second read."""
        return self.heatmap_scale == 1.0 or "size" not in self.info.preprocessing

    def heatmap_input(self, array: np.ndarray, meta: Mapping[str, Any]) -> CamInput:
        """One image as read by ``monai_fracture.io`` -> the heatmap's network input and its geometry."""
        data = self._heatmap_preprocessing()({"image": channel_first(array, meta)})
        processed = data["image"] if isinstance(data, Mapping) else data
        image = torch.as_tensor(processed).as_subclass(torch.Tensor).float()
        return CamInput(image, InputGeometry.of(processed, np.shape(array)))

    def heatmap(self, array: np.ndarray, meta: Mapping[str, Any], method: str | None = None) -> np.ndarray:
        """Class activation map of the fracture class for one image, in the source geometry, in [0, 1] (1 = strongest).

        ``method`` overrides ``heatmap_method``. The raw map is cut to the image content (the
        letterbox padding removed), resized back to the source pixels, then scaled; see
        ``model.gradcam`` for why nothing is inverted and why LayerCAM on two layers.
        """
        return self.heatmaps([self.heatmap_input(array, meta)], method=method)[0]

    def heatmaps(self, inputs: Sequence[CamInput], method: str | None = None, batch_size: int = 16) -> list[np.ndarray]:
        """``heatmap`` of several inputs (see ``iter_heatmaps``)."""
        return list(self.iter_heatmaps(inputs, method, batch_size))

    def iter_heatmaps(self, inputs: Sequence[CamInput], method: str | None = None,
                      batch_size: int = 16) -> Iterator[np.ndarray]:
        """``heatmap`` of each input in order: LayerCAM or Grad-CAM in one pass per ``batch_size`` inputs.

        The source-sized maps come one at a time, so a batch never holds several full-size maps.
        ``gradcampp`` (MONAI's Grad-CAM++) goes image by image through the reference
        ``model.gradcam.class_activation_map``.
        """
        from monai_fracture.model.gradcam import scale_to_unit

        if not self.supports_heatmaps:
            raise ValueError(f"heatmaps need a PyTorch model, not {self.model.format}")
        method = method or self.heatmap_method
        step = max(1, batch_size)
        for start in range(0, len(inputs), step):
            chunk = list(inputs[start : start + step])
            for cam_input, raw in zip(chunk, self._raw_maps(chunk, method)):
                yield scale_to_unit(self._to_source_geometry(raw, cam_input.geometry))

    def _raw_maps(self, inputs: Sequence[CamInput], method: str) -> list[torch.Tensor]:
        """Maps (1, *spatial) at network-input size: one batched pass per input shape (LayerCAM, Grad-CAM)."""
        from monai_fracture.model.gradcam import BATCHED_METHODS, class_activation_map, class_activation_maps

        network, layers = self.model.network, self.cam_layers()
        raw: dict[int, torch.Tensor] = {}
        if method not in BATCHED_METHODS:
            for index, cam_input in enumerate(inputs):
                raw[index] = class_activation_map(network, cam_input.image[None].to(self.device), layers,
                                                  class_index=1, method=method, fusion=self.heatmap_fusion,
                                                  flip=self.heatmap_flip).cpu()
            network.eval()
            return [raw[i] for i in range(len(inputs))]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, cam_input in enumerate(inputs):
            by_shape.setdefault(tuple(cam_input.image.shape), []).append(index)
        for indices in by_shape.values():
            batch = torch.stack([inputs[i].image for i in indices]).to(self.device)
            maps = class_activation_maps(network, batch, layers, class_index=1, fusion=self.heatmap_fusion,
                                         flip=self.heatmap_flip, method=method).cpu()
            raw.update(zip(indices, maps))
        return [raw[i] for i in range(len(inputs))]

    def _to_source_geometry(self, activation: torch.Tensor, geometry: Any, shape: Sequence[int] | None = None) -> np.ndarray:
        """Undo the recorded resize and pad; a plain resize when nothing was recorded.

        ``geometry`` is an ``InputGeometry``, or the preprocessed input (its applied operations) with the source ``shape``.
        """
        if not isinstance(geometry, InputGeometry):
            geometry = InputGeometry.of(geometry, shape or ())
        shape = geometry.shape
        restored = undo_spatial_operations(activation.float(), geometry.operations)[0].numpy()
        if restored.shape != tuple(shape):
            logger.debug("heatmap geometry %s differs from the image %s: resizing", restored.shape, shape)
            mode = "bilinear" if len(shape) == 2 else "trilinear"
            restored = torch.nn.functional.interpolate(
                torch.as_tensor(restored)[None, None], size=tuple(shape), mode=mode, align_corners=False
            )[0, 0].numpy()
        return np.nan_to_num(restored.astype(np.float32))


def as_classifier(model: Any, device: str | None = None, threshold: float | None = None,
                  backend: str | None = None) -> Classifier:
    """``model`` as a ``Classifier``; a given one must run on ``device`` / ``backend`` when they are named
    (its threshold may be overridden by a run's, which the scoring stream applies)."""
    if not isinstance(model, Classifier):
        return Classifier(model, device=device or "cpu", threshold=threshold, backend=backend or "auto")
    model.check_settings(device=device, backend=backend)
    return model


def default_model_path() -> Path | None:
    """The model ``score`` uses without ``--model``: ``$MONAI_FRACTURE_MODEL``, else the bundle's.

    In the bundle (installed with the package, or this source checkout's), the shipped
    real-data model (``models/fracatlas/``, trained on FracAtlas) wins over ``models/`` itself,
    where training with ``--bundle_root`` on the bundle puts a model.
    """
    from monai_fracture.bundle_files import bundle_path

    candidates = []
    env = os.environ.get("MONAI_FRACTURE_MODEL")
    if env:
        candidates.append(Path(env))
    bundles = []
    try:
        bundles.append(bundle_path())  # the installed package's bundle, else this checkout's
    except FileNotFoundError:
        pass
    bundles.append(Path.cwd() / "bundles" / "fracture_classification")
    for bundle in bundles:
        models = bundle / "models"
        candidates += [models / "fracatlas", models]
    for candidate in candidates:
        if candidate.is_file() or (candidate.is_dir() and (candidate / "model_info.json").is_file()):
            return candidate
    return None


MODEL_HELP = (
    "no model given and none found in bundles/fracture_classification/models[/fracatlas]: train one with `make demo` "
    "or `python -m monai.bundle run training --meta_file bundles/fracture_classification/configs/metadata.json "
    "--config_file bundles/fracture_classification/configs/train.json`, or pass --model PATH (a bundle "
    "folder, a model folder, or model.pt/.ts/.onnx with model_info.json beside it)"
)
