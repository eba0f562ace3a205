"""FractureImageReader inside MONAI: LoadImaged, EnsureChannelFirstd, bundle JSON, DataLoader batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from monai_fracture.io import FractureImageReader

pytestmark = pytest.mark.timeout(120)

CR_MONOCHROME1 = "pylibjpeg_data/JPEGLS/RG1_JLSN.dcm"  # real CR chest, JPEG-LS near-lossless, MONOCHROME1
DX_MONOCHROME1 = "highdicom_testdata/dx_image.dcm"
CR_MONOCHROME2 = "pylibjpeg_data/JPEGLS/RG2_JLSN.dcm"  # Pixel Spacing 0.2 mm
DX_IMAGER_SPACING = "pylibjpeg_data/JPEG2000Lossless/JPEG2KLossless_1s_1f_u_16_16.dcm"  # Imager Pixel Spacing only


def _pipeline():
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    return Compose([LoadImaged(keys="image", reader=FractureImageReader()), EnsureChannelFirstd(keys="image")])


@pytest.mark.parametrize("name", [CR_MONOCHROME1, DX_MONOCHROME1, CR_MONOCHROME2, DX_IMAGER_SPACING])
def test_loadimaged_keeps_pixel_array_orientation_and_spacing(dicom_corpus: Path, name: str) -> None:
    path = dicom_corpus / name
    image = _pipeline()({"image": str(path)})["image"]
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.float64)
    assert tuple(image.shape) == (1, *stored.shape)  # (1, rows, cols): no transpose
    values = image[0].numpy()
    inverted = ds.PhotometricInterpretation == "MONOCHROME1"
    correlation = np.corrcoef(stored.ravel(), values.ravel())[0, 1]
    assert correlation < -0.9 if inverted else correlation > 0.9  # same orientation, inverted when MONOCHROME1
    assert image.meta["inverted"] is inverted and image.meta["modality"] == ds.Modality
    # spacing from the file: Pixel Spacing, else Imager Pixel Spacing; zeros mean unknown (1.0 in MONAI terms)
    spacing = [float(v) for v in (ds.get("PixelSpacing") or ds.ImagerPixelSpacing)]
    expected = spacing if all(v > 0 for v in spacing) else [1.0, 1.0]
    np.testing.assert_allclose(image.pixdim.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(image.meta["spacing"], expected, rtol=1e-6)
    assert image.meta["filename_or_obj"] == str(path)
    assert image.meta["original_channel_dim"] == "no_channel"
    assert image.dtype.is_floating_point and image.element_size() == 4


def test_bundle_json_target_builds_the_reader(dicom_corpus: Path) -> None:
    from monai.bundle import ConfigParser

    config = {
        "reader": {"_target_": "monai_fracture.io.FractureImageReader"},
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "reader": "@reader"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
            ],
        },
    }
    parser = ConfigParser(config)
    assert isinstance(parser.get_parsed_content("reader"), FractureImageReader)
    image = parser.get_parsed_content("preprocessing")({"image": str(dicom_corpus / DX_MONOCHROME1)})["image"]
    assert tuple(image.shape) == (1, 169, 211)


def test_series_folder_and_list_read_as_a_volume(dicom_corpus: Path) -> None:
    from monai.transforms import LoadImage

    folder = dicom_corpus / "dcmqi_ct3slice/ct-3slice"
    loader = LoadImage(reader=FractureImageReader(), image_only=True, ensure_channel_first=True)
    from_folder = loader(str(folder))
    from_list = loader([str(p) for p in sorted(folder.glob("*.dcm"), reverse=True)])
    assert tuple(from_folder.shape) == (1, 3, 512, 512)
    np.testing.assert_array_equal(from_folder.numpy(), from_list.numpy())
    np.testing.assert_allclose(from_folder.pixdim.numpy(), [1.0, 0.810547, 0.810547], rtol=1e-5)
    # RAS affine: LPS x and y flipped, origin is the first slice's Image Position (Patient)
    first = pydicom.dcmread(from_folder.meta["filenames"].split("\\")[0])  # per-slice list, joined for collation
    np.testing.assert_allclose(from_folder.affine[:3, 3].numpy(), np.asarray(first.ImagePositionPatient, float) * [-1, -1, 1], atol=1e-4)


def test_verify_suffix(dicom_corpus: Path, tmp_path: Path) -> None:
    reader = FractureImageReader()
    for name in ("a.dcm", "b.DICOM", "c.nii", "d.nii.gz", "e.png", "f.jpg", "g.jpeg"):
        assert reader.verify_suffix(tmp_path / name)
    assert reader.verify_suffix(dicom_corpus / "pydicom_test_files/dicomdirtests/77654033/CR1/6154")  # no suffix
    assert reader.verify_suffix(dicom_corpus / "egsnrc_ct_bone_phantom/1998052815582995.ct")  # DICOM content
    assert reader.verify_suffix(dicom_corpus / "egsnrc_ct_bone_phantom")  # a folder
    assert not reader.verify_suffix(dicom_corpus / "pydicom_test_files/test1.json")
    assert not reader.verify_suffix(tmp_path / "absent.txt")


def test_png_and_dataloader_batches_collate(tmp_path: Path) -> None:
    from monai.data import DataLoader, Dataset

    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((12, 9), 40 * (i + 1), np.uint8)).save(path)
        paths.append({"image": str(path)})
    batch = next(iter(DataLoader(Dataset(paths, _pipeline()), batch_size=2)))
    image = batch["image"]
    assert tuple(image.shape) == (2, 1, 12, 9)
    np.testing.assert_allclose(image[:, 0, 0, 0].numpy(), [40 / 255, 80 / 255], atol=1e-6)
    assert list(batch["image"].meta["format"]) == ["png", "png"]


def test_load_fracture_imaged_has_no_silent_fallback(dicom_corpus: Path) -> None:
    """Plain LoadImage falls back to PydicomReader for a SEG we refuse; ours raises our error."""
    from monai.bundle import ConfigParser
    from monai.transforms import LoadImage

    from monai_fracture.io import ImageReadError, LoadFractureImage, ReadFailure

    seg = str(dicom_corpus / "highdicom_testdata/seg_image_ct_binary.dcm")
    fallback = LoadImage(reader=FractureImageReader(), image_only=True)(seg)  # MONAI's other readers took it
    assert fallback.numel() > 0
    with pytest.raises(ImageReadError) as err:
        LoadFractureImage()(seg)
    assert err.value.reason is ReadFailure.NOT_AN_IMAGE
    load = ConfigParser({"load": {"_target_": "monai_fracture.io.LoadFractureImaged", "keys": "image",
                                  "ensure_channel_first": True}}).get_parsed_content("load")
    image = load({"image": str(dicom_corpus / DX_MONOCHROME1)})["image"]
    assert tuple(image.shape) == (1, 169, 211) and image.meta["inverted"] is True
    with pytest.raises(ImageReadError):
        load({"image": seg})


def test_mixed_inputs_collate_into_one_batch(dicom_corpus: Path) -> None:
    """DX (window, no geometry), CT (geometry, no window) and colour SC share one batch's metadata."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, Resized

    from monai_fracture.io import LoadFractureImaged

    files = [DX_MONOCHROME1, "pydicom_test_files/CT_small.dcm", "pydicom_test_files/SC_rgb_jpeg_dcmtk.dcm"]
    transform = Compose([LoadFractureImaged(keys="image", ensure_channel_first=True), Resized(keys="image", spatial_size=(32, 32))])
    batch = next(iter(DataLoader(Dataset([{"image": str(dicom_corpus / f)} for f in files], transform), batch_size=3)))
    meta = batch["image"].meta
    assert tuple(batch["image"].shape) == (3, 1, 32, 32)
    assert list(meta["modality"]) == ["DX", "CT", "OT"]
    assert meta["window"][0].tolist() == [128.0, 256.0] and bool(meta["window"][1].isnan().all())
    assert meta["image_orientation"][1].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert [bool(v) for v in meta["inverted"]] == [True, False, False]
    # flags travel typed: a batch holds bool tensors, never "true"/"none" strings to parse back
    assert meta["inverted"].dtype == torch.bool and meta["presentation_ready"].dtype == torch.bool


