"""Transforms: known inputs give known outputs, twins agree, meta survives, presets run end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_fracture.transforms import (
    CT_WINDOWS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CTWindow,
    CTWindowd,
    ImageNetNormalize,
    ImageNetNormalized,
    RadiographIntensity,
    RadiographIntensityd,
    ResizeWithPadToSquare,
    ResizeWithPadToSquared,
    build_augmentation,
    build_preprocessing,
)


def ramp(rows: int = 100, cols: int = 100) -> np.ndarray:
    """Values 0 .. rows*cols-1, channel first: percentiles are known in closed form."""
    return np.arange(rows * cols, dtype=np.float32).reshape(1, rows, cols)


def synthetic_radiograph(rows: int = 600, cols: int = 400) -> np.ndarray:
    """A portrait 'radiograph' in raw 12-bit modality values: soft tissue with a bright bone bar."""
    rng = np.random.default_rng(7)
    img = 800.0 + 100.0 * rng.standard_normal((rows, cols))
    img[:, cols // 2 - 30 : cols // 2 + 30] += 2500.0  # bone
    img[:20, :] = 50.0  # collimator edge
    return img.astype(np.float32)[None]


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
    # reader's "none" string means unknown, not True
    unknown = MetaTensor(values, meta={"presentation_ready": "none"})
    assert torch.allclose(RadiographIntensity(0.0, 100.0)(unknown).as_tensor(), (values + 0.5) / 2.0)


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


# --- presets ---------------------------------------------------------------------------------


def test_xr_preset_on_generated_radiograph():
    img = MetaTensor(torch.from_numpy(synthetic_radiograph()), meta={"presentation_ready": False, "filename": "g"})
    chain = build_preprocessing("xr", size=224, normalization="tf", load=False)
    out = chain({"image": img, "label": 1})
    x = out["image"]
    assert isinstance(x, MetaTensor) and x.meta["filename"] == "g" and out["label"] == 1
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    background = -127 / 128  # tf-normalised 0
    assert torch.all(x[:, :, :37] == background) and torch.all(x[:, :, -37:] == background)  # 600x400 -> 224x149
    centre = x[0, 112, 112].item()
    soft = x[0, 112, 50].item()
    assert centre > 0.9 and soft < centre - 0.5  # bone bright, soft tissue darker, range [-1, 1]
    assert float(x.max()) <= 1.0 + 1e-6 and float(x.min()) >= background - 1e-6
    again = chain({"image": img, "label": 1})["image"]
    assert torch.equal(x, again)  # deterministic


def test_xr_preset_imagenet_padding_value_and_channels():
    img = torch.from_numpy(synthetic_radiograph(300, 500))
    x = build_preprocessing("xr", size=64, load=False)({"image": img})["image"]
    assert x.shape == (3, 64, 64)
    for c in range(3):
        assert x[c, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], abs=1e-6)
    one = build_preprocessing("xr", size=64, in_channels=1, normalization=None, load=False)({"image": img})["image"]
    assert one.shape == (1, 64, 64) and float(one.min()) == 0.0 and float(one.max()) == 1.0


def test_ct_preset_on_generated_volume():
    hu = torch.full((1, 40, 80, 80), -1000.0)  # air
    hu[0, :, 20:60, 20:60] = 40.0  # soft tissue
    hu[0, :, 35:45, 35:45] = 1300.0  # bone, top of the bone window
    vol = MetaTensor(hu, meta={"spacing": (2.0, 1.0, 1.0), "presentation_ready": False})
    x = build_preprocessing("ct", size=32, normalization=None, load=False)({"image": vol})["image"]
    assert x.shape == (1, 32, 32, 32)  # 80 mm cube: no padding needed
    assert x[0, 16, 16, 16].item() == pytest.approx(1.0)
    assert x[0, 16, 10, 10].item() == pytest.approx((40 + 500) / 1800, abs=1e-5)
    assert x[0, 16, 0, 0].item() == 0.0


def test_augmentation_is_seeded_and_keeps_range():
    img = MetaTensor(torch.from_numpy(synthetic_radiograph()), meta={"presentation_ready": False})
    outputs = []
    for seed in (3, 3, 4):
        chain = build_preprocessing("xr", size=64, normalization=None, load=False,
                                    augmentation=build_augmentation("xr", prob=1.0), seed=seed)
        outputs.append(chain({"image": img})["image"])
    alone = [build_augmentation("xr", prob=1.0, seed=5)({"image": outputs[0].clone()})["image"] for _ in range(2)]
    assert torch.equal(alone[0], alone[1])
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])
    plain = build_preprocessing("xr", size=64, normalization=None, load=False)({"image": img})["image"]
    assert not torch.equal(outputs[0], plain)
    for x in outputs:
        assert x.shape == (3, 64, 64) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    vol = torch.rand(1, 16, 16, 16)
    out3d = build_augmentation("ct", prob=1.0, seed=0)({"image": vol})["image"]
    assert out3d.shape == (1, 16, 16, 16)


def test_preset_loads_a_png_with_a_monai_reader(tmp_path):
    from PIL import Image

    array = synthetic_radiograph(120, 80)
    grey = (array / array.max() * 255).clip(0, 255).astype(np.uint8)[0]
    path = tmp_path / "xray.png"
    Image.fromarray(grey).save(path)
    chain = build_preprocessing("xr", size=32, normalization=None, reader="PILReader")
    x = chain({"image": str(path)})["image"]
    assert x.shape == (3, 32, 32) and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert str(x.meta["filename_or_obj"]).endswith("xray.png")


def test_preset_and_transforms_from_bundle_style_config():
    from monai.bundle import ConfigParser

    config = {
        "preprocessing": {
            "_target_": "monai_fracture.transforms.build_preprocessing",
            "modality": "xr", "size": 32, "normalization": "tf", "load": False,
            "augmentation": {"_target_": "monai_fracture.transforms.build_augmentation", "modality": "xr"},
        },
        "window": {"_target_": "monai_fracture.transforms.CTWindowd", "keys": ["image"], "window": "bone"},
    }
    parser = ConfigParser(config)
    chain = parser.get_parsed_content("preprocessing")
    out = chain({"image": torch.from_numpy(synthetic_radiograph(64, 48))})["image"]
    assert out.shape == (3, 32, 32)
    assert parser.get_parsed_content("window").transform.center == 400.0


def test_unknown_modality_is_rejected():
    with pytest.raises(ValueError, match="xr"):
        build_preprocessing("mr", load=False)


# --- real files through our reader -----------------------------------------------------------


def test_preset_reads_real_dx_and_cr(dicom_corpus):
    chain = build_preprocessing("xr", size=64, normalization=None)
    for name in ("highdicom_testdata/dx_image.dcm", "pylibjpeg_data/JPEGLosslessSV1/RG2_JPLL.dcm"):
        path = dicom_corpus / name
        x = chain({"image": str(path)})["image"]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32, name
        assert x.meta["presentation_ready"] in (True, "True"), name  # both files carry a VOI window
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0, name
        assert float(x.std()) > 0.05, name  # an actual image, not a flat field
    dx = chain({"image": str(dicom_corpus / "highdicom_testdata/dx_image.dcm")})["image"]
    assert dx.meta["modality"] == "DX"
    # 169 x 211 landscape: rows padded top and bottom
    assert torch.all(dx[:, 0, :] == 0.0) and torch.all(dx[:, -1, :] == 0.0)


def test_ct_preset_reads_real_series_folder(dicom_corpus):
    folder = dicom_corpus / "egsnrc_ct_bone_phantom"
    x = build_preprocessing("ct", size=32, normalization=None)({"image": str(folder)})["image"]
    assert x.shape == (1, 32, 32, 32)
    # 10 slices of 5 mm in a 353 mm field: the depth shrinks to a few slices, the rest is padding
    nonzero_depth = torch.nonzero(x[0].amax(dim=(1, 2)) > 0).flatten()
    assert 1 <= len(nonzero_depth) <= 6
    assert float(x.max()) > 0.3  # the phantom's bone inserts light up in the bone window


def test_preset_lets_our_read_error_through(dicom_corpus):
    from monai_fracture import io

    chain = build_preprocessing("xr", size=32)
    path = dicom_corpus / "pydicom_test_files/ExplVR_BigEndNoMeta.dcm"  # an RT Ion Plan: no image
    with pytest.raises(RuntimeError) as info:
        chain({"image": str(path)})
    cause = info.value.__cause__
    assert isinstance(cause, io.ImageReadError) and cause.reason == io.ReadFailure.NOT_AN_IMAGE
    assert str(path) in str(cause)


# --- the scoring path on generated DICOM: float32 at every step, values as a float64 reference ---


def _generated_radiograph(tmp_path, modality: str, photometric: str, window: str, shape=(384, 320)):
    from monai_fracture.data.synthetic.dicom_writer import Hierarchy, radiograph_dataset, save_dataset
    from monai_fracture.data.synthetic.phantom import simulate_radiograph
    from monai_fracture.data.synthetic.dataset import _stored_pixels

    rng = np.random.default_rng(11)
    phantom = simulate_radiograph(shape, rng, "forearm", "transverse", np.random.default_rng(12))
    stored, win, voi = _stored_pixels(phantom.signal, rng, {"bits_stored": 12, "photometric": photometric, "window": window})
    ids = Hierarchy("P", "P^Q", "O", "19700101", "1.2.3.1", "1", "A1", "20260101", "120000", "1.2.3.2", 1, "1.2.3.3", 1)
    ds = radiograph_dataset(stored, ids=ids, modality=modality, photometric=photometric, bits_stored=12, spacing_mm=0.15,
                            body_part="forearm", view="AP", laterality="L", window=win, voi_lut=voi)
    path = tmp_path / f"{modality}_{photometric}_{window}.dcm"
    save_dataset(ds, path, "explicit")
    return path, stored, win


def _reference_network_input(stored: np.ndarray, photometric: str, window, size: int) -> torch.Tensor:
    """The documented chain written plainly in float64: window, invert, area resize, [0, 1], pad, tf scaling."""
    from monai_fracture.transforms.spatial import square_fit_shape

    x = stored.astype(np.float64)
    if window is not None:
        c, w = window
        x = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
        x = 1.0 - x if photometric == "MONOCHROME1" else x
    elif photometric == "MONOCHROME1":
        x = 4095.0 - x
    target = square_fit_shape(x.shape, size)
    small = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x)[None, None], target)[0]
    if window is not None:
        small = small.clamp(0.0, 1.0)
    else:
        low, high = np.percentile(small.numpy().reshape(-1), [0.5, 99.5])
        small = ((small - low) / (high - low)).clamp(0.0, 1.0)
    pad = [(size - t) for t in target]
    small = torch.nn.functional.pad(small, (pad[1] // 2, pad[1] - pad[1] // 2, pad[0] // 2, pad[0] - pad[0] // 2))
    return (small.repeat(3, 1, 1) * 255.0 - 127.0) / 128.0


@pytest.mark.parametrize(("modality", "photometric", "window"), [
    ("DX", "MONOCHROME2", "window"), ("DX", "MONOCHROME1", "window"),
    ("CR", "MONOCHROME2", "none"), ("CR", "MONOCHROME1", "none"),
])
def test_scoring_preprocessing_is_float32_throughout_and_matches_a_float64_reference(tmp_path, modality, photometric, window):
    from monai_fracture.io import read_image
    from monai_fracture.scoring.classifier import channel_first

    path, stored, win = _generated_radiograph(tmp_path, modality, photometric, window)
    array, meta = read_image(path)
    assert array.dtype == np.float32 and array.flags.c_contiguous
    data = {"image": channel_first(array, meta)}
    assert data["image"].dtype == torch.float32
    assert np.shares_memory(data["image"].numpy(), array)  # no copy of the full-size image
    chain = build_preprocessing("xr", size=96, normalization="tf", load=False)
    for step in chain.transforms:
        data = step(data)
        assert data["image"].dtype == torch.float32, type(step).__name__
    expected = _reference_network_input(stored, photometric, win, 96)
    got = torch.as_tensor(data["image"]).as_subclass(torch.Tensor).double()
    assert got.shape == expected.shape == (3, 96, 96)
    assert float((got - expected).abs().max()) < 2e-5
