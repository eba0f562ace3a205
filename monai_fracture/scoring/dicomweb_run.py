"""Score straight from a PACS over DICOMweb: QIDO-RS lists, WADO-RS fills a bounded spool, the
folder scorer (``score_paths``) scores it chunk by chunk, STOW-RS sends the results back.

A chunk is whole studies (a study's SR/KOS need all its images) of about ``chunk_images``
instances. While one chunk is scored the next is downloaded (one chunk ahead, no more), and a
chunk's spool files are removed once its results are in the journal (and sent, with ``send``),
so disk and memory stay bounded whatever the archive size.

Resume: the scoring journal (``journal.jsonl``) has a row per finished instance, keyed by its spool
path; ``dicomweb.jsonl`` records each study as it is listed and again once it is finished (scored,
outputs written, sent). A rerun skips finished studies without listing or fetching them, keeps
instances already in the spool, and lets ``score_paths`` resume the rest. ``results.csv`` names
instances ``dicomweb:STUDY/SERIES/SOP`` (one row each), never the spool path.
"""

from __future__ import annotations

import json
import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from monai_fracture.files import atomic_write_bytes
from monai_fracture.model.classifier import MODEL_HELP, Classifier, as_classifier, default_model_path
from monai_fracture.reports.files import open_private_append, remove_stale_temporaries, study_folder
from monai_fracture.scoring import ModelNotFoundError, score_paths
from monai_fracture.scoring.ray_engine import engine_for
from monai_fracture.scoring.journal import Journal
from monai_fracture.scoring.runner import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from monai_fracture.scoring.table import ResultRow, count_statuses, printable, write_results_csv
from monai_fracture.sources.dicomweb import DicomwebError, DicomwebSource, Instance, study_spool

logger = logging.getLogger(__name__)

SPOOL = ".dicomweb-spool"  # hidden: a folder walk of --out never lists it
SOURCE_JOURNAL = "dicomweb.jsonl"


@dataclass
class _Chunk:
    studies: list[tuple[str, list[Instance]]] = field(default_factory=list)
    failed: list[ResultRow] = field(default_factory=list)
    download_s: float = 0.0
    downloaded: int = 0

    @property
    def size(self) -> int:
        return sum(len(i) for _, i in self.studies)


