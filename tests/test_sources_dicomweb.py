"""`monai-fracture score dicomweb+http://...` against a real Orthanc (DICOMweb plugin) in a network namespace.

One driver run (tests/helpers/dicomweb_driver.py) does the network work: a full QIDO/WADO run that sends
its results back by STOW-RS, a run SIGKILLed midway and rerun, a run against a dead port. These
tests check its log against scoring the very same files from a folder.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from helpers.needs import missing
from helpers.orthanc import make_tiny_model, namespace_unavailable_reason, run_driver, study_folders

N_STUDIES = 8


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
    spec = {"model": str(model), "studies": [str(p) for p in studies]}
    log = run_driver(spec, root / "out", timeout_s=900, script=Path(__file__).parent / "helpers" / "dicomweb_driver.py")
    score_paths([str(p) for p in studies], root / "folder", model=str(model), write_dicom=False)
    reference = pd.read_csv(root / "folder" / "results.csv", dtype=str, keep_default_na=False)
    # the query asks for studies with a DX image; the generator mixes DX and CR
    modalities = {(ds.StudyInstanceUID, ds.Modality) for ds in (pydicom.dcmread(p, stop_before_pixels=True)
                                                                 for p in reference["path"])}
    dx = {study for study, modality in modalities if modality == "DX"}
    assert dx and dx != {study for study, _ in modalities}, "the generated studies should mix DX and CR-only"
    return {"log": log, "out": root / "out", "reference": reference[reference["study_uid"].isin(dx)],
            "reference_all": reference}


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


@pytest.mark.network
@pytest.mark.slow
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


@pytest.mark.network
@pytest.mark.slow
def test_the_ray_engine_scores_a_dicomweb_source_like_a_folder(dicomweb_run: dict) -> None:
    ray = dicomweb_run["log"]["ray"]
    assert ray["rc"] == 0, ray["stderr"]
    _assert_same_as_folder(dicomweb_run["out"] / "ray" / "results.csv", dicomweb_run["reference"])
    manifest = json.loads((dicomweb_run["out"] / "ray" / "manifest.json").read_text())
    assert manifest["settings"]["engine"] == "ray"


@pytest.mark.network
@pytest.mark.slow
def test_resume_after_sigkill_does_not_fetch_finished_instances(dicomweb_run: dict) -> None:
    log = dicomweb_run["log"]
    killed, resumed = log["killed"], log["resumed"]
    reference = dicomweb_run["reference_all"]  # --study-list names every stored study
    finished = {json.loads(line)["sop_uid"] for line in killed["journal"].splitlines() if '"type": "row"' in line}
    assert 0 < len(finished) < len(reference), "killed midway"
    assert resumed["rc"] == 0, resumed["stderr"]
    assert resumed["fetched"], "the killed run had not fetched everything"
    assert not finished & set(resumed["fetched"]), "a finished instance was fetched again"
    assert set(killed["fetched"]) | set(resumed["fetched"]) == set(reference["sop_uid"])
    assert len(killed["fetched"]) == len(set(killed["fetched"])) and len(resumed["fetched"]) == len(set(resumed["fetched"]))
    assert resumed["spool_left"] == []
    _assert_same_as_folder(dicomweb_run["out"] / "resume" / "results.csv", reference)
    again = log["again"]
    assert again["rc"] == 0 and again["fetched"] == [], "a finished run fetches nothing"


@pytest.mark.network
@pytest.mark.slow
def test_unreachable_server_is_a_clear_input_error(dicomweb_run: dict) -> None:
    unreachable = dicomweb_run["log"]["unreachable"]
    assert unreachable["rc"] == 2
    assert "DICOMweb server http://127.0.0.1:9/dicom-web" in unreachable["stderr"]
    assert "unreachable" in unreachable["stderr"]


# ---------------------------------------------------------------------------- without Orthanc
class _FlakyQido(http.server.BaseHTTPRequestHandler):
    """QIDO-RS studies endpoint: answers ``plan`` status codes in turn, then one study."""

    plan: list[int] = []
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).seen.append(self.path)
        status = type(self).plan.pop(0) if type(self).plan else 200
        body = json.dumps([{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]).encode() if status == 200 else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def flaky_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyQido)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FlakyQido.seen = []
    yield server
    server.shutdown()
    server.server_close()


def test_transient_server_errors_are_retried_with_backoff(flaky_server) -> None:
    from monai_fracture.sources.dicomweb import DicomwebSource

    _FlakyQido.plan = [503, 502]
    source = DicomwebSource(f"dicomweb+http://127.0.0.1:{flaky_server.server_port}/dicom-web", backoff_s=0.05)
    assert list(source.studies({"ModalitiesInStudy": "DX"})) == ["1.2.3"]
    assert len(_FlakyQido.seen) == 3
    assert all("ModalitiesInStudy=DX" in path and "limit=500" in path for path in _FlakyQido.seen)


def test_a_refusal_is_not_retried_and_names_the_server(flaky_server) -> None:
    from monai_fracture.sources.dicomweb import DicomwebError, DicomwebSource

    _FlakyQido.plan = [403]
    url = f"http://127.0.0.1:{flaky_server.server_port}/dicom-web"
    with pytest.raises(DicomwebError, match=f"DICOMweb server {url}: .*HTTP 403"):
        list(DicomwebSource(f"dicomweb+{url}", backoff_s=0.05).studies({}))
    assert len(_FlakyQido.seen) == 1


def test_secrets_come_from_files_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monai_fracture.sources.dicomweb import base_url, read_headers

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    headers = tmp_path / "headers"
    headers.write_text("# comment\nX-Api-Key: abc\n")
    assert read_headers(str(token), str(headers)) == {"Authorization": "Bearer s3cret", "X-Api-Key": "abc"}
    monkeypatch.setenv("MONAI_FRACTURE_DICOMWEB_TOKEN", "from-env")
    assert read_headers() == {"Authorization": "Bearer from-env"}
    headers.write_text("no colon here\n")
    with pytest.raises(ValueError, match="line 1"):
        read_headers(None, str(headers))
    with pytest.raises(ValueError, match="credentials in the URL"):
        base_url("dicomweb+https://user:pw@pacs.example/dicom-web")
    assert base_url("dicomweb+https://pacs.example/dicom-web/") == "https://pacs.example/dicom-web"
