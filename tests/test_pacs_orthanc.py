"""`monai-fracture serve` beside a real Orthanc, both inside a private network namespace.

One driver run (tests/helpers/orthanc.py) does the network work; these tests check what came back:
each study's SR is in Orthanc, in the right study, referencing exactly the study's images,
with the probability our batch scorer computes for those same files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from helpers.needs import missing
from helpers.orthanc import (
    KOS_STORAGE_CLASS,
    evidence_uids,
    make_tiny_model,
    namespace_unavailable_reason,
    run_driver,
    sr_findings,
    study_folders,
)

pytestmark = [pytest.mark.network, pytest.mark.slow]

N_BASIC, N_CONCURRENT, N_WAVE, N_STOW = 3, 20, 4, 1


@pytest.fixture(scope="module")
def orthanc_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = namespace_unavailable_reason()
    if reason:
        missing(reason)
    from monai_fracture.data.synthetic import generate_demo_dataset
    from monai_fracture.scoring import score_paths

    root = tmp_path_factory.mktemp("orthanc_run")
    model = make_tiny_model(root / "model")
    n_studies = N_BASIC + N_CONCURRENT + 2 * N_WAVE + N_STOW
    generate_demo_dataset(root / "data", n=2 * n_studies + 8, modality="xr", seed=11, size=64)
    studies = study_folders(root / "data")
    assert len(studies) >= n_studies, f"only {len(studies)} studies generated"
    studies = studies[:n_studies]
    parts, start = {}, 0
    for name, count in (("basic", N_BASIC), ("concurrent", N_CONCURRENT), ("restart_a", N_WAVE), ("restart_b", N_WAVE), ("stow", N_STOW)):
        parts[name] = [str(p) for p in studies[start : start + count]]
        start += count
    spec = {"model": str(model), "work_dir": str(root / "queue"), "idle_timeout_s": 1.5, **parts}
    log = run_driver(spec, root / "out", timeout_s=300)
    # What our batch scorer says about the very same files (the reference for every SR).
    score_paths([str(p) for p in studies], root / "reference", model=str(model), write_dicom=False)
    reference = pd.read_csv(root / "reference" / "results.csv")
    study_images = {
        uid: set(group.loc[group["status"] == "scored", "sop_uid"]) for uid, group in reference.groupby("study_uid")
    }
    return {"log": log, "parts": parts, "reference": reference.set_index("sop_uid"), "study_images": study_images}


def _results(run: dict, scenario: str) -> dict[str, list[pydicom.Dataset]]:
    entry = run["log"][scenario]
    return {uid: [pydicom.dcmread(f) for f in item["files"]] for uid, item in entry["results"].items()}


def _check_study(run: dict, study_uid: str, objects: list[pydicom.Dataset]) -> None:
    reference, images = run["reference"], run["study_images"][study_uid]
    srs = [ds for ds in objects if ds.Modality == "SR"]
    assert len(srs) == 1, f"study {study_uid}: {len(srs)} SRs"
    sr = srs[0]
    assert sr.StudyInstanceUID == study_uid
    assert evidence_uids(sr) == images
    groups = sr_findings(sr)
    assert {uid for g in groups for uid in g["sop_uids"]} == images
    for group in groups:
        (sop_uid,) = group["sop_uids"]  # radiographs: one group per image
        expected = float(reference.loc[sop_uid, "probability"])
        assert group["probability"] == pytest.approx(expected, abs=1e-4)
        assert group["unit"] == "1"
        positive = group["probability"] >= group["threshold"]
        assert group["finding"] == ("52101004" if positive else "272519000")
    positives = {uid for g in groups if g["finding"] == "52101004" for uid in g["sop_uids"]}
    kos = [ds for ds in objects if ds.SOPClassUID == KOS_STORAGE_CLASS]
    if positives:
        assert len(kos) == 1 and kos[0].StudyInstanceUID == study_uid
        assert evidence_uids(kos[0]) == positives
    else:
        assert kos == []


def test_echo_and_calling_ae_title_check(orthanc_run: dict) -> None:
    log = orthanc_run["log"]
    assert log["echo_allowed"] is True
    assert log["echo_unknown_aet"] is False  # rejected at association
    assert log["orthanc_echo_node"] is True


def test_study_sent_by_orthanc_gets_its_sr_back(orthanc_run: dict) -> None:
    log = orthanc_run["log"]["basic"]
    assert log["missing"] == []
    results = _results(orthanc_run, "basic")
    assert len(results) == N_BASIC
    for study_uid, objects in results.items():
        _check_study(orthanc_run, study_uid, objects)
    probabilities = orthanc_run["reference"]["probability"].dropna()
    assert probabilities.nunique() > 1  # the model tells images apart, so equality above means something


def test_twenty_concurrent_studies_none_lost(orthanc_run: dict) -> None:
    log = orthanc_run["log"]
    assert all(status == 0 for statuses in log["concurrent_store_statuses"] for status in statuses)
    assert log["concurrent"]["missing"] == []
    results = _results(orthanc_run, "concurrent")
    assert len(results) == N_CONCURRENT
    for study_uid, objects in results.items():
        _check_study(orthanc_run, study_uid, objects)


def test_sigkill_and_restart_loses_nothing(orthanc_run: dict) -> None:
    log = orthanc_run["log"]
    assert all(status == 0 for statuses in log["restart_b_store_statuses"] for status in statuses)
    assert log["pending_at_kill"] >= N_WAVE  # the second wave was acknowledged but not yet scored
    assert log["restart"]["missing"] == []
    results = _results(orthanc_run, "restart")
    assert len(results) == 2 * N_WAVE
    for study_uid, objects in results.items():
        _check_study(orthanc_run, study_uid, objects)
    assert log["queue_left"] == [] and log["failed_left"] == []
    assert log["sigterm_returncode"] == 0  # graceful shutdown on SIGTERM


def test_results_by_stow_rs(orthanc_run: dict) -> None:
    log = orthanc_run["log"]
    assert log["stow"]["missing"] == []
    for study_uid, objects in _results(orthanc_run, "stow").items():
        _check_study(orthanc_run, study_uid, objects)
    assert log["stow_sigterm_returncode"] == 0
