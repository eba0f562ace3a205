"""Box masks in the training chain: aligned with the preprocessed image and moved with it by the augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.box_dataset import exif_rotated_jpeg, make_box_dataset
from monai_fracture.data import fracatlas_items
from monai_fracture.training.box_transforms import with_box_masks
from monai_fracture.transforms.presets import build_augmentation, build_preprocessing

SIZE = 64


def _chain(seed: int, rotate_degrees: float = 25.0, mask_keys=("box_mask",)):
    """Load + preprocess + box mask + spatial-only augmentation (every step fires), no normalisation."""
    augmentation = build_augmentation("xr", prob=1.0, rotate_degrees=rotate_degrees, scale=0.15, brightness=0,
                                      contrast=0, gamma=(1.0, 1.0), noise_std=0, seed=seed, mask_keys=mask_keys)
    return build_preprocessing("xr", size=SIZE, normalization=None, in_channels=1,
                               augmentation=with_box_masks(augmentation), seed=seed)


@pytest.fixture(scope="module")
def fractured(tmp_path_factory):
    items = fracatlas_items(make_box_dataset(tmp_path_factory.mktemp("ds"), n=8, box=0.3))
    return [it for it in items if "boxes" in it]


def test_the_mask_follows_the_image_through_rotation_scaling_and_flip(fractured):
    """The bright square of each image stays inside its mask whatever the augmentation drew, and the mask moved."""
    reference = {}
    for it in fractured:
        still = build_preprocessing("xr", size=SIZE, normalization=None, in_channels=1,
                                    augmentation=with_box_masks(None))(dict(it))
        reference[it["image"]] = still["box_mask"][0].numpy()
    moved = 0
    for seed in range(6):
        for it in fractured:
            out = _chain(seed)(dict(it))
            image, mask = out["image"][0].numpy(), out["box_mask"][0].numpy()
            assert out["box_mask"].shape == (1, SIZE, SIZE) and out["box_mask"].dtype == torch.float32
            assert set(np.unique(mask)) <= {0.0, 1.0}  # nearest sampling keeps the mask binary
            bright = image > 0.8
            assert bright.sum() > 20
            assert mask[bright].mean() > 0.97, (seed, it["image"])  # the square is inside the mask
            assert bright[mask > 0].mean() > 0.6  # and the mask is not much larger than the square
            moved += not np.array_equal(mask, reference[it["image"]])
            assert "boxes" not in out and "boxes_shape" not in out  # datalist keys consumed
    assert moved >= len(fractured) * 4  # the augmentation did move the masks


def test_without_mask_keys_the_augmentation_leaves_the_mask_behind(fractured):
    """The failure the test above guards against: a mask the augmentation does not move stops covering the box."""
    misses = 0
    for seed in range(6):
        for it in fractured:
            out = _chain(seed, mask_keys=())(dict(it))
            bright = out["image"][0].numpy() > 0.8
            misses += out["box_mask"][0].numpy()[bright].mean() < 0.97
    assert misses > 0


def test_no_boxes_for_normal_images_missing_keys_or_a_rotated_read(tmp_path, fractured):
    chain = build_preprocessing("xr", size=SIZE, normalization=None, in_channels=1, augmentation=with_box_masks(None))
    item = fractured[0]
    assert chain(dict(item))["box_mask"].sum() > 0
    assert chain(dict(item, label=0))["box_mask"].sum() == 0  # a normal image pulls no evidence into boxes
    assert chain({k: v for k, v in item.items() if k != "boxes"})["box_mask"].sum() == 0
    # boxes drawn on a 60 x 100 image, read as 100 x 60 (EXIF orientation 6): not used
    image = exif_rotated_jpeg(tmp_path / "rotated.jpg", height=60, width=100)
    box = tmp_path / "rotated.txt"
    box.write_text("0 0.5 0.5 0.4 0.4\n")
    rotated = {"image": str(image), "label": 1, "boxes": str(box), "boxes_shape": [60, 100]}
    assert chain(dict(rotated))["box_mask"].sum() == 0
    assert chain(dict(rotated, boxes_shape=[100, 60]))["box_mask"].sum() > 0
    assert chain({k: v for k, v in rotated.items() if k != "boxes_shape"})["box_mask"].sum() > 0  # no shape: trusted


def test_disabled_leaves_the_augmentation_untouched():
    augmentation = build_augmentation("xr")
    assert with_box_masks(augmentation, enabled=False) is augmentation
