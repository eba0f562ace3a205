"""On-disk work queue of received studies: one folder per study, a small state file, atomic writes.

Layout under ``work_dir``::

    studies/<job>/state.json        status and counters (written atomically)
    studies/<job>/instances/*.dcm   received instances (names are hashes of SOP Instance UIDs)
    studies/<job>/results/*.dcm     the result objects to send back, once scored; state.json lists them
    failed/<job>/failure.json       a study that could not be finished, and why
    done/<job>/                     finished studies (only with ``keep_done``)

A job is one study's batch of instances; an instance that arrives after its study was taken for
scoring starts a new job for the same study, so nothing received is ever dropped. The files on
disk are the truth: after a crash or restart, :meth:`StudyQueue.recover` rebuilds the queue from
them and every unfinished job is finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class JobStatus(str, Enum):
    RECEIVING = "receiving"  # instances may still arrive; complete after the idle timeout
    COMPLETE = "complete"  # no more instances accepted into this job; to be scored
    SCORED = "scored"  # results/ written; to be sent
    DONE = "done"
    FAILED = "failed"


PENDING = (JobStatus.RECEIVING, JobStatus.COMPLETE, JobStatus.SCORED)


class QueueFull(Exception):
    """The queue holds its maximum of pending studies or bytes; the sender should retry later."""


def uid_key(uid: str) -> str:
    """A short, path-safe name for a UID (tag values never become paths as they are)."""
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write then rename, so a crash leaves either the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


@dataclass
class StudyJob:
    """One study's batch of received instances and where it stands."""

    job_id: str
    study_uid: str
    status: JobStatus = JobStatus.RECEIVING
    created: float = field(default_factory=time.time)
    last_received: float = field(default_factory=time.time)
    n_instances: int = 0
    bytes: int = 0
    send_attempts: int = 0
    next_attempt: float = 0.0
    error: str | None = None
    calling_aets: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)  # names under results/ that the scorer reported
    directory: Path = Path()
    in_flight: int = 0  # instances being written right now (memory only)

    @property
    def instances_dir(self) -> Path:
        return self.directory / "instances"

    @property
    def results_dir(self) -> Path:
        return self.directory / "results"

    @property
    def result_files(self) -> list[Path]:
        """The files to send: those the scorer reported, in its order (never a glob of the folder)."""
        return [self.results_dir / name for name in self.results]

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def to_state(self) -> dict[str, Any]:
        state = asdict(self)
        state["status"] = self.status.value
        state.pop("directory")
        state.pop("in_flight")
        return state

    @classmethod
    def from_state(cls, directory: Path, state: dict[str, Any]) -> "StudyJob":
        known = {k: v for k, v in state.items() if k in cls.__dataclass_fields__ and k not in ("directory", "in_flight")}
        job = cls(**known)
        job.status = JobStatus(job.status)
        job.directory = directory
        return job


