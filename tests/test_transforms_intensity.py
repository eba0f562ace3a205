"""Intensity transforms: known inputs give known outputs, twins agree, meta survives, flags are typed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_fracture.transforms import (
    CT_WINDOWS, IMAGENET_MEAN, IMAGENET_STD, CTWindow, CTWindowd, ImageNetNormalize, ImageNetNormalized,
    RadiographIntensity, RadiographIntensityd,
)


def ramp(rows: int = 100, cols: int = 100) -> np.ndarray:
    """Values 0 .. rows*cols-1, channel first: percentiles are known in closed form."""
    return np.arange(rows * cols, dtype=np.float32).reshape(1, rows, cols)



# --- RadiographIntensity -------------------------------------------------------------------


def test_percentile_window_maps_known_percentiles_to_0_and_1():
    img = ramp()
    low, high = np.percentile(img, [0.5, 99.5])  # 49.995, 9949.005
    out = RadiographIntensity(lower=0.5, upper=99.5)(img)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    flat = out.reshape(-1)
    assert flat[0] == 0.0 and flat[-1] == 1.0
    assert flat[5000] == pytest.approx((5000 - low) / (high - low), abs=1e-6)
    assert flat[49] == 0.0 and flat[50] > 0.0  # first value above the 0.5th percentile
    assert flat[9949] < 1.0 and flat[9950] == 1.0


def test_percentiles_on_subsample_are_close_to_full():
    img = ramp(400, 400)
    full = np.percentile(img, [1.0, 99.0])
    sampled = RadiographIntensity(lower=1.0, upper=99.0, max_samples=10_000).percentiles(img)
    assert sampled == pytest.approx(tuple(full), rel=2e-3)


def test_presentation_ready_is_only_clipped_and_force_percentile_overrides():
    values = torch.tensor([[[-0.5, 0.0, 0.25], [0.5, 1.0, 1.5]]])
    ready = MetaTensor(values, meta={"presentation_ready": True, "filename": "a.dcm"})
    out = RadiographIntensity()(ready)
    assert isinstance(out, MetaTensor) and out.meta["filename"] == "a.dcm"
    assert torch.equal(out.as_tensor(), torch.tensor([[[0.0, 0.0, 0.25], [0.5, 1.0, 1.0]]]))
    forced = RadiographIntensity(lower=0.0, upper=100.0, force_percentile=True)(ready)
    assert torch.allclose(forced.as_tensor(), (values + 0.5) / 2.0)
    # the same values flagged not ready get the percentile window
    raw = MetaTensor(values, meta={"presentation_ready": False})
    assert torch.allclose(RadiographIntensity(0.0, 100.0)(raw).as_tensor(), (values + 0.5) / 2.0)
    # no flag means not ready
    unknown = MetaTensor(values, meta={})
    assert torch.allclose(RadiographIntensity(0.0, 100.0)(unknown).as_tensor(), (values + 0.5) / 2.0)


def test_flags_are_bools_and_strings_are_refused():
    """io hands flags over as bools (a batch: a bool tensor); a string is a contract breach, not "unknown"."""
    values = torch.tensor([[[-0.5, 0.0, 0.25], [0.5, 1.0, 1.5]]])
    batch_meta = {"presentation_ready": torch.tensor([True, True])}  # what MONAI's collate makes of two bools
    out = RadiographIntensityd(keys="image")({"image": values, "image_meta_dict": batch_meta})["image"]
    assert torch.equal(out, values.clamp(0.0, 1.0))
    for text in ("true", "none"):
        with pytest.raises(TypeError, match="presentation_ready"):
            RadiographIntensity()(MetaTensor(values, meta={"presentation_ready": text}))


def test_constant_image_gives_zeros_not_nan():
    out = RadiographIntensity()(torch.full((1, 8, 8), 123.0))
    assert torch.equal(out, torch.zeros(1, 8, 8))


def test_input_container_types_are_kept_and_input_is_not_modified():
    img = ramp(20, 20)
    before = img.copy()
    for data in (img, torch.from_numpy(img), MetaTensor(torch.from_numpy(img), meta={"k": 1})):
        out = RadiographIntensity()(data)
        assert type(out) is type(data)
        assert out.dtype in (np.float32, torch.float32)
    assert np.array_equal(img, before)
    uint16 = (ramp(20, 20)).astype(np.uint16)
    assert RadiographIntensity()(uint16).dtype == np.float32


def test_radiograph_dict_twin_reads_flag_from_meta_dict_and_metatensor():
    values = np.array([[[-1.0, 0.5, 3.0]]], dtype=np.float32)
    d = RadiographIntensityd(keys="image", lower=0.0, upper=100.0)(
        {"image": values, "image_meta_dict": {"presentation_ready": True}})
    assert np.array_equal(d["image"], np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32))
    d = RadiographIntensityd(keys="image", lower=0.0, upper=100.0)({"image": values})
    assert np.allclose(d["image"], RadiographIntensity(0.0, 100.0)(values))
    mt = MetaTensor(torch.from_numpy(values), meta={"presentation_ready": True})
    assert torch.equal(RadiographIntensityd(keys="image")({"image": mt})["image"], RadiographIntensity()(mt))
    with pytest.raises(KeyError):
        RadiographIntensityd(keys=["image", "other"])({"image": values})
    assert "other" not in RadiographIntensityd(keys=["image", "other"], allow_missing_keys=True)({"image": values})


# --- CTWindow --------------------------------------------------------------------------------


def test_ct_window_presets_have_documented_values():
    assert CT_WINDOWS["bone"] == (400.0, 1800.0)
    assert CT_WINDOWS["soft_tissue"] == (50.0, 400.0)
    assert CT_WINDOWS["lung"] == (-600.0, 1500.0)
    assert CT_WINDOWS["brain"] == (40.0, 80.0)
    assert CT_WINDOWS["wide"] == (500.0, 3000.0)


def test_bone_window_maps_hounsfield_units():
    hu = torch.tensor([[[-1000.0, -500.0, 400.0, 1300.0, 3000.0]]])
    out = CTWindow("bone")(hu)
    assert torch.allclose(out, torch.tensor([[[0.0, 0.0, 0.5, 1.0, 1.0]]]))
    explicit = CTWindow(center=40.0, width=80.0)(hu.numpy())
    assert np.array_equal(explicit, CTWindow("brain")(hu.numpy()))
    assert np.array_equal(CTWindow("brain")(np.array([[[0.0, 40.0, 80.0]]])), np.array([[[0.0, 0.5, 1.0]]], np.float32))


def test_ct_window_rejects_unknown_or_partial_settings():
    with pytest.raises(ValueError, match="bone"):
        CTWindow("bones")
    with pytest.raises(ValueError):
        CTWindow(center=40.0)
    with pytest.raises(ValueError):
        CTWindow(center=40.0, width=0.0)


def test_ct_window_dict_twin_and_meta():
    hu = MetaTensor(torch.linspace(-1200, 1500, 60).reshape(1, 3, 4, 5), meta={"modality": "CT"})
    out = CTWindowd(keys="image", window="lung")({"image": hu})["image"]
    assert torch.equal(out, CTWindow("lung")(hu))
    assert out.meta["modality"] == "CT"
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0




# --- ImageNetNormalize -----------------------------------------------------------------------


def test_imagenet_and_tf_numbers():
    ones = torch.ones(3, 2, 2)
    out = ImageNetNormalize("imagenet")(ones)
    for c in range(3):
        assert torch.allclose(out[c], torch.full((2, 2), (1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))
    tf = ImageNetNormalize("tf")(np.array([[[0.0, 0.5, 1.0]]], np.float32))
    assert np.allclose(tf, [[[-127 / 128, 0.5 / 128, 1.0]]])
    grey = ImageNetNormalize("imagenet")(torch.zeros(1, 2, 2))
    assert torch.allclose(grey, torch.full((1, 2, 2), -np.mean(IMAGENET_MEAN) / np.mean(IMAGENET_STD)))
    with pytest.raises(ValueError, match="channels"):
        ImageNetNormalize("imagenet")(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError):
        ImageNetNormalize("caffe")


def test_normalize_dict_twin_keeps_meta():
    img = MetaTensor(torch.rand(3, 4, 4), meta={"sop_uid": "1.2.3"})
    out = ImageNetNormalized(keys="image", style="tf")({"image": img})["image"]
    assert torch.equal(out, ImageNetNormalize("tf")(img)) and out.meta["sop_uid"] == "1.2.3"
