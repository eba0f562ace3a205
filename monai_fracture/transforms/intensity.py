"""Intensity transforms: radiograph and CT values to [0, 1], then network normalisation.

Convention (docs/architecture.md): ``monai_fracture.io`` hands over float32 images, bone
bright; radiographs are either already windowed (``presentation_ready``) or raw modality
values, CT is in Hounsfield units. These transforms map them to [0, 1] (0 = black/background),
which is what the resize/pad, augmentation and normalisation steps expect.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from monai_fracture.io.meta import PRESENTATION_READY

# (center, width) in HU. Sources: Radiopaedia "Windowing (CT)" (bone W1800 L400, soft tissue
# W400 L50, lung W1500 L-600, brain W80 L40); "wide" is ours: -1000..2000 HU, air to cortex/metal.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "bone": (400.0, 1800.0),
    "soft_tissue": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
    "wide": (500.0, 3000.0),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATION_STYLES = ("imagenet", "tf")


def _as_float_tensor(img: NdarrayOrTensor) -> torch.Tensor:
    """A plain float32 tensor view of ``img`` (no copy when it already is float32)."""
    tensor = convert_to_tensor(img, track_meta=False)
    return tensor if tensor.dtype == torch.float32 else tensor.to(torch.float32)


def _like(out: torch.Tensor, img: NdarrayOrTensor) -> NdarrayOrTensor:
    """``out`` as the container type of ``img`` (numpy / tensor / MetaTensor with its meta), float32."""
    dtype = np.float32 if isinstance(img, np.ndarray) else torch.float32
    return convert_to_dst_type(out, dst=img, dtype=dtype)[0]


def _meta_flag(img: Any, meta: Mapping | None, key: str) -> bool | None:
    """A bool flag of io's metadata (:data:`monai_fracture.io.meta.FLAG_KEYS`), None when absent.

    From the MetaTensor's ``meta``, else ``meta``; a collated batch holds it as a bool tensor.
    """
    if isinstance(img, MetaTensor) and key in img.meta:
        value = img.meta[key]
    elif meta is not None and key in meta:
        value = meta[key]
    else:
        return None
    if isinstance(value, torch.Tensor | np.ndarray):  # collated metadata
        value = np.asarray(value).reshape(-1)[0].item()
    if value is None:
        return None
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"metadata {key!r} must be a bool (monai_fracture.io.meta.FLAG_KEYS), got {value!r}")
    return bool(value)


def linear_window(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``img`` mapped linearly from [low, high] to [0, 1] and clipped; all 0 when high <= low."""
    if not high > low:
        return torch.zeros_like(img)
    return img.sub(low).mul_(1.0 / (high - low)).clamp_(0.0, 1.0)