class StudyQueue:
    """Thread-safe queue of study jobs persisted under ``work_dir`` (see module docstring)."""

    def __init__(self, work_dir: str | Path, max_pending_studies: int = 100, max_pending_bytes: int = 4 * 1024**3) -> None:
        self.work_dir = Path(work_dir)
        self.studies_dir = self.work_dir / "studies"
        self.failed_dir = self.work_dir / "failed"
        self.done_dir = self.work_dir / "done"
        for folder in (self.studies_dir, self.failed_dir, self.done_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.max_pending_studies = max_pending_studies
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.RLock()
        self._jobs: dict[str, StudyJob] = {}  # pending jobs by job id
        self._receiving: dict[str, str] = {}  # study UID -> job id of the job still receiving
        self._counter = 0

    # ------------------------------------------------------------------ bookkeeping
    def save(self, job: StudyJob) -> None:
        atomic_write_json(job.state_path, job.to_state())

    def recover(self) -> list[StudyJob]:
        """Load every unfinished job left on disk (after a restart or a crash)."""
        recovered: list[StudyJob] = []
        with self._lock:
            for directory in sorted(self.studies_dir.iterdir()):
                if not directory.is_dir() or directory.name.startswith("."):
                    continue
                try:
                    job = StudyJob.from_state(directory, json.loads((directory / "state.json").read_text()))
                except (OSError, ValueError, TypeError) as err:
                    logger.error("%s: unreadable queue state (%s); moving it to failed/", directory, err)
                    self._move(directory, self.failed_dir, {"job_id": directory.name, "error": f"unreadable state: {err}"})
                    continue
                # Counters come from the files, which were written before the state.
                files = list(job.instances_dir.glob("*.dcm")) if job.instances_dir.is_dir() else []
                job.n_instances = len(files)
                job.bytes = sum(f.stat().st_size for f in files)
                for leftover in job.instances_dir.glob(".*.tmp") if job.instances_dir.is_dir() else []:
                    leftover.unlink(missing_ok=True)  # half-written instance of a crashed association
                if job.status == JobStatus.RECEIVING and job.n_instances == 0:
                    shutil.rmtree(directory, ignore_errors=True)
                    continue
                if job.status == JobStatus.DONE:  # crashed between "done" and the clean-up
                    shutil.rmtree(directory, ignore_errors=True)
                    continue
                if job.status == JobStatus.FAILED:  # crashed between "failed" and the move
                    self._move(directory, self.failed_dir, {"job_id": job.job_id, "study_uid": job.study_uid, "error": job.error})
                    continue
                if job.status == JobStatus.SCORED and (not job.results or not all(f.is_file() for f in job.result_files)):
                    job.status = JobStatus.COMPLETE  # crashed while moving the results in: score again
                self._jobs[job.job_id] = job
                if job.status == JobStatus.RECEIVING:
                    self._receiving[job.study_uid] = job.job_id
                recovered.append(job)
                logger.info("recovered study %s (job %s, %s, %d instances)", job.study_uid, job.job_id, job.status.value, job.n_instances)
        return recovered

    def pending(self) -> list[StudyJob]:
        with self._lock:
            return list(self._jobs.values())

    def pending_bytes(self) -> int:
        with self._lock:
            return sum(job.bytes for job in self._jobs.values())

    def is_full(self) -> bool:
        with self._lock:
            return len(self._jobs) >= self.max_pending_studies or self.pending_bytes() >= self.max_pending_bytes

    # ------------------------------------------------------------------ receiving
    def begin_instance(self, study_uid: str, size: int, calling_aet: str = "") -> StudyJob:
        """Reserve room for one incoming instance; raises :class:`QueueFull` when it does not fit."""
        with self._lock:
            job_id = self._receiving.get(study_uid)
            job = self._jobs.get(job_id) if job_id else None
            total = self.pending_bytes()
            if total + size > self.max_pending_bytes:
                raise QueueFull(f"{total + size} bytes pending would exceed max_pending_bytes={self.max_pending_bytes}")
            if job is None:
                if len(self._jobs) >= self.max_pending_studies:
                    raise QueueFull(f"{len(self._jobs)} studies pending (max_pending_studies={self.max_pending_studies})")
                job = self._new_job(study_uid)
                logger.info("receiving study %s (job %s) from %s", study_uid, job.job_id, calling_aet or "?")
            job.in_flight += 1
            job.last_received = time.time()
            if calling_aet and calling_aet not in job.calling_aets:
                job.calling_aets.append(calling_aet)
            return job

    def _new_job(self, study_uid: str) -> StudyJob:
        self._counter += 1
        job_id = f"{uid_key(study_uid)}-{time.time_ns() // 1000:x}{self._counter:04x}"
        job = StudyJob(job_id=job_id, study_uid=study_uid, directory=self.studies_dir / job_id)
        job.instances_dir.mkdir(parents=True)
        self.save(job)
        self._jobs[job_id] = job
        self._receiving[study_uid] = job_id
        return job

    def add_instance(self, job: StudyJob, sop_uid: str, encoded: bytes) -> Path:
        """Store one instance (DICOM file bytes) of a job reserved by :meth:`begin_instance`."""
        path = job.instances_dir / f"{uid_key(sop_uid)}.dcm"
        try:
            previous = path.stat().st_size if path.exists() else 0
            atomic_write_bytes(path, encoded)
            with self._lock:
                job.n_instances += 0 if previous else 1
                job.bytes += len(encoded) - previous
                job.last_received = time.time()
                self.save(job)
        finally:
            with self._lock:
                job.in_flight -= 1
        return path

    def abort_instance(self, job: StudyJob) -> None:
        """Release a reservation whose instance could not be stored."""
        with self._lock:
            job.in_flight -= 1
            if job.n_instances == 0 and job.in_flight == 0 and job.status == JobStatus.RECEIVING:
                self._forget(job)
                shutil.rmtree(job.directory, ignore_errors=True)

    # ------------------------------------------------------------------ processing
    def claim_complete(self, idle_timeout_s: float, now: float | None = None) -> list[StudyJob]:
        """Close every receiving job idle for ``idle_timeout_s``; return all jobs ready for work."""
        now = time.time() if now is None else now
        ready: list[StudyJob] = []
        with self._lock:
            for job in list(self._jobs.values()):
                if job.status == JobStatus.RECEIVING:
                    if job.in_flight or now - job.last_received < idle_timeout_s:
                        continue
                    job.status = JobStatus.COMPLETE
                    self._receiving.pop(job.study_uid, None)
                    self.save(job)
                    logger.info("study %s complete (job %s, %d instances)", job.study_uid, job.job_id, job.n_instances)
                if job.status in (JobStatus.COMPLETE, JobStatus.SCORED) and job.next_attempt <= now:
                    ready.append(job)
        return sorted(ready, key=lambda j: j.last_received)

    def mark_scored(self, job: StudyJob, results: list[Path]) -> None:
        """Copy the files the scorer reported into results/ (one rename), list them in the state."""
        with self._lock:
            staging = job.directory / ".results.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            names = [f"{i:03d}_{result.name}" for i, result in enumerate(results)]
            for name, result in zip(names, results):
                shutil.copy2(result, staging / name)
            shutil.rmtree(job.results_dir, ignore_errors=True)
            os.replace(staging, job.results_dir)
            job.results = names
            job.status = JobStatus.SCORED
            self.save(job)

    def retry_later(self, job: StudyJob, error: str, delay_s: float) -> None:
        with self._lock:
            job.send_attempts += 1
            job.error = error
            job.next_attempt = time.time() + delay_s
            self.save(job)

    def mark_done(self, job: StudyJob, keep: bool = False) -> None:
        with self._lock:
            job.status = JobStatus.DONE
            job.error = None
            self.save(job)
            self._forget(job)
            if keep:
                self._move(job.directory, self.done_dir)
            else:
                shutil.rmtree(job.directory, ignore_errors=True)

    def mark_failed(self, job: StudyJob, stage: str, error: str) -> Path:
        """Keep the study and a failure record under failed/; never drop it silently."""
        with self._lock:
            job.status = JobStatus.FAILED
            job.error = f"{stage}: {error}"
            self.save(job)
            self._forget(job)
            record = {
                "job_id": job.job_id,
                "study_uid": job.study_uid,
                "stage": stage,
                "error": error,
                "n_instances": job.n_instances,
                "send_attempts": job.send_attempts,
                "calling_aets": job.calling_aets,
                "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            return self._move(job.directory, self.failed_dir, record)

    def _forget(self, job: StudyJob) -> None:
        self._jobs.pop(job.job_id, None)
        if self._receiving.get(job.study_uid) == job.job_id:
            self._receiving.pop(job.study_uid, None)

    def _move(self, directory: Path, target_root: Path, record: dict[str, Any] | None = None) -> Path:
        target = target_root / directory.name
        if target.exists():
            shutil.rmtree(target)
        os.replace(directory, target)
        if record is not None:
            atomic_write_json(target / "failure.json", record)
        return target
