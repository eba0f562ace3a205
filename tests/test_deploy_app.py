"""The MONAI Deploy application, run as users run it: ``python -m monai_fracture.deploy -i -o -m``."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from orthanc import KOS_STORAGE_CLASS, TINY_MODEL_THRESHOLD, evidence_uids, make_tiny_model, sr_findings, study_folders

pytest.importorskip("monai.deploy.operators.dicom_series_selector_operator", reason="monai-deploy-app-sdk not installed (pip install 'monai-fracture[deploy]')")
pytest.importorskip("holoscan", reason="holoscan not installed (comes with monai-deploy-app-sdk)")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _bigger_stack() -> None:  # holoscan warns below 32 MiB of stack
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = 32 * 1024 * 1024
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_STACK, (want, hard))


@pytest.fixture(scope="module")
def app_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from monai_fracture.data.synthetic import generate_demo_dataset
    from monai_fracture.scoring import score_paths

    root = tmp_path_factory.mktemp("deploy_app")
    # One model folder serving both families: xr/ and ct/ subfolders.
    model = root / "model"
    make_tiny_model(model / "xr")
    make_tiny_model(model / "ct", size=32, modality="ct")
    generate_demo_dataset(root / "data" / "xr", n=6, modality="xr", seed=5, size=64)
    generate_demo_dataset(root / "data" / "ct", n=1, modality="ct", seed=6, size=32)
    studies = study_folders(root / "data" / "xr") + study_folders(root / "data" / "ct")
    assert len(studies) >= 3
    out = root / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "monai_fracture.deploy", "-i", str(root / "data"), "-o", str(out), "-m", str(model)],
        capture_output=True, text=True, timeout=240, preexec_fn=_bigger_stack, cwd=root,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    # the same files through `score`, with its default outputs (SR with region, KOS, GSPS)
    score_paths([str(root / "data")], root / "reference", model=str(model / "xr"), ct_model=str(model / "ct"))
    reference = pd.read_csv(root / "reference" / "results.csv")
    ct_studies = set(reference.loc[reference["path"].str.contains("/data/ct/"), "study_uid"].dropna())
    assert len(ct_studies) == 1
    return {"out": out, "reference": reference, "n_studies": len(studies), "ct_studies": ct_studies}


def test_app_writes_one_referenced_sr_per_study(app_run: dict) -> None:
    reference = app_run["reference"]
    scored = reference[reference["status"] == "scored"]
    srs = [pydicom.dcmread(p) for p in sorted(app_run["out"].rglob("SR_*.dcm"))]
    assert len(srs) == app_run["n_studies"] == scored["study_uid"].nunique()
    assert app_run["ct_studies"] <= {sr.StudyInstanceUID for sr in srs}
    probability_of = dict(zip(scored["sop_uid"], scored["probability"]))
    for sr in srs:
        images = set(scored.loc[scored["study_uid"] == sr.StudyInstanceUID, "sop_uid"])
        # TID 1500 Imaging Measurement Report, not the SDK's Basic Text SR
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
        assert (sr.ConceptNameCodeSequence[0].CodeValue, sr.ConceptNameCodeSequence[0].CodingSchemeDesignator) == ("126000", "DCM")
        assert sr.CompletionFlag == "COMPLETE"
        assert evidence_uids(sr) == images
        groups = sr_findings(sr)
        if sr.StudyInstanceUID in app_run["ct_studies"]:  # one group for the series, referencing every slice
            assert len(groups) == 1 and groups[0]["sop_uids"] == images and len(images) > 1
        else:  # radiographs: one group per image
            assert len(groups) == len(images)
        for group in groups:
            sop_uid = sorted(group["sop_uids"])[0]
            assert group["probability"] == pytest.approx(probability_of[sop_uid], abs=1e-4)
            assert group["unit"] == "1" and group["threshold"] == pytest.approx(TINY_MODEL_THRESHOLD)
            assert group["finding"] == ("52101004" if group["probability"] >= TINY_MODEL_THRESHOLD else "272519000")
    for kos in (pydicom.dcmread(p) for p in app_run["out"].rglob("KO_*.dcm")):
        assert kos.SOPClassUID == KOS_STORAGE_CLASS
        positives = set(scored.loc[(scored["study_uid"] == kos.StudyInstanceUID) & (scored["probability"] >= TINY_MODEL_THRESHOLD), "sop_uid"])
        assert evidence_uids(kos) == positives and positives


def test_app_writes_the_objects_score_writes(app_run: dict) -> None:
    """SR (with the evidence region), KOS and GSPS of the app are those of `score`: same content-derived
    SOP Instance UIDs (reports.series) and the same SR content, element for element."""
    def by_uid(folder: Path) -> dict[str, pydicom.Dataset]:
        return {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in folder.rglob("*.dcm"))}

    app, score = by_uid(app_run["out"]), by_uid(app_run["reference"] / "dicom")
    modalities = sorted(ds.Modality for ds in score.values())
    assert "PR" in modalities and "KO" in modalities, modalities  # positives with a region exist
    assert set(app) == set(score)
    for uid, ds in score.items():
        if ds.Modality == "SR":
            assert sr_findings(app[uid]) == sr_findings(ds)
            assert app[uid].ContentSequence == ds.ContentSequence


def test_selection_rules_pick_cr_dx_ct_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monai.deploy.core.domain.dicom_series import DICOMSeries
    from monai.deploy.core.domain.dicom_study import DICOMStudy
    from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

    from monai_fracture.deploy.rules import RULES_ENV, selection_rules

    study = DICOMStudy("1.2.3")
    study.StudyDescription = "wrist"
    for uid, modality in (("1.1", "CR"), ("1.2", "DX"), ("1.3", "CT"), ("1.4", "MR"), ("1.5", "SR")):
        series = DICOMSeries(uid)
        series.Modality = modality
        study.add_series(series)
    from monai.deploy.core import Fragment

    selector = DICOMSeriesSelectorOperator(Fragment(), rules=selection_rules(), all_matched=True, name="selector")
    selected = selector.filter(json.loads(selection_rules()), [study], True)
    names = sorted((s.selection_name, s.series.Modality) for s in selected[0].selected_series)
    assert names == [("CT", "CT"), ("Radiograph (CR)", "CR"), ("Radiograph (DX)", "DX")]

    custom = tmp_path / "rules.json"
    custom.write_text(json.dumps({"selections": [{"name": "DX only", "conditions": {"Modality": "DX"}}]}))
    monkeypatch.setenv(RULES_ENV, str(custom))
    assert json.loads(selection_rules())["selections"][0]["name"] == "DX only"
    custom.write_text("{}")
    with pytest.raises(ValueError, match="selections"):
        selection_rules()
