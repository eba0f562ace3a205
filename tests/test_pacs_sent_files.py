"""The node sends exactly the files the scoring run reports, never whatever lies in a folder:
a stray file is not sent, and a restart between scoring and sending keeps the reported list."""

from __future__ import annotations

import time
from pathlib import Path

from pydicom.uid import generate_uid

from monai_fracture.pacs.config import NodeConfig
from monai_fracture.pacs.node import DicomNode
from monai_fracture.pacs.queue import JobStatus, StudyQueue
from monai_fracture.pacs.sender import SendError


class RecordingSender:
    """Refuses the first ``failures`` sends (as an unreachable PACS), then records what it is given."""

    def __init__(self, failures: int = 0) -> None:
        self.sent: list[list[bytes]] = []
        self.failures = failures

    def describe(self) -> str:
        return "recording sender"

    def send(self, files) -> None:
        if self.failures:
            self.failures -= 1
            raise SendError("destination unreachable")
        self.sent.append([Path(f).read_bytes() for f in files])


def _complete_job(queue: StudyQueue):
    study = generate_uid()
    job = queue.begin_instance(study, 10)
    queue.add_instance(job, generate_uid(), b"instance bytes")
    queue.claim_complete(0.0, now=time.time() + 1)
    return job


def test_the_node_sends_what_the_scorer_reports_and_nothing_else(tmp_path: Path) -> None:
    def scorer(instances_dir: Path, out_dir: Path) -> list[Path]:
        (out_dir / "dicom").mkdir(parents=True)
        reported = []
        for name in ("SR_1.dcm", "KO_1.dcm"):
            (out_dir / "dicom" / name).write_bytes(name.encode())
            reported.append(out_dir / "dicom" / name)
        return reported

    sender = RecordingSender(failures=1)
    node = DicomNode(NodeConfig(work_dir=tmp_path / "queue", port=0, stow_url="http://127.0.0.1:9",
                                retry_delay_s=0.0), scorer=scorer, sender=sender)
    job = _complete_job(node.queue)
    node.process(job)  # scored; the send fails and is retried later
    assert job.status == JobStatus.SCORED and not sender.sent
    (job.results_dir / "999_stray.dcm").write_bytes(b"not reported")  # e.g. copied in by hand meanwhile
    node.process(job)
    assert sender.sent == [[b"SR_1.dcm", b"KO_1.dcm"]]


def test_a_restart_after_scoring_sends_the_reported_files_only(tmp_path: Path) -> None:
    queue = StudyQueue(tmp_path / "queue")
    job = _complete_job(queue)
    result = tmp_path / "SR_1.dcm"
    result.write_bytes(b"report")
    queue.mark_scored(job, [result])
    (job.results_dir / "999_stray.dcm").write_bytes(b"stray")  # appeared after scoring
    recovered = {j.job_id: j for j in StudyQueue(tmp_path / "queue").recover()}[job.job_id]
    assert recovered.status == JobStatus.SCORED
    assert [f.read_bytes() for f in recovered.result_files] == [b"report"]
    # a listed file gone (crash while moving results in): scored again rather than sent short
    recovered.result_files[0].unlink()
    again = {j.job_id: j for j in StudyQueue(tmp_path / "queue").recover()}[job.job_id]
    assert again.status == JobStatus.COMPLETE
