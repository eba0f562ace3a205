"""MONAI-style transforms (array + dictionary twin) and the preprocessing presets built from them."""

from monai_fracture.transforms.intensity import (
    CT_WINDOWS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CTWindow,
    CTWindowd,
    ImageNetNormalize,
    ImageNetNormalized,
    RadiographIntensity,
    RadiographIntensityd,
)
from monai_fracture.transforms.presets import build_augmentation, build_preprocessing
from monai_fracture.transforms.spatial import ResizeWithPadToSquare, ResizeWithPadToSquared

__all__ = [
    "CT_WINDOWS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CTWindow",
    "CTWindowd",
    "ImageNetNormalize",
    "ImageNetNormalized",
    "RadiographIntensity",
    "RadiographIntensityd",
    "ResizeWithPadToSquare",
    "ResizeWithPadToSquared",
    "build_augmentation",
    "build_preprocessing",
]