def test_load_fracture_imaged_uses_only_the_reader_given(dicom_corpus: Path, tmp_path: Path) -> None:
    """``reader=`` replaces ours (one reader, as for ours): a DICOM file is not passed on to another reader."""
    from monai_fracture.io import LoadFractureImaged

    png = tmp_path / "a.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(png)
    load = LoadFractureImaged(keys="image", reader="PILReader")
    assert type(load.reader).__name__ == "PILReader"
    assert tuple(load({"image": str(png)})["image"].shape) == (8, 8)
    from PIL import UnidentifiedImageError

    with pytest.raises(UnidentifiedImageError):  # PydicomReader, registered in MONAI, is not tried
        load({"image": str(dicom_corpus / DX_MONOCHROME1)})


def test_bundle_json_example_in_the_docs_runs(dicom_corpus: Path) -> None:
    import json

    from monai.bundle import ConfigParser

    text = (Path(__file__).resolve().parents[1] / "docs" / "reading.md").read_text()
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    parser = ConfigParser(json.loads(block))
    image = parser.get_parsed_content("preprocessing")({"image": str(dicom_corpus / DX_MONOCHROME1)})["image"]
    assert tuple(image.shape) == (1, 169, 211)
    plain = parser.get_parsed_content("load_with_monai_loader")({"image": str(dicom_corpus / DX_MONOCHROME1)})["image"]
    np.testing.assert_array_equal(plain.numpy(), image[0].numpy())
