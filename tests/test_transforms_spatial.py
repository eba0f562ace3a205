"""ResizeWithPadToSquare: aspect kept, padding placed, area averaging, physical spacing in 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_fracture.transforms import ResizeWithPadToSquare, ResizeWithPadToSquared


# --- ResizeWithPadToSquare -------------------------------------------------------------------


def test_portrait_image_is_resized_and_padded_symmetrically():
    img = torch.ones(1, 100, 50)
    out = ResizeWithPadToSquare(size=20)(img)
    assert out.shape == (1, 20, 20)
    assert torch.all(out[0, :, 5:15] == 1.0)
    assert torch.all(out[0, :, :5] == 0.0) and torch.all(out[0, :, 15:] == 0.0)


def test_pad_at_end_and_landscape_input():
    out = ResizeWithPadToSquare(size=20, pad_method="end")(np.ones((1, 50, 100), np.float32))
    assert torch.all(out[0, :10, :] == 1.0) and torch.all(out[0, 10:, :] == 0.0)


def test_area_downsampling_averages_and_upsampling_interpolates():
    checker = torch.zeros(1, 64, 32)
    checker[0, ::2, ::2] = 1.0
    checker[0, 1::2, 1::2] = 1.0
    out = ResizeWithPadToSquare(size=32)(checker)  # 64x32 -> 32x16: each 2x2 block averages to 0.5
    assert torch.allclose(out[0, :, 8:24], torch.full((32, 16), 0.5))
    small = torch.tensor([[[0.0, 1.0]]])  # 1x2 -> 5x10 (bilinear)
    up = ResizeWithPadToSquare(size=10)(small)
    assert up.shape == (1, 10, 10)
    row = up[0, 5]
    assert row[0] == 0.0 and row[-1] == pytest.approx(1.0) and torch.all(row[1:] >= row[:-1] - 1e-6)


def test_3d_cube_and_physical_spacing():
    vol = MetaTensor(torch.ones(1, 40, 20, 10), meta={"spacing": (1.0, 1.0, 1.0), "filename": "ct"})
    out = ResizeWithPadToSquare(size=8)(vol)
    assert out.shape == (1, 8, 8, 8) and out.meta["filename"] == "ct"
    assert torch.all(out[0, :, 2:6, 3:5] == 1.0) and float(out.sum()) == 8 * 4 * 2
    thick = MetaTensor(torch.ones(1, 10, 20, 20), meta={"spacing": (4.0, 1.0, 1.0)})
    fitted = ResizeWithPadToSquare(size=20, use_spacing=True, pad=False)(thick)
    assert fitted.shape == (1, 20, 10, 10)  # 40 mm deep, 20 mm wide: depth becomes the long side
    assert ResizeWithPadToSquare(size=20, pad=False)(thick).shape == (1, 10, 20, 20)


def test_resize_dict_twin_equals_array_form():
    img = torch.rand(1, 37, 23, generator=torch.Generator().manual_seed(0))
    d = ResizeWithPadToSquared(keys="image", size=16)({"image": img, "label": 1})
    assert torch.equal(d["image"], ResizeWithPadToSquare(size=16)(img))
    assert d["label"] == 1
