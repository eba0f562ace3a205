"""PNG/JPEG (Pillow, EXIF orientation, truncation) and NIfTI (nibabel) round trips."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image, ImageFile

from monai_fracture.io import ImageReadError, ReadFailure, read_image

pytestmark = pytest.mark.timeout(60)

GRADIENT = (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint8)  # 30 rows, 40 columns


def test_png_8_bit_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(GRADIENT, mode="L").save(path)
    values, meta = read_image(path)
    assert values.dtype == np.float32 and values.shape == (30, 40)
    np.testing.assert_allclose(values, GRADIENT / 255.0, atol=1e-7)
    assert meta["format"] == "png" and meta["presentation_ready"] is True and meta["bits_stored"] == 8


def test_png_16_bit_round_trip(tmp_path: Path) -> None:
    deep = (np.arange(20 * 10).reshape(20, 10) * 300).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    values, meta = read_image(path)
    np.testing.assert_allclose(values, deep / 65535.0, atol=1e-7)
    assert meta["bits_stored"] == 16 and meta["presentation_ready"] is False


def test_a_12_bit_png_reaches_the_network_like_its_8_bit_copy(tmp_path: Path) -> None:
    """A radiograph stored with 12 of 16 bits is windowed on its percentiles, not shown near-black."""
    import torch

    from monai_fracture.transforms.presets import build_preprocessing

    rng = np.random.default_rng(0)
    # a radiograph as displayed spans the grey range: dark soft tissue to a bright bone
    eight = np.clip(np.linspace(0, 255, 80)[None, :] + rng.normal(0, 8, size=(96, 80)), 0, 255).astype(np.uint8)
    eight[30:60, 20:40] = 255
    Image.fromarray(eight, mode="L").save(tmp_path / "eight.png")
    Image.fromarray(np.round(eight / 255 * 4095).astype(np.uint16)).save(tmp_path / "twelve.png")
    chain = build_preprocessing("xr", 64, load=False)
    inputs = {}
    for name in ("eight", "twelve"):
        values, meta = read_image(tmp_path / f"{name}.png")
        from monai.data import MetaTensor

        inputs[name] = torch.as_tensor(chain({"image": MetaTensor(torch.as_tensor(values)[None], meta=meta)})["image"])
    twelve, eight_in = inputs["twelve"], inputs["eight"]
    assert float(twelve.max() - twelve.min()) > 0.9 * float(eight_in.max() - eight_in.min())  # full contrast
    assert float((twelve - eight_in).abs().mean()) < 0.1  # shown as stored (0-0.06) it would be ~1.5


def test_rgb_jpeg_becomes_grey(tmp_path: Path) -> None:
    rgb = np.stack([GRADIENT, GRADIENT, GRADIENT], axis=-1)
    path = tmp_path / "rgb.jpg"
    Image.fromarray(rgb, mode="RGB").save(path, quality=100)
    values, meta = read_image(path)
    assert values.shape == (30, 40) and meta["format"] == "jpeg"
    np.testing.assert_allclose(values, GRADIENT / 255.0, atol=0.03)


@pytest.mark.parametrize(("orientation", "transform"), [(6, lambda a: np.rot90(a, k=-1)), (8, np.rot90), (3, lambda a: np.rot90(a, 2))])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, transform, suffix: str) -> None:
    image = Image.fromarray(GRADIENT, mode="L")
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"exif{suffix}"
    image.save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    values, _ = read_image(path)
    expected = transform(GRADIENT) / 255.0
    assert values.shape == expected.shape
    np.testing.assert_allclose(values, expected, atol=1e-7 if suffix == ".png" else 0.03)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_raise_even_if_pillow_is_told_to_pad(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(noise, mode="L").save(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) * 2 // 3])
    for pad in (False, True):
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pad)
        with pytest.raises(ImageReadError) as err:
            read_image(cut)
        assert err.value.reason is ReadFailure.TRUNCATED


def _fracatlas_rows(fracatlas: Path) -> list[dict[str, str]]:
    with (fracatlas / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_truncated_fracatlas_jpegs_raise_our_error(fracatlas: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = [r for r in _fracatlas_rows(fracatlas) if r["decodes"] == "false"]
    assert len(broken) == 45
    for pad in (False, True):  # never a silently grey image, whatever the global Pillow flag says
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pad)
        for row in broken:
            with pytest.raises(ImageReadError) as err:
                read_image(fracatlas / row["path"])
            assert err.value.reason is ReadFailure.TRUNCATED and row["path"] in str(err.value)


def test_decodable_fracatlas_images_have_the_listed_size(fracatlas: Path) -> None:
    rows = [r for r in _fracatlas_rows(fracatlas) if r["decodes"] == "true"][::25]  # every 25th: ~130 files
    for row in rows:
        values, meta = read_image(fracatlas / row["path"])
        assert values.shape == (int(row["height"]), int(row["width"]))
        assert 0.0 <= values.min() and values.max() <= 1.0 and values.std() > 0.01
        assert meta["format"] == "jpeg"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_3d_round_trip(tmp_path: Path, suffix: str) -> None:
    volume = np.random.default_rng(1).normal(size=(7, 6, 5)).astype(np.float32) * 1000
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [10, -20, 30]
    path = tmp_path / f"ct{suffix}"
    nib.save(nib.Nifti1Image(volume, affine), path)
    values, meta = read_image(path)
    np.testing.assert_array_equal(values, volume)
    assert meta["spacing"] == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_allclose(meta["affine"], affine)
    assert meta["format"] == "nifti" and meta["presentation_ready"] is False


def test_nifti_2d_with_scaling(tmp_path: Path) -> None:
    stored = (np.arange(12).reshape(3, 4)).astype(np.int16)
    image = nib.Nifti1Image(stored[..., None], np.eye(4))
    image.header.set_slope_inter(0.5, -3)
    path = tmp_path / "plane.nii.gz"
    nib.save(image, path)
    values, _ = read_image(path)
    assert values.shape == (3, 4)
    np.testing.assert_allclose(values, stored * 0.5 - 3)


def test_truncated_nifti_and_wrong_suffix(tmp_path: Path) -> None:
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), path)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ImageReadError) as err:
        read_image(cut)
    assert err.value.reason in (ReadFailure.TRUNCATED, ReadFailure.UNDECODABLE)
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a png at all" * 10)
    with pytest.raises(ImageReadError) as err:
        read_image(fake)
    assert err.value.reason is ReadFailure.UNSUPPORTED_FORMAT