class _SourceJournal:
    """``dicomweb.jsonl``: studies listed (with their instances) and studies finished, fsync'd lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listed: dict[str, list[Instance]] = {}
        self.done: set[str] = set()
        self._lock = threading.Lock()
        if path.is_file():
            for line in path.read_bytes().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line torn by a kill: that study is listed again
                    continue
                if record.get("type") == "study":
                    uid = record["study"]
                    self.listed[uid] = [Instance(uid, series, sop) for series, sop in record["instances"]]
                elif record.get("type") == "study_done":
                    self.done.add(record["study"])
        self._handle = open_private_append(path)

    def _append(self, record: dict) -> None:
        with self._lock:
            self._handle.write(json.dumps(record).encode() + b"\n")
            os.fsync(self._handle.fileno())

    def study(self, uid: str, instances: list[Instance]) -> None:
        self.listed[uid] = instances
        self._append({"type": "study", "study": uid, "instances": [[i.series_uid, i.sop_uid] for i in instances]})

    def study_done(self, uid: str) -> None:
        self.done.add(uid)
        self._append({"type": "study_done", "study": uid})

    def close(self) -> None:
        self._handle.close()


def _classifier(model: Any, device: str | None, threshold: float | None, backend: str | None) -> Classifier:
    if model is None:
        model = default_model_path()
        if model is None:
            raise ModelNotFoundError(MODEL_HELP)
    return as_classifier(model, device, threshold, backend)


class _Downloader(threading.Thread):
    """Lists and fetches the next chunk while the current one is scored (queue of one chunk)."""

    def __init__(self, source: DicomwebSource, studies: Iterable[str], journal: _SourceJournal, spool: Path,
                 chunk_images: int, keep_downloads: bool) -> None:
        super().__init__(name="dicomweb-download", daemon=True)
        self.keep_downloads = keep_downloads
        self.source, self.studies, self.journal, self.spool = source, studies, journal, spool
        self.chunk_images = chunk_images
        self.chunks: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            chunk = _Chunk()
            for uid in self.studies:
                if self.stop.is_set():
                    return
                if uid in self.journal.done:  # a kill between study_done and the removal can leave files
                    if not self.keep_downloads:
                        shutil.rmtree(study_spool(self.spool, uid), ignore_errors=True)
                    continue
                chunk.studies.append((uid, self._fetch_study(uid, chunk)))
                if chunk.size >= self.chunk_images:
                    self._put(chunk)
                    chunk = _Chunk()
            if chunk.studies:
                self._put(chunk)
            self._put(None)
        except BaseException as err:  # handed to the main thread, which reports it
            self._put(err)

    def _put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _fetch_study(self, uid: str, chunk: _Chunk) -> list[Instance]:
        instances = self.source.instances(uid)
        self.journal.study(uid, instances)
        started = time.perf_counter()
        for instance in instances:
            if self.stop.is_set():
                break
            existed = instance.spool_path(self.spool).is_file()
            try:
                self.source.download(instance, self.spool)
                chunk.downloaded += not existed
            except DicomwebError as err:  # this instance fails; the run goes on (a rerun tries again)
                logger.warning("%s", err)
                chunk.failed.append(ResultRow(path=instance.name, status="failed",
                                              reason=printable(f"download_failed: {err}", 1024), study_uid=uid,
                                              series_uid=instance.series_uid, sop_uid=instance.sop_uid))
        chunk.download_s += time.perf_counter() - started
        return instances


def score_dicomweb(
    source: DicomwebSource,
    out_dir: str | os.PathLike,
    *,
    studies: Iterable[str],
    model: Any = None,
    device: str | None = None,
    threshold: float | None = None,
    backend: str | None = None,
    send_to: DicomwebSource | None = None,
    keep_downloads: bool = False,
    chunk_images: int = 256,
    description: str = "",
    engine: Any = "local",
    **score_options: Any,
) -> tuple[Path, dict[str, int], int]:
    """Score the instances of ``studies`` (an iterable of Study Instance UIDs, e.g.
    ``source.studies(filters)``) into ``out_dir``; returns (results.csv, counts, exit code).
    ``score_options`` go to :func:`score_paths` (batch_size, workers, outputs, ...); ``engine`` (``local``,
    ``ray`` or a ``RayEngine``) scores every chunk, on one Ray cluster joined for the whole run."""
    t0 = time.perf_counter()
    out = Path(os.path.abspath(os.fspath(out_dir)))
    spool = out / SPOOL
    out.mkdir(parents=True, exist_ok=True)
    classifier = _classifier(model, device, threshold, backend)
    journal = _SourceJournal(out / SOURCE_JOURNAL)
    remove_stale_temporaries(spool)  # a killed run's half-written downloads; nothing writes there yet
    downloader = _Downloader(source, studies, journal, spool, chunk_images, keep_downloads)
    failed: dict[str, ResultRow] = {}
    stats = {"studies_scored": 0, "downloaded": 0, "sent_studies": 0, "send_errors": 0, "chunks": 0}
    timings = {"download_s": 0.0, "score_s": 0.0, "send_s": 0.0}
    interrupted = False
    error: BaseException | None = None
    cluster = engine_for(engine)
    on_cluster = contextlib.ExitStack()
    if cluster is not None:
        on_cluster.enter_context(cluster)
    downloader.start()
    try:
        while True:
            chunk = downloader.chunks.get()
            if chunk is None:
                break
            if isinstance(chunk, BaseException):
                error = chunk
                break
            stats["chunks"] += 1
            stats["downloaded"] += chunk.downloaded
            timings["download_s"] += chunk.download_s
            failed.update({row.path: row for row in chunk.failed})
            folders = [f for uid, _ in chunk.studies if (f := study_spool(spool, uid)).is_dir()]
            started = time.perf_counter()
            summary = score_paths(folders, out, model=classifier, engine=cluster or "local", **score_options) if folders else None
            timings["score_s"] += time.perf_counter() - started
            if summary is not None and summary.interrupted:
                interrupted = True
                break
            bad = {row.study_uid for row in chunk.failed}
            for uid, _ in chunk.studies:
                if uid in bad:  # a rerun fetches the missing instances and finishes the study
                    continue
                if send_to is not None and not _send_study(send_to, out, uid, timings):
                    stats["send_errors"] += 1
                    continue
                stats["sent_studies"] += send_to is not None
                journal.study_done(uid)
                stats["studies_scored"] += 1
                if not keep_downloads:
                    shutil.rmtree(study_spool(spool, uid), ignore_errors=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        downloader.stop.set()
        downloader.join(timeout=30)
        on_cluster.close()
        journal.close()
    interrupted = interrupted or error is not None  # what was finished is written either way
    rows = _final_rows(out, spool, journal, failed, complete=not interrupted)
    results = write_results_csv(out / "results.csv", rows)
    counts, reasons = count_statuses(rows)
    _write_manifest(out, counts, reasons, len(rows), interrupted, source, description, stats, timings,
                    time.perf_counter() - t0, send_to)
    if error is not None and not isinstance(error, KeyboardInterrupt):
        raise error
    if interrupted:
        return results, counts, EXIT_INTERRUPTED
    return results, counts, EXIT_FAILED if counts.get("failed", 0) or stats.get("send_errors") else EXIT_OK


def _send_study(send_to: DicomwebSource, out: Path, uid: str, timings: dict[str, float]) -> bool:
    """STOW-RS the study's result objects; False (logged) when the server refused them."""
    folder = study_folder(out / "dicom", uid)
    files = sorted(p for p in folder.glob("*.dcm") if p.is_file()) if folder.is_dir() else []
    if not files:
        return True
    started = time.perf_counter()
    try:
        send_to.store(files)
    except DicomwebError as err:
        logger.error("results of study %s not sent: %s (a rerun sends them)", folder.name, err)
        return False
    finally:
        timings["send_s"] += time.perf_counter() - started
    return True