class RadiographIntensity(Transform):
    """Radiograph values to [0, 1]: the file's own window if applied, else a percentile window.

    When the image is ``presentation_ready`` (io applied the DICOM VOI LUT / window, or it was
    an 8-bit PNG/JPEG) it is only clipped to [0, 1]. Otherwise the ``lower``/``upper`` percentiles,
    computed on at most ``max_samples`` evenly strided pixels (fast on 2048² images), become 0
    and 1. ``force_percentile`` ignores the flag, for sources whose stored window is poor.
    The flag comes from ``__call__``'s argument, else ``img.meta`` (MetaTensor), else False.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, lower: float = 0.5, upper: float = 99.5, force_percentile: bool = False,
                 max_samples: int = 262_144) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.lower = float(lower)
        self.upper = float(upper)
        self.force_percentile = force_percentile
        self.max_samples = int(max_samples)

    def percentiles(self, img: NdarrayOrTensor) -> tuple[float, float]:
        """The (lower, upper) percentile values of ``img`` on the strided subsample."""
        flat = _as_float_tensor(img).reshape(-1)
        step = max(1, math.ceil(flat.numel() / self.max_samples))
        sample = flat[::step]
        sample = sample[torch.isfinite(sample)]
        if sample.numel() == 0:
            return 0.0, 0.0
        if sample.device.type == "cpu":  # numpy's selection is ~15x faster than torch.quantile's sort here
            low, high = np.percentile(sample.numpy(), [self.lower, self.upper])
        else:
            q = torch.tensor([self.lower / 100.0, self.upper / 100.0], device=sample.device)
            low, high = torch.quantile(sample, q).tolist()
        return float(low), float(high)

    def __call__(self, img: NdarrayOrTensor, presentation_ready: bool | None = None) -> NdarrayOrTensor:
        if presentation_ready is None:
            presentation_ready = bool(_meta_flag(img, None, PRESENTATION_READY))
        if presentation_ready and not self.force_percentile:
            out = _as_float_tensor(img).clamp(0.0, 1.0)
        else:
            low, high = self.percentiles(img)
            out = linear_window(_as_float_tensor(img), low, high)
        return _like(out, img)


class RadiographIntensityd(MapTransform):
    """Dictionary twin of :class:`RadiographIntensity`.

    The ``presentation_ready`` flag is read from the MetaTensor's meta, else from
    ``data[f"{key}_{meta_key_postfix}"]``.
    """

    backend = RadiographIntensity.backend

    def __init__(self, keys: KeysCollection, lower: float = 0.5, upper: float = 99.5, force_percentile: bool = False,
                 max_samples: int = 262_144, meta_key_postfix: str = "meta_dict",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = RadiographIntensity(lower, upper, force_percentile, max_samples)
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = d.get(f"{key}_{self.meta_key_postfix}")
            flag = _meta_flag(d[key], meta if isinstance(meta, Mapping) else None, PRESENTATION_READY)
            d[key] = self.transform(d[key], presentation_ready=bool(flag))
        return d


class CTWindow(Transform):
    """Hounsfield units to [0, 1] through a window: a named preset or explicit center/width.

    Linear from ``center - width/2`` (0) to ``center + width/2`` (1), clipped. Presets are in
    :data:`CT_WINDOWS`; ``bone`` (L 400 / W 1800) is the default for fractures.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, window: str | None = "bone", center: float | None = None, width: float | None = None) -> None:
        if center is not None or width is not None:
            if center is None or width is None or not width > 0:
                raise ValueError(f"an explicit CT window needs center and a positive width, got {center}, {width}")
            self.center, self.width = float(center), float(width)
        else:
            if window not in CT_WINDOWS:
                raise ValueError(f"unknown CT window {window!r}; choose one of {', '.join(CT_WINDOWS)} "
                                 "or give center and width")
            self.center, self.width = CT_WINDOWS[window]
        self.window = window

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        low = self.center - self.width / 2.0
        out = linear_window(_as_float_tensor(img), low, low + self.width)
        return _like(out, img)


class CTWindowd(MapTransform):
    """Dictionary twin of :class:`CTWindow`."""

    backend = CTWindow.backend

    def __init__(self, keys: KeysCollection, window: str | None = "bone", center: float | None = None,
                 width: float | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CTWindow(window, center, width)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class ImageNetNormalize(Transform):
    """[0, 1] channel-first images to the input scale of ImageNet-pretrained networks.

    ``style="imagenet"``: per-channel ``(x - mean) / std`` with the torchvision ImageNet
    statistics; needs 3 channels, or 1 channel (then the averaged mean/std, matching a stem
    adapted by summing RGB). ``style="tf"``: ``(255 x - 127) / 128``, the TF-style scaling the
    EfficientNet-Lite weights were trained with; any number of channels.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, style: str = "imagenet") -> None:
        if style not in NORMALIZATION_STYLES:
            raise ValueError(f"unknown normalisation style {style!r}; choose one of {', '.join(NORMALIZATION_STYLES)}")
        self.style = style

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = _as_float_tensor(img)
        if self.style == "tf":
            out = x.mul(255.0 / 128.0).sub_(127.0 / 128.0)
        else:
            channels = x.shape[0]
            if channels == 3:
                mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
            elif channels == 1:
                mean, std = torch.tensor([sum(IMAGENET_MEAN) / 3]), torch.tensor([sum(IMAGENET_STD) / 3])
            else:
                raise ValueError(f"ImageNet normalisation needs 1 or 3 channels first, got shape {tuple(x.shape)}")
            shape = (channels,) + (1,) * (x.ndim - 1)
            out = (x - mean.view(shape).to(x.device)).div_(std.view(shape).to(x.device))
        return _like(out, img)


class ImageNetNormalized(MapTransform):
    """Dictionary twin of :class:`ImageNetNormalize`."""

    backend = ImageNetNormalize.backend

    def __init__(self, keys: KeysCollection, style: str = "imagenet", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ImageNetNormalize(style)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


__all__ = [
    "CT_WINDOWS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATION_STYLES",
    "CTWindow",
    "CTWindowd",
    "ImageNetNormalize",
    "ImageNetNormalized",
    "RadiographIntensity",
    "RadiographIntensityd",
    "linear_window",
]
