"""Whole preprocessing and augmentation chains for radiographs (2D) and CT (3D).

Plain keyword arguments only, so bundle JSON and ``model_info.json`` can hold them:
``{"_target_": "monai_fracture.transforms.build_preprocessing", "modality": "xr", "size": 224}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RepeatChanneld,
    ScaleIntensityRanged,
)

from monai_fracture.io.monai_reader import LoadFractureImaged
from monai_fracture.transforms.intensity import CTWindowd, ImageNetNormalized, RadiographIntensityd
from monai_fracture.transforms.spatial import ResizeWithPadToSquared

MODALITIES = ("xr", "ct")
DEFAULT_SIZE = {"xr": 224, "ct": 64}
DEFAULT_IN_CHANNELS = {"xr": 3, "ct": 1}


def _modality(modality: str) -> str:
    value = modality.lower()
    if value not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose 'xr' (radiographs, 2D) or 'ct' (volumes, 3D)")
    return value


def build_preprocessing(
    modality: str = "xr",
    size: int | None = None,
    normalization: str | None = "imagenet",
    ct_window: str = "bone",
    keys: Sequence[str] = ("image",),
    load: bool = True,
    reader: Any = None,
    in_channels: int | None = None,
    lower_percentile: float = 0.5,
    upper_percentile: float = 99.5,
    force_percentile: bool = False,
    augmentation: Callable | None = None,
    seed: int | None = 0,
) -> Compose:
    """The chain from a file path (``load=True``) or a loaded channel-first image to network input.

    Steps: :class:`~monai_fracture.io.LoadFractureImaged` (our ``FractureImageReader`` unless ``reader`` is given; its
    errors propagate as the ``__cause__`` of MONAI's ``RuntimeError``) and
    ``EnsureChannelFirstd`` when loading; aspect-preserving resize so the longest side is ``size``
    (CT: following the voxel spacing); intensity to [0, 1] (radiographs:
    :class:`RadiographIntensityd`; CT: :class:`CTWindowd` with ``ct_window``); zero pad to a
    ``size`` square / cube; ``augmentation``
    if given (see :func:`build_augmentation`); ``RepeatChanneld`` to ``in_channels``;
    :class:`ImageNetNormalized` with ``normalization`` (``"imagenet"``, ``"tf"`` or ``None``);
    float32. Defaults: ``xr`` 224² and 3 channels, ``ct`` 64³ and 1 channel.

    ``seed`` seeds the random transforms of the whole chain (MONAI's ``Compose`` re-seeds nested
    transforms when it is built, so the augmentation's own seed does not survive nesting);
    ``None`` leaves MONAI's default. DataLoader workers re-seed per worker as usual.
    """
    modality = _modality(modality)
    keys = list(keys)
    size = DEFAULT_SIZE[modality] if size is None else int(size)
    in_channels = DEFAULT_IN_CHANNELS[modality] if in_channels is None else int(in_channels)
    steps: list[Callable] = []
    if load:
        own_reader = reader is None
        steps.append(LoadFractureImaged(keys=keys, reader=reader))
        # Our reader returns (rows, cols) or (slices, rows, cols) without a channel axis.
        steps.append(EnsureChannelFirstd(keys=keys, channel_dim="no_channel" if own_reader else None))
    # Resize first, window the small image, then pad with 0 = background. Area averaging commutes
    # with a linear window, so this differs only at the clip edges (and percentiles come from the
    # averaged pixels); it saves every full-resolution pass.
    steps.append(ResizeWithPadToSquared(keys=keys, size=size, use_spacing=modality == "ct", pad=False))
    if modality == "xr":
        steps.append(RadiographIntensityd(keys=keys, lower=lower_percentile, upper=upper_percentile,
                                          force_percentile=force_percentile))
    else:
        steps.append(CTWindowd(keys=keys, window=ct_window))
    steps.append(ResizeWithPadToSquared(keys=keys, size=size))  # pads only: the long side already fits
    if augmentation is not None:
        steps.append(augmentation)
    if in_channels > 1:
        steps.append(RepeatChanneld(keys=keys, repeats=in_channels))
    if normalization is not None:
        steps.append(ImageNetNormalized(keys=keys, style=normalization))
    steps.append(EnsureTyped(keys=keys, dtype=torch.float32))
    chain = Compose(steps)
    if seed is not None:
        chain.set_random_state(seed=seed)
    return chain


def build_augmentation(
    modality: str = "xr",
    keys: Sequence[str] = ("image",),
    prob: float = 0.5,
    rotate_degrees: float = 10.0,
    scale: float = 0.1,
    flip: bool = True,
    brightness: float = 0.05,
    contrast: float = 0.1,
    gamma: Sequence[float] = (0.8, 1.25),
    noise_std: float = 0.01,
    seed: int | None = 0,
    mask_keys: Sequence[str] = (),
) -> Compose:
    """Training augmentations for [0, 1] images of fixed size (insert after resize, before normalising).

    Small in-plane rotation and scaling (zeros padded, the background), a left-right flip
    (fractures are not lateralised), brightness/contrast/gamma jitter, light Gaussian noise,
    then a clip back to [0, 1]. Each random step fires with ``prob``. Seeded with ``seed``.
    ``mask_keys`` (e.g. a box mask) get the same rotation, scaling and flip as the images, with
    nearest-neighbour sampling, and none of the intensity changes; empty, the chain is unchanged.
    """
    modality = _modality(modality)
    keys = list(keys)
    mask_keys = list(mask_keys)
    spatial_keys = keys + mask_keys
    modes = "bilinear" if not mask_keys else ["bilinear"] * len(keys) + ["nearest"] * len(mask_keys)
    spatial_dims = 2 if modality == "xr" else 3
    radians = math.radians(rotate_degrees)
    rotate_range = radians if spatial_dims == 2 else (radians, 0.0, 0.0)  # 3D: in-plane (rows, cols)
    steps: list[Callable] = []
    if rotate_degrees > 0 or scale > 0:
        steps.append(RandAffined(keys=spatial_keys, prob=prob, rotate_range=rotate_range, scale_range=scale,
                                 mode=modes, padding_mode="zeros"))
    if flip:
        steps.append(RandFlipd(keys=spatial_keys, prob=0.5, spatial_axis=spatial_dims - 1))
    if contrast > 0:
        steps.append(RandScaleIntensityd(keys=keys, factors=contrast, prob=prob))
    if brightness > 0:
        steps.append(RandShiftIntensityd(keys=keys, offsets=brightness, prob=prob))
    if gamma is not None and tuple(gamma) != (1.0, 1.0):
        steps.append(RandAdjustContrastd(keys=keys, gamma=tuple(gamma), prob=prob))
    if noise_std > 0:
        steps.append(RandGaussianNoised(keys=keys, std=noise_std, prob=prob))
    steps.append(ScaleIntensityRanged(keys=keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    chain = Compose(steps)
    if seed is not None:
        chain.set_random_state(seed=seed)
    return chain


__all__ = ["DEFAULT_IN_CHANNELS", "DEFAULT_SIZE", "MODALITIES", "build_augmentation", "build_preprocessing"]