def _final_rows(out: Path, spool: Path, journal: _SourceJournal, failed: dict[str, ResultRow],
                complete: bool) -> list[ResultRow]:
    """One row per listed instance, named ``dicomweb:STUDY/SERIES/SOP``."""
    scored = Journal(out / "journal.jsonl").load().rows
    rows = []
    for uid, instances in journal.listed.items():
        for instance in instances:
            row = scored.get(str(instance.spool_path(spool))) or failed.get(instance.name)
            if row is None and complete:
                row = ResultRow(path=instance.name, status="failed", reason="internal_error: no result recorded",
                                study_uid=uid, series_uid=instance.series_uid, sop_uid=instance.sop_uid)
            if row is not None:
                rows.append(replace(row, path=instance.name))
    return rows


def _write_manifest(out: Path, counts: dict[str, int], reasons: dict[str, int], total: int, interrupted: bool,
                    source: DicomwebSource, description: str, stats: dict[str, int], timings: dict[str, float],
                    seconds: float, send_to: DicomwebSource | None) -> None:
    """The last chunk's manifest (model, settings, versions) with the whole run's counts and source."""
    path = out / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest.update({
        "results": "results.csv", "counts": counts, "reasons": reasons, "total_files": total,
        "expected_files": total, "interrupted": interrupted, "inputs": [description or source.url],
        "source": {"kind": "dicomweb", "url": source.url, "query": description, **stats,
                   "timings": {k: round(v, 4) for k, v in timings.items()}, "total_s": round(seconds, 4),
                   "send_to": send_to.url if send_to else None},
    })
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def study_list(uids: Iterable[str], files: Iterable[str]) -> Iterator[str]:
    """Study Instance UIDs from ``--study`` values and ``--study-list`` files (one per line, # comments).

    Each once, in first-seen order: a study listed twice would be fetched again into the spool folder
    the scorer is removing after the first time.
    """
    seen: set[str] = set()

    def lines() -> Iterator[str]:
        yield from uids
        for name in files:
            try:
                text = Path(name).read_text(encoding="utf-8")
            except OSError as err:
                raise ValueError(f"{name}: cannot read the study list: {err.strerror or err}") from None
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    yield line

    for uid in lines():
        if uid not in seen:
            seen.add(uid)
            yield uid
