"""`monai-fracture score dicomweb+http://...` against a real Orthanc (DICOMweb plugin) in a network namespace.

One driver run (tests/dicomweb_driver.py) does the network work: a full QIDO/WADO run that sends
its results back by STOW-RS, a run SIGKILLed midway and rerun, a run against a dead port. These
tests check its log against scoring the very same files from a folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from needs import missing
from orthanc import make_tiny_model, namespace_unavailable_reason, run_driver, study_folders

pytestmark = [pytest.mark.network, pytest.mark.slow]

N_STUDIES, KILL_AFTER_ROWS = 8, 1


@pytest.fixture(scope="module")
def dicomweb_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = namespace_unavailable_reason()
    if reason:
        missing(reason)
    from monai_fracture.data.synthetic import generate_demo_dataset
    from monai_fracture.scoring import score_paths

    root = tmp_path_factory.mktemp("dicomweb_run")
    model = make_tiny_model(root / "model")
    generate_demo_dataset(root / "data", n=2 * N_STUDIES + 4, modality="xr", seed=5, size=64)
    studies = study_folders(root / "data")[:N_STUDIES]
    spec = {"model": str(model), "studies": [str(p) for p in studies], "kill_after_rows": KILL_AFTER_ROWS}
    log = run_driver(spec, root / "out", timeout_s=400, script=Path(__file__).with_name("dicomweb_driver.py"))
    score_paths([str(p) for p in studies], root / "folder", model=str(model), write_dicom=False)
    reference = pd.read_csv(root / "folder" / "results.csv", dtype=str, keep_default_na=False)
    # the query asks for studies with a DX image; the generator mixes DX and CR
    modalities = {(ds.StudyInstanceUID, ds.Modality) for ds in (pydicom.dcmread(p, stop_before_pixels=True)
                                                                 for p in reference["path"])}
    dx = {study for study, modality in modalities if modality == "DX"}
    assert dx and dx != {study for study, _ in modalities}, "the generated studies should mix DX and CR-only"
    return {"log": log, "out": root / "out", "reference": reference[reference["study_uid"].isin(dx)]}


def _by_sop(table: pd.DataFrame) -> dict[str, dict]:
    return {row["sop_uid"]: row for row in table.to_dict("records")}


def _assert_same_as_folder(results_csv: Path, reference: pd.DataFrame) -> pd.DataFrame:
    table = pd.read_csv(results_csv, dtype=str, keep_default_na=False)
    assert len(table) == len(reference), "one row per instance"
    assert table["path"].is_unique and table["sop_uid"].is_unique
    expected = _by_sop(reference)
    for row in table.to_dict("records"):
        ref = expected[row["sop_uid"]]
        assert row["path"] == f"dicomweb:{row['study_uid']}/{row['series_uid']}/{row['sop_uid']}"
        assert (row["status"], row["prediction"], row["threshold"]) == (ref["status"], ref["prediction"], ref["threshold"])
        assert float(row["probability"]) == pytest.approx(float(ref["probability"]), abs=1e-6)
    return table


def test_query_scores_like_a_folder_and_sends_results_back(dicomweb_run: dict) -> None:
    full = dicomweb_run["log"]["full"]
    assert full["rc"] == 0, full["stderr"]
    table = _assert_same_as_folder(dicomweb_run["out"] / "full" / "results.csv", dicomweb_run["reference"])
    assert sorted(full["fetched"]) == sorted(table["sop_uid"]), "each instance fetched once"
    assert not list((dicomweb_run["out"] / "full" / ".dicomweb-spool").rglob("*.dcm")), "spool emptied after scoring"
    # the SR of every study came back by STOW-RS and QIDO-RS finds it in that study
    found = dicomweb_run["log"]["modalities_after_send"]
    for study in set(table["study_uid"]):
        assert found[study].count("SR") == 1, f"study {study}: {found[study]}"
    written = sorted((dicomweb_run["out"] / "full" / "dicom").rglob("*.dcm"))
    sent = sum(m in ("SR", "KO", "PR") for v in found.values() for m in v)
    assert written and sent == len(written)
    assert {pydicom.dcmread(p).StudyInstanceUID for p in written} == set(table["study_uid"])


def test_resume_after_sigkill_does_not_fetch_finished_instances(dicomweb_run: dict) -> None:
    log = dicomweb_run["log"]
    killed, resumed = log["killed"], log["resumed"]
    assert killed["rows_at_kill"] >= KILL_AFTER_ROWS
    finished = {line.split('"sop_uid": "')[1].split('"')[0] for line in killed["journal"].splitlines()
                if '"type": "row"' in line}
    total = len(dicomweb_run["reference"])
    assert 0 < len(finished) < total, "killed midway"
    assert resumed["rc"] == 0, resumed["stderr"]
    assert not finished & set(resumed["fetched"]), "a finished instance was fetched again"
    assert set(killed["fetched"]) | set(resumed["fetched"]) == set(dicomweb_run["reference"]["sop_uid"])
    assert len(killed["fetched"]) == len(set(killed["fetched"])) and len(resumed["fetched"]) == len(set(resumed["fetched"]))
    assert resumed["spool_left"] == []
    _assert_same_as_folder(dicomweb_run["out"] / "resume" / "results.csv", dicomweb_run["reference"])
    again = log["again"]
    assert again["rc"] == 0 and again["fetched"] == [], "a finished run fetches nothing"


def test_unreachable_server_is_a_clear_input_error(dicomweb_run: dict) -> None:
    unreachable = dicomweb_run["log"]["unreachable"]
    assert unreachable["rc"] == 2
    assert "DICOMweb server http://127.0.0.1:9/dicom-web" in unreachable["stderr"]
    assert "unreachable" in unreachable["stderr"]
