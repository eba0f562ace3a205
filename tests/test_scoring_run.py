"""`score_paths` / `monai-fracture score` on a real folder: every input once, SR/KOS/SC agree with
results.csv, DICOM validity, --no-dicom, exit codes, the in-memory Classifier."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from monai_fracture.cli import main as cli_main
from monai_fracture.scoring import COLUMNS, Classifier, score_paths
from needs import IN_CI, missing
from test_scoring_support import (
    PROBABILITY_TOLERANCE,
    assert_same_results,
    add_bad_inputs,
    dciodvfy_errors,
    image_files,
    make_demo_folder,
    make_model,
)


@pytest.fixture(scope="module")
def corpus_or_none():
    from conftest import DICOM_CORPUS

    if (DICOM_CORPUS / "INVENTORY.csv").is_file():
        return DICOM_CORPUS
    if IN_CI:  # here the corpus only adds hostile inputs; in CI its absence is a broken setup
        missing(f"real DICOM corpus not found at {DICOM_CORPUS}")
    return None


@pytest.fixture(scope="module")
def setup(tmp_path_factory, corpus_or_none):
    root = tmp_path_factory.mktemp("score")
    folder = make_demo_folder(root / "in", n=10, seed=3, size=96)
    images = image_files(folder)
    model = make_model(root / "model", images)
    expected = {str(p): "scored" for p in images}
    expected.update(add_bad_inputs(folder, images[0], corpus_or_none))
    for name in ("labels.csv", "datalist.json", "demo_manifest.json"):
        if (folder / name).is_file():
            expected[str(folder / name)] = "skipped"
    return folder, model, expected


WALL_S: dict[Path, float] = {}  # seconds each scoring run took, measured around score_paths


@pytest.fixture(scope="module")
def scored(setup, tmp_path_factory):
    folder, model, expected = setup
    out = tmp_path_factory.mktemp("out")
    started = time.perf_counter()
    summary = score_paths([folder], out, model=model, batch_size=4, workers=1, heatmaps=True, progress=False)
    WALL_S[out] = time.perf_counter() - started
    return summary, out


def _sr_items(ds):
    stack = list(getattr(ds, "ContentSequence", []))
    while stack:
        item = stack.pop(0)
        yield item
        stack[0:0] = list(getattr(item, "ContentSequence", []))


def test_every_input_exactly_once_with_the_right_status(setup, scored):
    _, _, expected = setup
    summary, out = scored
    table = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == list(COLUMNS)
    assert table["path"].is_unique and list(table["path"]) == sorted(table["path"])
    assert dict(zip(table["path"], table["status"])) == expected
    assert not any(".hidden" in p for p in table["path"])
    assert summary.exit_code == 1  # the corrupt files failed
    failed = table[table["status"] == "failed"]
    assert failed["reason"].str.match(r"^(truncated|not_dicom|undecodable): ").all(), failed["reason"].tolist()
    readme = table[table["path"].str.endswith("README.txt")].iloc[0]
    assert readme["reason"] == "not an image file"
    if (Path(setup[0]) / "bad" / "rtplan.dcm").exists():
        rtplan = table[table["path"].str.endswith("rtplan.dcm")].iloc[0]
        assert rtplan["reason"].startswith("not_an_image: ")
    scored_rows = table[table["status"] == "scored"]
    probabilities = scored_rows["probability"].astype(float)
    assert probabilities.between(0, 1).all() and probabilities.nunique() > 1
    threshold = float(scored_rows["threshold"].iloc[0])
    assert (scored_rows["prediction"].astype(int) == (probabilities >= threshold).astype(int)).all()
    assert set(scored_rows["prediction"]) == {"0", "1"}, "the test model must give both decisions"
    assert (scored_rows["model"] == "test-fracture@0.0.1").all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == table["status"].value_counts().reindex(["scored", "skipped", "failed"], fill_value=0).to_dict()
    assert manifest["interrupted"] is False and manifest["model"]["version"] == "0.0.1"
    assert {"monai-fracture", "monai", "torch", "pydicom", "highdicom"} <= set(manifest["versions"])
    timings, n_scored = manifest["timings"], manifest["counts"]["scored"]
    assert manifest["scored_this_run"] == n_scored
    assert timings["total_s"] <= WALL_S[out] and timings["scan_s"] + timings["score_s"] <= timings["total_s"]
    assert 0 < timings["model_s"] <= timings["score_s"]
    assert manifest["images_per_second"] == pytest.approx(n_scored / timings["total_s"], rel=1e-3)
    assert manifest["model_images_per_second"] == pytest.approx(n_scored / timings["model_s"], rel=1e-3)
    assert not (out / "results.csv.tmp").exists() and not list(out.rglob(".*.tmp"))


def test_sr_and_kos_agree_with_results(scored):
    summary, out = scored
    table = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    scored_rows = table[table["status"] == "scored"]
    by_sop = {row.sop_uid: row for row in scored_rows.itertuples()}
    sr_files = sorted(out.glob("dicom/*/SR_*.dcm"))
    assert len(sr_files) == scored_rows["study_uid"].nunique()
    seen = set()
    for path in sr_files:
        sr = pydicom.dcmread(path)
        study_rows = scored_rows[scored_rows["study_uid"] == sr.StudyInstanceUID]
        source = pydicom.dcmread(study_rows["path"].iloc[0], stop_before_pixels=True)
        for keyword in ("PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyID"):
            assert str(sr.get(keyword, "")) == str(source.get(keyword, "")), keyword
        groups = [i for i in _sr_items(sr) if i.ValueType == "CONTAINER" and i.ConceptNameCodeSequence[0].CodeValue == "125007"]
        for group in groups:
            items = list(_sr_items(group))
            ref = [i for i in items if i.ValueType == "IMAGE"][0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            probability = [i for i in items if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "122157"][0]
            value = [i for i in items if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "125605004"][0]
            row = by_sop[ref]
            assert f"{float(probability.MeasuredValueSequence[0].NumericValue):.6f}" == row.probability
            assert value.ConceptCodeSequence[0].CodeValue == ("52101004" if row.prediction == "1" else "272519000")
            seen.add(ref)
        positives = set(study_rows[study_rows["prediction"] == "1"]["sop_uid"])
        kos_files = list(path.parent.glob("KO_*.dcm"))
        if positives:
            kos = pydicom.dcmread(kos_files[0])
            refs = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in _sr_items(kos) if i.ValueType == "IMAGE"}
            assert refs == positives
        else:
            assert kos_files == []
        sc_files = list(path.parent.glob("SC_*.dcm"))
        assert {pydicom.dcmread(p).SourceImageSequence[0].ReferencedSOPInstanceUID for p in sc_files} == positives
    assert seen == set(scored_rows["sop_uid"])
    for path in sorted(out.glob("dicom/*/*.dcm")):
        assert dciodvfy_errors(path) == [], path


def test_heatmap_maps_back_to_source_geometry(setup, scored):
    _, out = scored
    sc_files = sorted(out.glob("dicom/*/SC_*.dcm"))
    assert sc_files, "positives with --heatmaps give Secondary Captures"
    for path in sc_files[:2]:
        sc = pydicom.dcmread(path)
        source_uid = sc.SourceImageSequence[0].ReferencedSOPInstanceUID
        source = next(p for p in image_files(setup[0]) if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == source_uid)
        header = pydicom.dcmread(source, stop_before_pixels=True)
        assert (sc.Rows, sc.Columns) == (header.Rows, header.Columns)
        assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.shape == (header.Rows, header.Columns, 3)


def test_no_dicom_cli_and_resume_noop(setup, tmp_path):
    folder, model, expected = setup
    out = tmp_path / "out"
    code = cli_main(["score", str(folder), "--out", str(out), "--model", str(model), "--no-dicom", "--no-progress", "--batch-size", "8"])
    assert code == 1  # corrupt inputs failed
    assert not (out / "dicom").exists() and not list(out.rglob("*.dcm"))
    table = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    assert dict(zip(table["path"], table["status"])) == expected
    first = (out / "results.csv").read_bytes()
    # a second run finds everything done and rewrites the same table
    assert cli_main(["score", str(folder), "--out", str(out), "--model", str(model), "--no-dicom", "--no-progress"]) == 1
    assert (out / "results.csv").read_bytes() == first
    assert json.loads((out / "manifest.json").read_text())["scored_this_run"] == 0


def test_usage_errors(setup, tmp_path, monkeypatch):
    folder, model, _ = setup
    assert cli_main(["score", str(folder), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "nope")]) == 2
    monkeypatch.setenv("MONAI_FRACTURE_MODEL", str(tmp_path / "missing"))
    monkeypatch.chdir(tmp_path)
    import monai_fracture.scoring.classifier as classifier_module

    monkeypatch.setattr(classifier_module, "default_model_path", lambda: None)
    import monai_fracture.scoring.runner as runner_module

    monkeypatch.setattr(runner_module, "default_model_path", lambda: None)
    assert cli_main(["score", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert cli_main(["score", str(folder), "--out", str(tmp_path / "o"), "--model", str(model), "--shard", "3/2"]) == 2
    assert cli_main(["score", str(folder / "missing"), "--out", str(tmp_path / "o"), "--model", str(model)]) == 2
    # an output folder of another threshold is refused instead of mixing results
    good = cli_main(["score", str(folder / "bad"), "--out", str(tmp_path / "o2"), "--model", str(model), "--no-dicom"])
    assert good == 1
    assert cli_main(["score", str(folder / "bad"), "--out", str(tmp_path / "o2"), "--model", str(model), "--threshold", "0.01"]) == 2


def test_classifier_scores_in_memory_images_like_the_batch_run(setup, scored):
    from monai_fracture.io import read_image

    folder, model, _ = setup
    _, out = scored
    table = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False).set_index("path")
    classifier = Classifier(model)
    files = image_files(folder)[:5]
    probabilities = classifier.score([read_image(p) for p in files], batch_size=2)
    expected = np.array([float(table.loc[str(p), "probability"]) for p in files])
    np.testing.assert_allclose(probabilities, expected, atol=PROBABILITY_TOLERANCE)
    assert (classifier.decide(probabilities) == (expected >= classifier.threshold)).all()


def test_ctrl_c_leaves_consistent_outputs_and_resumes(setup, scored, tmp_path, monkeypatch):
    folder, model, expected = setup
    out = tmp_path / "out"
    calls = {"n": 0}
    original = Classifier.predict

    def interrupt_on_second_batch(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Classifier, "predict", interrupt_on_second_batch)
    summary = score_paths([folder], out, model=model, batch_size=4, progress=False)
    assert summary.interrupted and summary.exit_code == 130
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["interrupted"] is True
    partial = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    assert partial["path"].is_unique and set(partial["path"]) < set(expected)
    assert (partial["status"] == "scored").sum() == 4  # the first batch only
    monkeypatch.setattr(Classifier, "predict", original)
    resumed = score_paths([folder], out, model=model, batch_size=4, progress=False)
    assert not resumed.interrupted and resumed.exit_code == 1
    assert json.loads((out / "manifest.json").read_text())["scored_this_run"] == len(
        [p for p, s in expected.items() if s == "scored"]
    ) - 4
    assert_same_results(out / "results.csv", scored[1] / "results.csv")


def test_ct_series_scored_as_volumes_or_skipped_without_ct_model(setup, tmp_path):
    import torch

    from monai_fracture.data import generate_demo_dataset
    from monai_fracture.model_package import ModelInfo, save_model
    from monai_fracture.networks import build_network

    folder = tmp_path / "ct"
    generate_demo_dataset(folder, n=1, modality="ct", seed=7, size=24)
    slices = sorted(p for p in folder.rglob("*.dcm"))
    assert len(slices) > 1
    torch.manual_seed(0)
    network = {"name": "efficientnet-b0", "spatial_dims": 3, "in_channels": 1, "num_classes": 2}
    ct_model = save_model(
        tmp_path / "ct_model",
        build_network(**network).eval(),
        ModelInfo(name="test-ct", version="0.0.2", network=network, preprocessing={"modality": "ct", "size": 32}, modality="ct"),
    )
    without = score_paths([folder], tmp_path / "without", model=setup[1], progress=False)
    table = without.results.set_index("path")
    assert (table.loc[[str(p) for p in slices], "status"] == "skipped").all()
    assert table.loc[str(slices[0]), "reason"].startswith("no_ct_model")

    summary = score_paths([folder], tmp_path / "with", model=setup[1], ct_model=ct_model, progress=False)
    assert summary.exit_code == 0
    table = summary.results.set_index("path")
    rows = table.loc[[str(p) for p in slices]]
    assert (rows["status"] == "scored").all() and rows["probability"].nunique() == 1
    assert (rows["model"] == "test-ct@0.0.2").all() and rows["sop_uid"].is_unique
    sr_files = list((tmp_path / "with").glob("dicom/*/SR_*.dcm"))
    assert len(sr_files) == 1
    sr = pydicom.dcmread(sr_files[0])
    items = list(_sr_items(sr))
    refs = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.ValueType == "IMAGE"}
    assert refs == set(rows["sop_uid"])
    procedure = [i for i in items if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedure[0].ConceptCodeSequence[0].CodeValue == "77477000"  # computed tomography
    assert dciodvfy_errors(sr_files[0]) == []


def test_hostile_tags_and_picture_formats(setup, tmp_path):
    """Tag values never become paths or break the CSV; PNG files are scored without DICOM outputs."""
    from PIL import Image

    folder, model, _ = setup
    source = image_files(folder)[0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    hostile = pydicom.dcmread(source)
    hostile.StudyInstanceUID = "../../evil\x01study"
    hostile.PatientID = "../../../etc/passwd"
    hostile.SOPInstanceUID = "1.2.3.4.5.6"
    hostile.save_as(inputs / "hostile_uid", enforce_file_format=True)
    odd = pydicom.dcmread(source)
    odd.PatientName = "A" * 500
    odd.StudyDate = "not a date"
    odd.SOPInstanceUID = "1.2.3.4.5.7"
    odd.save_as(inputs / "odd_values.dcm", enforce_file_format=True)
    pixels = pydicom.dcmread(source).pixel_array.astype(np.float32)
    grey = np.round(255 * (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1.0)).astype(np.uint8)
    Image.fromarray(grey).save(inputs / "photo.png")
    out = tmp_path / "out"
    summary = score_paths([inputs], out, model=model, progress=False)
    table = summary.results.set_index("path")
    assert (table["status"] == "scored").all(), table[["status", "reason"]]
    assert table.loc[str(inputs / "photo.png"), "study_uid"] == ""
    assert "\x01" not in table.loc[str(inputs / "hostile_uid"), "study_uid"]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert all(out in p.parents or p.parent == out for p in written)
    assert not any("evil" in str(p) or "passwd" in str(p) for p in written)
    # the study with an invalid UID cannot be referenced: reported, not crashed; the odd one is valid
    assert summary.exit_code == 1 and summary.dicom_output_errors
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dicom_output_errors"] and manifest["counts"]["scored"] == 3
    sr_files = list(out.glob("dicom/*/SR_*.dcm"))
    assert len(sr_files) == 1
    sr = pydicom.dcmread(sr_files[0])
    assert sr.StudyDate == "" and len(str(sr.PatientName)) <= 64
    assert dciodvfy_errors(sr_files[0]) == []


def test_real_dicom_corpus_every_file_once_and_outputs_valid(setup, dicom_corpus, tmp_path):
    """The real third-party corpus (244 DICOM files of every kind + decoys): no crash, every file
    once, the documented radiographs scored, and every SR/KOS built from their headers is valid."""
    _, model, _ = setup
    out = tmp_path / "out"
    summary = score_paths([dicom_corpus], out, model=model, workers=1, progress=False)
    table = summary.results
    files = sorted(str(p) for p in dicom_corpus.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert sorted(table["path"]) == files
    assert set(table["status"]) == {"scored", "skipped", "failed"}
    scored = set(table.loc[table["status"] == "scored", "path"])
    for name in ("highdicom_testdata/dx_image.dcm", "pylibjpeg_data/JPEGLS/RG1_JLSN.dcm",
                 "pydicom_test_files/dicomdirtests/77654033/CR1/6154"):
        assert str(dicom_corpus / name) in scored, name
    not_images = table[table["path"].str.endswith(("rtplan.dcm", "sr_document.dcm", "DICOMDIR"))]
    assert (not_images["status"] == "skipped").all()
    assert not (table["reason"].str.contains("\n")).any()
    assert summary.dicom_output_errors == []
    written = sorted(out.glob("dicom/*/*.dcm"))
    studies = set(table.loc[table["status"] == "scored", "study_uid"]) - {""}  # a file without a study gets no SR
    assert len(list(out.glob("dicom/*/SR_*.dcm"))) == len(studies)
    for path in written:
        assert dciodvfy_errors(path) == [], path
