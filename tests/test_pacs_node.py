"""The node in-process on loopback: results sent to a C-STORE SCP, failures recorded, never dropped."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, KeyObjectSelectionDocumentStorage

from helpers.orthanc import evidence_uids, make_tiny_model, sr_findings, store_files, study_folders
from monai_fracture.pacs import DicomNode, NodeConfig
from monai_fracture.pacs.config import Destination

pytestmark = pytest.mark.network


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Collector:
    """A Storage SCP on loopback standing in for the PACS that receives our results."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.received: list[pydicom.Dataset] = []
        self.lock = threading.Lock()
        ae = AE(ae_title="PACS")
        for sop_class in (Comprehensive3DSRStorage, KeyObjectSelectionDocumentStorage):
            ae.add_supported_context(sop_class)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self.lock:
            self.received.append(ds)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def _wait(predicate, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("node_model") / "model")


def test_node_scores_sends_and_records_failures(tmp_path: Path, model: Path, caplog: pytest.LogCaptureFixture) -> None:
    from monai_fracture.data.synthetic import generate_demo_dataset

    generate_demo_dataset(tmp_path / "data", n=3, modality="xr", seed=2, size=64)
    good_study = study_folders(tmp_path / "data")[0]
    good_files = sorted(p for p in good_study.rglob("*") if p.is_file())
    # A study whose only instance has no pixel data: nothing to score, must end up in failed/.
    bad = pydicom.dcmread(good_files[0])
    del bad.PixelData
    bad.StudyInstanceUID, bad.SOPInstanceUID = generate_uid(), generate_uid()
    bad.file_meta.MediaStorageSOPInstanceUID = bad.SOPInstanceUID
    bad_path = tmp_path / "bad.dcm"
    bad.save_as(bad_path, enforce_file_format=True)
    patient_name = str(pydicom.dcmread(good_files[0]).PatientName)

    collector = Collector()
    port = _free_port()
    config = NodeConfig(
        work_dir=tmp_path / "queue", model=str(model), port=port, allowed_calling_aets=["MODALITY"],
        destination=Destination("PACS", "127.0.0.1", collector.port), study_idle_timeout_s=0.5, poll_interval_s=0.1,
    )
    node = DicomNode(config)
    caplog.set_level(logging.DEBUG, logger="monai_fracture.pacs")
    node.start()
    try:
        assert all(s == 0 for s in store_files(good_files, port, config.ae_title, "MODALITY"))
        assert store_files([bad_path], port, config.ae_title, "MODALITY") == [0]
        assert _wait(lambda: node.processed == 1 and node.failed == 1), (node.processed, node.failed)
    finally:
        node.stop()
        collector.stop()

    sent = {ds.SOPClassUID: ds for ds in collector.received}
    sr = sent[Comprehensive3DSRStorage]
    good_uids = {str(pydicom.dcmread(f).SOPInstanceUID) for f in good_files}
    assert sr.StudyInstanceUID == pydicom.dcmread(good_files[0]).StudyInstanceUID
    assert evidence_uids(sr) == good_uids
    assert {uid for g in sr_findings(sr) for uid in g["sop_uids"]} == good_uids

    (failed,) = list((config.work_dir / "failed").iterdir())
    record = json.loads((failed / "failure.json").read_text())
    assert record["study_uid"] == bad.StudyInstanceUID and record["stage"] == "scoring"
    assert "no_pixel_data" in record["error"] or "pixel" in record["error"].lower()
    assert len(list((failed / "instances").glob("*.dcm"))) == 1  # the study is kept, not dropped
    assert list((config.work_dir / "studies").iterdir()) == []
    assert any("FAILED" in r.getMessage() and bad.StudyInstanceUID in r.getMessage() for r in caplog.records)
    assert patient_name and all(patient_name not in r.getMessage() for r in caplog.records)


def test_unreachable_destination_is_retried_then_recorded(tmp_path: Path, model: Path) -> None:
    from monai_fracture.data.synthetic import generate_demo_dataset

    generate_demo_dataset(tmp_path / "data", n=1, modality="xr", seed=4, size=64)
    files = sorted(p for p in study_folders(tmp_path / "data")[0].rglob("*") if p.is_file())
    port = _free_port()
    config = NodeConfig(
        work_dir=tmp_path / "queue", model=str(model), port=port,
        destination=Destination("PACS", "127.0.0.1", _free_port()),  # nobody listens there
        study_idle_timeout_s=0.2, poll_interval_s=0.1, max_send_attempts=2, retry_delay_s=0.2,
    )
    node = DicomNode(config)
    node.start()
    try:
        assert store_files(files, port, config.ae_title, "ANY") == [0] * len(files)
        assert _wait(lambda: node.failed == 1, 60)
    finally:
        node.stop()
    (failed,) = list((config.work_dir / "failed").iterdir())
    record = json.loads((failed / "failure.json").read_text())
    assert record["stage"] == "sending" and "association" in record["error"]
    assert any("_SR_" in p.name for p in (failed / "results").glob("*.dcm"))  # the SR is kept to resend
    assert record["send_attempts"] == 2
    assert json.loads((failed / "state.json").read_text())["status"] == "failed"
