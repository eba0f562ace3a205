"""Presets: whole chains run end to end on generated and real files, float32 throughout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_fracture.transforms import IMAGENET_MEAN, IMAGENET_STD, CTWindowd, build_augmentation, build_preprocessing


def synthetic_radiograph(rows: int = 600, cols: int = 400) -> np.ndarray:
    """A portrait 'radiograph' in raw 12-bit modality values: soft tissue with a bright bone bar."""
    rng = np.random.default_rng(7)
    img = 800.0 + 100.0 * rng.standard_normal((rows, cols))
    img[:, cols // 2 - 30 : cols // 2 + 30] += 2500.0  # bone
    img[:20, :] = 50.0  # collimator edge
    return img.astype(np.float32)[None]



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
    from monai_fracture.model.classifier import channel_first

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
