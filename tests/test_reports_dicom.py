"""DICOM outputs: TID 1500 SR, KOS of positives, Grad-CAM SC; content, validity, safe names, atomic writes."""

from __future__ import annotations

import subprocess
import types

import numpy as np
import pydicom
import pytest

from monai_fracture.files import atomic_write_bytes
from monai_fracture.reports import (
    Heatmap,
    ImageResult,
    write_study_outputs,
)
from monai_fracture.reports.evidence import PATIENT_STUDY_KEYWORDS
from helpers.dicom_files import content_items, first_multi_image_study
from helpers.needs import tool
from helpers.scoring import dciodvfy_errors, image_files, make_demo_folder

MODEL = types.SimpleNamespace(name="test-fracture", version="0.0.1")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> list[pydicom.Dataset]:
    """The synthetic study with two images (AP + LAT), read as full datasets."""
    folder = make_demo_folder(tmp_path_factory.mktemp("demo"), n=8, seed=0, size=96)
    return first_multi_image_study(pydicom.dcmread(p) for p in image_files(folder))


def _groups(sr):
    return [i for i in content_items(sr, "CONTAINER") if i.ConceptNameCodeSequence[0].CodeValue == "125007"]


def _written(paths, prefix):
    return [p for p in paths if p.name.startswith(prefix + "_")]


