"""The node's on-disk queue and Storage SCP, without a model: persistence, bounds, AE checks."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, Verification

from monai_fracture.pacs.config import NodeConfig, build_config, read_config_file
from monai_fracture.pacs.queue import JobStatus, QueueFull, StudyQueue
from monai_fracture.pacs.scp import OUT_OF_RESOURCES, StorageHandlers, build_storage_ae

pytestmark = pytest.mark.network


def _dx(study_uid: str, rows: int = 16) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "DX", "Doe^Jane", "P1"
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(rows * rows, dtype=np.uint16).tobytes()
    return ds


def _encoded(ds: Dataset, tmp_path: Path) -> bytes:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_receive_complete_and_late_instance_starts_new_job(tmp_path: Path) -> None:
    queue = StudyQueue(tmp_path / "work")
    study = generate_uid()
    first, second = _dx(study), _dx(study)
    job = queue.begin_instance(study, 100, "PACS")
    queue.add_instance(job, first.SOPInstanceUID, _encoded(first, tmp_path))
    job2 = queue.begin_instance(study, 100, "PACS")
    assert job2 is job  # same study while receiving: same job
    queue.add_instance(job2, second.SOPInstanceUID, _encoded(second, tmp_path))
    assert job.n_instances == 2 and job.bytes > 0
    assert queue.claim_complete(idle_timeout_s=60) == []  # not idle long enough
    ready = queue.claim_complete(idle_timeout_s=0.0, now=time.time() + 1)
    assert ready == [job] and job.status == JobStatus.COMPLETE
    # A late instance of the same study must not join a job already taken for scoring.
    late = queue.begin_instance(study, 100, "PACS")
    assert late is not job and late.study_uid == study
    queue.abort_instance(late)
    assert not late.directory.exists()
    # Files are readable DICOM, named by a hash (no UID or patient data in paths).
    files = sorted(job.instances_dir.glob("*.dcm"))
    assert len(files) == 2 and all(study not in f.name for f in files)
    assert {str(pydicom.dcmread(f).SOPInstanceUID) for f in files} == {first.SOPInstanceUID, second.SOPInstanceUID}


def test_recover_after_restart(tmp_path: Path) -> None:
    work = tmp_path / "work"
    queue = StudyQueue(work)
    receiving, complete, scored = generate_uid(), generate_uid(), generate_uid()
    jobs = {}
    for uid in (receiving, complete, scored):
        ds = _dx(uid)
        jobs[uid] = queue.begin_instance(uid, 100)
        queue.add_instance(jobs[uid], ds.SOPInstanceUID, _encoded(ds, tmp_path))
    (jobs[receiving].instances_dir / ".half.dcm.x.tmp").write_bytes(b"partial")  # crashed mid-write
    queue.claim_complete(0.0, now=time.time() + 1)  # all three complete now
    jobs[receiving].status = JobStatus.RECEIVING  # pretend this one was still receiving at the crash
    queue.save(jobs[receiving])
    results = tmp_path / "sr.dcm"
    results.write_bytes(b"x")
    queue.mark_scored(jobs[scored], [results])

    restarted = StudyQueue(work)
    recovered = {job.study_uid: job for job in restarted.recover()}
    assert set(recovered) == {receiving, complete, scored}
    assert recovered[receiving].status == JobStatus.RECEIVING and recovered[receiving].n_instances == 1
    assert not list(recovered[receiving].instances_dir.glob("*.tmp"))
    assert recovered[complete].status == JobStatus.COMPLETE
    assert recovered[scored].status == JobStatus.SCORED
    # The receiving job takes new instances of its study again, and completes after the idle time.
    assert restarted.begin_instance(receiving, 10) is recovered[receiving]
    restarted.abort_instance(recovered[receiving])
    assert {j.study_uid for j in restarted.claim_complete(0.0, now=time.time() + 1)} == {receiving, complete, scored}


def test_bounds_failure_record_and_done(tmp_path: Path) -> None:
    queue = StudyQueue(tmp_path / "work", max_pending_studies=2, max_pending_bytes=10_000)
    a, b, c = generate_uid(), generate_uid(), generate_uid()
    job_a = queue.begin_instance(a, 100)
    queue.add_instance(job_a, generate_uid(), b"\0" * 100)
    job_b = queue.begin_instance(b, 100)
    queue.add_instance(job_b, generate_uid(), b"\0" * 100)
    with pytest.raises(QueueFull, match="max_pending_studies"):
        queue.begin_instance(c, 100)
    with pytest.raises(QueueFull, match="max_pending_bytes"):
        queue.begin_instance(a, 20_000)
    where = queue.mark_failed(job_a, "scoring", "ScoringError: no image")
    record = json.loads((where / "failure.json").read_text())
    assert record["study_uid"] == a and record["stage"] == "scoring" and "no image" in record["error"]
    assert where.parent == queue.failed_dir and any((where / "instances").iterdir())
    queue.mark_done(job_b)
    assert not job_b.directory.exists()
    assert queue.begin_instance(c, 100).study_uid == c  # room again


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("work_dir: /tmp/q\nport: 11999\nallowed_calling_aets: [ORTHANC]\ndestination: {ae_title: ORTHANC, host: 127.0.0.1, port: 4242}\n")
    config = build_config(read_config_file(path), port=12000, model=None)
    assert config.port == 12000 and config.allowed_calling_aets == ["ORTHANC"]
    assert config.destination.ae_title == "ORTHANC" and config.bind_address == "127.0.0.1"
    with pytest.raises(ValueError, match="unknown config keys: colour"):
        build_config({"work_dir": "x", "colour": 1})
    with pytest.raises(ValueError, match="invalid AE title"):
        build_config({"work_dir": "x", "ae_title": "A" * 17})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_scp_checks_calling_aet_and_refuses_when_full(tmp_path: Path) -> None:
    port = _free_port()
    config = NodeConfig(work_dir=tmp_path / "work", port=port, allowed_calling_aets=["MODALITY"], max_pending_studies=1)
    queue = StudyQueue(config.work_dir, config.max_pending_studies, config.max_pending_bytes)
    server = build_storage_ae(config).start_server(
        (config.bind_address, port), block=False, evt_handlers=StorageHandlers(queue).handlers()
    )
    try:
        assert server.server_address[0] == "127.0.0.1"
        stranger = AE(ae_title="STRANGER")
        stranger.add_requested_context(Verification)
        assoc = stranger.associate("127.0.0.1", port, ae_title=config.ae_title)
        assert not assoc.is_established and assoc.is_rejected

        modality = AE(ae_title="MODALITY")
        modality.add_requested_context(Verification)
        modality.add_requested_context(DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian)
        assoc = modality.associate("127.0.0.1", port, ae_title=config.ae_title)
        assert assoc.is_established
        try:
            assert assoc.send_c_echo().Status == 0x0000
            first_study, second_study = _dx(generate_uid()), _dx(generate_uid())
            assert assoc.send_c_store(first_study).Status == 0x0000
            assert assoc.send_c_store(_dx(first_study.StudyInstanceUID)).Status == 0x0000  # same study: room
            assert assoc.send_c_store(second_study).Status == OUT_OF_RESOURCES  # a second study: full
        finally:
            assoc.release()
        (job,) = queue.pending()
        assert job.study_uid == first_study.StudyInstanceUID and job.n_instances == 2
        assert job.calling_aets == ["MODALITY"]
        stored = [pydicom.dcmread(f) for f in job.instances_dir.glob("*.dcm")]
        assert {str(ds.StudyInstanceUID) for ds in stored} == {first_study.StudyInstanceUID}
        assert all(np.array_equal(ds.pixel_array, first_study.pixel_array) for ds in stored)
    finally:
        server.shutdown()


def test_serve_command_reports_bad_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from monai_fracture.cli import main

    work = str(tmp_path / "queue")
    assert main(["serve", "--work-dir", work, "--model", str(tmp_path / "none"), "--dest", "PACS-127.0.0.1"]) == 2
    assert "expected AET@HOST:PORT" in caplog.text
    assert main(["serve", "--work-dir", work, "--model", str(tmp_path / "none")]) == 2
    assert "no destination" in caplog.text
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"work_dir": work, "model": str(tmp_path / "none"), "port": _free_port(),
                                  "destination": {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}}))
    assert main(["serve", "--config", str(config)]) == 1  # the model is loaded before listening: fail fast
    assert "model path not found" in caplog.text
