"""Real CT series from the corpus become the right volume in any file order; broken ones are refused."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from monai_fracture.io import ImageReadError, ReadFailure, read_dicom_series, read_image

pytestmark = pytest.mark.timeout(60)

SERIES = {
    # folder: (slices, rows, cols)
    "egsnrc_ct_bone_phantom": (10, 512, 512),
    "dcmqi_ct3slice/ct-3slice": (3, 512, 512),
    "dcmqi_ct3slice/23x38x3/image": (3, 38, 23),
    "rtutils_testdata/oriented_data": (2, 50, 100),  # oblique orientation
}


def slice_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".dcm", ".ct"))


def sitk_reference(folder: Path) -> tuple[np.ndarray, sitk.Image]:
    """SimpleITK/GDCM's reading of the same series: an independent reference for order and geometry."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    return sitk.GetArrayFromImage(image).astype(np.float32), image


@pytest.mark.parametrize("name", sorted(SERIES))
def test_shuffled_series_is_the_reference_volume(dicom_corpus: Path, name: str) -> None:
    folder = dicom_corpus / name
    files = slice_files(folder)
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    volume, meta = read_dicom_series(shuffled)
    again, _ = read_dicom_series(list(reversed(files)))
    reference, image = sitk_reference(folder)

    assert volume.shape == SERIES[name] and volume.dtype == np.float32
    np.testing.assert_array_equal(volume, again)
    np.testing.assert_allclose(volume, reference, atol=1e-3)  # HU, same slice order as GDCM's sorter
    sx, sy, sz = image.GetSpacing()
    assert meta["spacing"] == pytest.approx((sz, sy, sx), rel=1e-5)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = meta["affine"]  # index (slice, row, column) -> LPS, like ITK
    np.testing.assert_allclose(affine[:3, 2], direction[:, 0] * sx, atol=1e-4)
    np.testing.assert_allclose(affine[:3, 1], direction[:, 1] * sy, atol=1e-4)
    np.testing.assert_allclose(affine[:3, 0], direction[:, 2] * sz, atol=1e-4)
    np.testing.assert_allclose(affine[:3, 3], image.GetOrigin(), atol=1e-4)
    assert meta["frame_rule"] == "series" and meta["num_frames"] == len(files)
    assert meta["modality"] == "CT" and meta["presentation_ready"] is False
    # slices really are ordered along the normal
    positions = [np.asarray(pydicom.dcmread(f, force=True).ImagePositionPatient, float) for f in meta["filenames"]]
    normal = np.cross(*np.asarray(pydicom.dcmread(files[0], force=True).ImageOrientationPatient, float).reshape(2, 3))
    assert np.all(np.diff([p @ normal for p in positions]) > 0)


def test_egsnrc_slice_values_and_spacing(dicom_corpus: Path) -> None:
    files = slice_files(dicom_corpus / "egsnrc_ct_bone_phantom")
    volume, meta = read_image(dicom_corpus / "egsnrc_ct_bone_phantom")  # a folder reads as a series
    assert meta["spacing"] == pytest.approx((5.0, 0.69, 0.69))
    by_z = sorted(files, key=lambda f: float(pydicom.dcmread(f, force=True).ImagePositionPatient[2]))
    for k in (0, 4, 9):
        ds = pydicom.dcmread(by_z[k], force=True)
        assert ds.original_encoding == (True, True)  # no file meta: implicit VR little endian
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(volume[k], expected.astype(np.float32))


def test_series_with_a_missing_middle_slice_is_refused(dicom_corpus: Path) -> None:
    files = slice_files(dicom_corpus / "egsnrc_ct_bone_phantom")
    by_z = sorted(files, key=lambda f: float(pydicom.dcmread(f, force=True).ImagePositionPatient[2]))
    del by_z[5]
    with pytest.raises(ImageReadError) as err:
        read_dicom_series(by_z)
    assert err.value.reason is ReadFailure.INCONSISTENT_SERIES and "uneven" in err.value.detail


def test_series_with_a_slice_in_another_orientation_is_refused(dicom_corpus: Path, tmp_path: Path) -> None:
    files = slice_files(dicom_corpus / "dcmqi_ct3slice/ct-3slice")
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    ds = pydicom.dcmread(tmp_path / files[1].name)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    ds.save_as(tmp_path / files[1].name)
    with pytest.raises(ImageReadError) as err:
        read_dicom_series(tmp_path)
    assert err.value.reason is ReadFailure.INCONSISTENT_SERIES and "orientation" in err.value.detail.lower()


def test_series_with_duplicate_or_missing_positions_is_refused(dicom_corpus: Path, tmp_path: Path) -> None:
    files = slice_files(dicom_corpus / "dcmqi_ct3slice/ct-3slice")
    with pytest.raises(ImageReadError) as err:
        read_dicom_series([files[0], files[1], files[0]])
    assert err.value.reason is ReadFailure.INCONSISTENT_SERIES and "duplicate" in err.value.detail
    ds = pydicom.dcmread(files[2])
    del ds.ImagePositionPatient
    ds.save_as(tmp_path / "no_position.dcm")
    with pytest.raises(ImageReadError) as err:
        read_dicom_series([files[0], files[1], tmp_path / "no_position.dcm"])
    assert err.value.reason is ReadFailure.INCONSISTENT_SERIES and "Position" in err.value.detail


def test_slices_of_different_series_or_sizes_are_refused(dicom_corpus: Path) -> None:
    small = slice_files(dicom_corpus / "dcmqi_ct3slice/23x38x3/image")
    large = slice_files(dicom_corpus / "dcmqi_ct3slice/ct-3slice")
    with pytest.raises(ImageReadError) as err:
        read_dicom_series(small[:2] + large[:1])
    assert err.value.reason is ReadFailure.INCONSISTENT_SERIES


def test_non_image_file_in_a_series_is_named(dicom_corpus: Path) -> None:
    files = slice_files(dicom_corpus / "dcmqi_ct3slice/ct-3slice")
    rtstruct = dicom_corpus / "rtutils_testdata/mock_data/rt.dcm"
    with pytest.raises(ImageReadError) as err:
        read_dicom_series(files + [rtstruct])
    assert err.value.reason is ReadFailure.NOT_AN_IMAGE and err.value.path == str(rtstruct)
