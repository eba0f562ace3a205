"""What reaches the radiologist: the evidence region in the SR, a readable summary, the GSPS overlay,
UIDs that follow content, and per-model series; checked with dcmtk and dciodvfy where installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import types
from html import unescape

import numpy as np
import pydicom
import pytest

from monai_fracture.reports import ImageResult, parse_outputs, write_study_outputs
from monai_fracture.scoring.saliency import hot_region
from test_scoring_support import dciodvfy_errors, image_files, make_demo_folder

MODEL = types.SimpleNamespace(name="test-fracture", version="0.0.1")
OTHER_MODEL = types.SimpleNamespace(name="test-fracture", version="0.0.2")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> list[pydicom.Dataset]:
    """A synthetic study with at least two radiographs, as full datasets."""
    folder = make_demo_folder(tmp_path_factory.mktemp("demo"), n=8, seed=0, size=96)
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for path in image_files(folder):
        ds = pydicom.dcmread(path)
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    return next(group for group in by_study.values() if len(group) >= 2)


def _results(study, threshold: float = 0.4, peak: tuple[int, int] | None = None) -> list[ImageResult]:
    positive, negative = study[0], study[1]
    rows, cols = int(positive.Rows), int(positive.Columns)
    peak = peak or (rows // 3, (2 * cols) // 3)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cam = np.exp(-((yy - peak[0]) ** 2 + (xx - peak[1]) ** 2) / (2 * (min(rows, cols) / 12) ** 2))
    region = hot_region(cam.astype(np.float32))
    return [
        ImageResult((positive.SOPInstanceUID,), 0.875, threshold, positive.SeriesInstanceUID, region),
        ImageResult((negative.SOPInstanceUID,), 0.125, threshold, negative.SeriesInstanceUID),
    ]


def _by_prefix(paths, prefix):
    return [p for p in paths if p.name.startswith(prefix + "_")]


def _items(ds, value_type=None):
    stack = list(getattr(ds, "ContentSequence", []))
    while stack:
        item = stack.pop(0)
        if value_type is None or item.ValueType == value_type:
            yield item
        stack[0:0] = list(getattr(item, "ContentSequence", []))


def test_hot_region_outlines_the_peak():
    cam = np.zeros((60, 80), np.float32)
    cam[20:30, 50:60] = 1.0
    cam[5, 5] = 0.4  # below the level: not part of the region
    region = hot_region(cam, level=0.5)
    rows = [r for r, _ in region.outline]
    cols = [c for _, c in region.outline]
    assert region.outline[0] == region.outline[-1], "closed polygon"
    assert (min(rows), max(rows), min(cols), max(cols)) == (19.5, 29.5, 49.5, 59.5)
    assert 20 <= region.peak[0] < 30 and 50 <= region.peak[1] < 60
    assert region.area_fraction == pytest.approx(100 / (60 * 80), abs=1e-6)
    # DICOM SCOORD: (column, row) with the first pixel centre at (0.5, 0.5)
    assert tuple(region.scoord_peak()[0]) == (region.peak[1] + 0.5, region.peak[0] + 0.5)


def test_sr_region_text_and_gsps(study, tmp_path):
    results = _results(study)
    paths = write_study_outputs(study, results, MODEL, tmp_path)
    assert len(_by_prefix(paths, "SR")) == 1 and len(_by_prefix(paths, "KO")) == 1
    assert len(_by_prefix(paths, "PR")) == 1 and not _by_prefix(paths, "SC")
    positive = study[0]

    sr = pydicom.dcmread(_by_prefix(paths, "SR")[0])
    scoords = list(_items(sr, "SCOORD"))
    assert len(scoords) == 1, "one region: the positive image"
    scoord = scoords[0]
    assert scoord.GraphicType == "POLYLINE" and scoord.ConceptNameCodeSequence[0].CodeValue == "111030"  # Image Region
    points = np.asarray(scoord.GraphicData, dtype=float).reshape(-1, 2)
    assert np.allclose(points[0], points[-1])
    expected = results[0].region.scoord_outline()
    assert np.allclose(points, expected, atol=1e-3)
    referenced = [i for i in _items(scoord, "IMAGE")]
    assert referenced[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == positive.SOPInstanceUID
    # peak inside the polygon's bounding box, in the source's pixel grid
    col, row = results[0].region.scoord_peak()[0]
    assert points[:, 0].min() <= col <= points[:, 0].max() and points[:, 1].min() <= row <= points[:, 1].max()
    assert points[:, 0].max() <= positive.Columns + 0.5 and points[:, 1].max() <= positive.Rows + 0.5
    texts = [i.TextValue for i in _items(sr, "TEXT") if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    assert sorted(texts) == [
        "Fracture suspected (probability 0.88, threshold 0.40; model test-fracture 0.0.1)",
        "No fracture detected (probability 0.12, threshold 0.40; model test-fracture 0.0.1)",
    ]
    assert sr.SeriesDescription == "AI fracture report (test-fracture 0.0.1)"
    for keyword in ("SeriesDate", "SeriesTime", "ContentDate", "ContentTime"):
        assert re.fullmatch(r"\d{6,8}", str(sr.get(keyword, ""))), keyword

    pr = pydicom.dcmread(_by_prefix(paths, "PR")[0])
    assert pr.SOPClassUID == pydicom.uid.GrayscaleSoftcopyPresentationStateStorage
    ref_series = pr.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == positive.SeriesInstanceUID
    assert ref_series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == positive.SOPInstanceUID
    annotation = pr.GraphicAnnotationSequence[0]
    kinds = sorted(g.GraphicType for g in annotation.GraphicObjectSequence)
    assert kinds == ["POINT", "POLYLINE"]
    assert annotation.TextObjectSequence[0].UnformattedTextValue == "Fracture suspected, p=0.88"
    assert pr.StudyInstanceUID == positive.StudyInstanceUID and pr.Modality == "PR"
    shape = "INVERSE" if positive.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY"
    assert pr.PresentationLUTShape == shape
    assert "SoftcopyVOILUTSequence" in pr, "the viewer needs a window: copied or derived from the pixels"
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name


def test_sr_reads_as_labelled_text_in_dsr2html_default_mode(study, tmp_path):
    paths = write_study_outputs(study, _results(study), MODEL, tmp_path)
    html = subprocess.run(["dsr2html", str(_by_prefix(paths, "SR")[0])], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    text = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))
    assert "Fracture suspected (probability 0.88, threshold 0.40; model test-fracture 0.0.1)" in text
    assert "No fracture detected (probability 0.12, threshold 0.40; model test-fracture 0.0.1)" in text


def test_uids_follow_content_and_models_get_their_own_series(study, tmp_path):
    first = write_study_outputs(study, _results(study, 0.4), MODEL, tmp_path / "a")
    again = write_study_outputs(study, _results(study, 0.4), MODEL, tmp_path / "b")
    other_threshold = write_study_outputs(study, _results(study, 0.05), MODEL, tmp_path / "c")
    other_region = write_study_outputs(study, _results(study, 0.4, peak=(5, 5)), MODEL, tmp_path / "d")
    other_model = write_study_outputs(study, _results(study, 0.4), OTHER_MODEL, tmp_path / "e")

    def uids(paths, prefix):
        return [pydicom.dcmread(p).SOPInstanceUID for p in _by_prefix(paths, prefix)]

    assert uids(first, "SR") == uids(again, "SR") and uids(first, "PR") == uids(again, "PR")
    assert uids(first, "SR") != uids(other_threshold, "SR")  # same decisions, other threshold: new content
    # a region moved by float noise (same model, image and code) is not a new result
    assert uids(first, "SR") == uids(other_region, "SR") and uids(first, "KO") == uids(other_region, "KO")
    mine = {pydicom.dcmread(p).SeriesNumber for p in first}
    theirs = {pydicom.dcmread(p).SeriesNumber for p in other_model}
    assert len(mine) == 3 and not mine & theirs
    assert not {pydicom.dcmread(p).SeriesInstanceUID for p in first} & {pydicom.dcmread(p).SeriesInstanceUID for p in other_model}
    assert pydicom.dcmread(_by_prefix(other_model, "SR")[0]).SeriesDescription.endswith("(test-fracture 0.0.2)")


def test_outputs_choose_the_objects(study, tmp_path):
    assert parse_outputs(None) == ("sr", "kos", "pr")
    assert parse_outputs("pr,SR, ko", heatmaps=True) == ("sr", "kos", "pr", "sc")
    with pytest.raises(ValueError, match="unknown output.*xyz"):
        parse_outputs("sr,xyz")
    only_pr = write_study_outputs(study, _results(study), MODEL, tmp_path / "pr", outputs=["pr"])
    assert [p.name[:2] for p in only_pr] == ["PR"]
    only_sr = write_study_outputs(study, _results(study), MODEL, tmp_path / "sr", outputs="sr")
    assert [p.name[:2] for p in only_sr] == ["SR"]