def test_sr_kos_sc_content_and_validity(study, tmp_path):
    positive, negative = study[0], study[1]
    results = [
        ImageResult((positive.SOPInstanceUID,), 0.875, 0.4, positive.SeriesInstanceUID),
        ImageResult((negative.SOPInstanceUID,), 0.125, 0.4, negative.SeriesInstanceUID),
    ]
    image = positive.pixel_array.astype(np.float32)
    image = (image - image.min()) / max(float(np.ptp(image)), 1.0)
    rows, cols = image.shape
    cam = np.outer(np.hanning(rows), np.hanning(cols)).astype(np.float32)
    heatmap = Heatmap(positive.SOPInstanceUID, image, cam, 0.875)
    paths = write_study_outputs(study, results, MODEL, tmp_path, heatmaps=[heatmap])

    sr_paths, ko_paths, sc_paths = _written(paths, "SR"), _written(paths, "KO"), _written(paths, "SC")
    assert len(sr_paths) == 1 and len(ko_paths) == 1 and len(sc_paths) == 1
    for path in paths:
        assert path.is_file() and tmp_path in path.parents
        assert not list(path.parent.glob(".*.tmp")), "temporary files must be renamed or removed"

    sr = pydicom.dcmread(sr_paths[0])
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert sr.Modality == "SR" and sr.Manufacturer == "monai-fracture"
    assert sr.SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in study}
    assert sr.CompletionFlag == "COMPLETE"
    for keyword in PATIENT_STUDY_KEYWORDS:
        assert str(sr.get(keyword, "")) == str(study[0].get(keyword, "")), keyword
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    procedure = [i for i in content_items(sr, "CODE") if i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedure[0].ConceptCodeSequence[0].CodeValue == "168537006"  # plain radiography
    observer = [i for i in content_items(sr, "CODE") if i.ConceptNameCodeSequence[0].CodeValue == "121005"]
    assert observer[0].ConceptCodeSequence[0].CodeValue == "121007"  # device observer

    groups = _groups(sr)
    assert len(groups) == 2
    found = {}
    for group in groups:
        refs = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in content_items(group, "IMAGE")]
        assert len(refs) == 1
        evaluation = [
            i for i in content_items(group, "CODE") if i.ConceptNameCodeSequence[0].CodeValue == "125605004"
        ]
        assert len(evaluation) == 1 and evaluation[0].ConceptNameCodeSequence[0].CodingSchemeDesignator == "SCT"
        numbers = {
            i.ConceptNameCodeSequence[0].CodeValue: (
                float(i.MeasuredValueSequence[0].NumericValue),
                i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue,
            )
            for i in content_items(group, "NUM")
        }
        algorithm = {
            i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in content_items(group, "TEXT")
        }
        assert algorithm["Algorithm Name"] == "test-fracture" and algorithm["Algorithm Version"] == "0.0.1"
        found[refs[0]] = (evaluation[0].ConceptCodeSequence[0].CodeValue, numbers)
    assert found[positive.SOPInstanceUID][0] == "52101004"  # Present
    assert found[negative.SOPInstanceUID][0] == "272519000"  # Absent
    assert found[positive.SOPInstanceUID][1]["122157"] == (0.875, "1")
    assert found[negative.SOPInstanceUID][1]["122157"] == (0.125, "1")
    assert found[negative.SOPInstanceUID][1]["122411"] == (0.4, "1")
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study_item in sr.CurrentRequestedProcedureEvidenceSequence
        for series_item in study_item.ReferencedSeriesSequence
        for ref in series_item.ReferencedSOPSequence
    }
    assert evidence == {positive.SOPInstanceUID, negative.SOPInstanceUID}

    kos = pydicom.dcmread(ko_paths[0])
    assert kos.SOPClassUID == pydicom.uid.KeyObjectSelectionDocumentStorage
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"  # Of Interest
    kos_refs = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in content_items(kos, "IMAGE")]
    assert kos_refs == [positive.SOPInstanceUID]
    assert kos.StudyInstanceUID == positive.StudyInstanceUID and kos.PatientID == positive.PatientID

    sc = pydicom.dcmread(sc_paths[0])
    assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert sc.StudyInstanceUID == positive.StudyInstanceUID
    assert sc.SeriesInstanceUID not in {sr.SeriesInstanceUID, kos.SeriesInstanceUID, positive.SeriesInstanceUID}
    assert sc.PhotometricInterpretation == "RGB" and (sc.Rows, sc.Columns) == (rows, cols)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == positive.SOPInstanceUID
    rgb = sc.pixel_array
    centre, corner = rgb[rows // 2, cols // 2].astype(int), rgb[0, 0].astype(int)
    assert centre[0] - centre[2] > 40, "hot centre of the CAM should be red"
    assert abs(corner[0] - corner[2]) < 8, "cold corner should stay grey"

    for path in paths:
        assert dciodvfy_errors(path) == [], path
    tree = subprocess.run([tool("dsrdump", "dcmtk"), str(sr_paths[0])], capture_output=True, text=True).stdout
    assert "Fracture of bone" in tree and "Probability" in tree


def test_no_positive_writes_no_kos_and_rewrites_in_place(study, tmp_path):
    results = [ImageResult((ds.SOPInstanceUID,), 0.1, 0.5, ds.SeriesInstanceUID) for ds in study]
    first = write_study_outputs(study, results, MODEL, tmp_path)
    assert [p.name.split("_")[0] for p in first] == ["SR"]
    again = write_study_outputs(study, results, MODEL, tmp_path)
    assert again == first, "the same model on the same study replaces its outputs (deterministic UIDs)"
    assert len(list(tmp_path.rglob("*.dcm"))) == 1


def test_hostile_and_missing_tag_values(study, tmp_path):
    """Raw tag values never become paths, and invalid values do not make invalid outputs."""
    hostile = pydicom.dcmread(image_files_path(study[0]))
    hostile.PatientID = "../../etc/passwd\x07"
    hostile.PatientName = "Evil^" + "X" * 300
    hostile.StudyDate = "20231399"
    hostile.PatientSex = "ATTACK"
    hostile.AccessionNumber = "A/B\\C"
    del hostile.ReferringPhysicianName
    result = ImageResult((hostile.SOPInstanceUID,), 0.9, 0.5, hostile.SeriesInstanceUID)
    paths = write_study_outputs([hostile], [result], MODEL, tmp_path / "out")
    for path in paths:
        assert (tmp_path / "out") in path.parents
        assert "passwd" not in str(path) and "etc" not in path.parent.name
    sr = pydicom.dcmread(_written(paths, "SR")[0])
    assert "\x07" not in sr.PatientID and sr.PatientID.startswith("../../etc/passwd")
    assert sr.StudyDate == "" and sr.PatientSex == ""
    assert len(str(sr.PatientName)) <= 64 * 3
    for path in paths:
        assert dciodvfy_errors(path) == [], path


def test_an_unknown_side_of_a_paired_body_part_keeps_the_sc_and_gsps_valid(study, tmp_path):
    """Image Laterality "U" on an arm: General Series Laterality (type 2C) must still be present, empty."""
    source = pydicom.dcmread(image_files_path(study[0]))
    source.BodyPartExamined, source.ImageLaterality = "ARM", "U"
    source.pop("Laterality", None)
    image = source.pixel_array.astype(np.float32)
    image = (image - image.min()) / max(float(np.ptp(image)), 1.0)
    cam = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1])).astype(np.float32)
    result = ImageResult((source.SOPInstanceUID,), 0.9, 0.5, source.SeriesInstanceUID)
    paths = write_study_outputs([source], [result], MODEL, tmp_path,
                                heatmaps=[Heatmap(source.SOPInstanceUID, image, cam, 0.9)])
    [sc_path] = _written(paths, "SC")
    sc = pydicom.dcmread(sc_path)
    assert "Laterality" in sc and sc.Laterality == ""
    for path in paths:
        assert dciodvfy_errors(path) == [], path


def image_files_path(ds: pydicom.Dataset) -> str:
    return ds.filename


def test_results_must_refer_to_sources(study, tmp_path):
    with pytest.raises(ValueError, match="not among the study sources"):
        write_study_outputs(study, [ImageResult(("1.2.3.4",), 0.9, 0.5)], MODEL, tmp_path)


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write_bytes(target, b"old\n")

    def chunks():
        yield b"new partial"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, chunks())
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_undeclared_non_ascii_names_get_a_character_set(study, tmp_path):
    """Real files carry Latin-1/Cyrillic bytes without (0008,0005): the outputs declare a repertoire."""
    source = pydicom.dcmread(study[0].filename)
    if "SpecificCharacterSet" in source:
        del source.SpecificCharacterSet
    source.PatientName = "Åìåëüÿíîâà^Àíòîíèíà"
    result = ImageResult((source.SOPInstanceUID,), 0.9, 0.5, source.SeriesInstanceUID)
    paths = write_study_outputs([source], [result], MODEL, tmp_path)
    for path in paths:
        written = pydicom.dcmread(path)
        assert written.SpecificCharacterSet == "ISO_IR 100"
        assert str(written.PatientName) == "Åìåëüÿíîâà^Àíòîíèíà"
        assert dciodvfy_errors(path) == [], path
