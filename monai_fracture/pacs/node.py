"""The DICOM node: a Storage SCP, an on-disk study queue and one worker that scores and sends back.

    PACS ──C-STORE──► StorageHandlers ──► StudyQueue (work_dir) ──► worker: score ──► send (C-STORE/STOW)

The worker takes a study once no instance of it arrived for ``study_idle_timeout_s``; scoring
runs the same code as ``monai-fracture score`` (``monai_fracture.scoring.score_paths``, on the
stream ``score_items``), so the objects that go back are the ones the batch scorer writes, and
exactly those its output writers report (never a glob of a folder).
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from monai_fracture.pacs.config import NodeConfig
from monai_fracture.pacs.queue import JobStatus, StudyJob, StudyQueue
from monai_fracture.pacs.guard import start_guarded_server
from monai_fracture.pacs.scp import StorageHandlers, build_storage_ae, connection_limits, tls_context
from monai_fracture.pacs.sender import CStoreSender, ResultSender, SendError, StowSender

logger = logging.getLogger(__name__)

# (instances folder, output folder) -> result files to send back
StudyScorer = Callable[[Path, Path], Sequence[Path]]


class ScoringError(Exception):
    """A study gave no result to send back (no scorable image, or the scorer failed)."""


class ScorePathsScorer:
    """Scores one study folder with ``monai_fracture.scoring.score_paths``; returns the files it reports."""

    def __init__(
        self, model: Any, device: str = "cpu", batch_size: int = 16, threshold: float | None = None, ct_model: Any = None
    ) -> None:
        self.model = model
        self.ct_model = ct_model
        self.device = device
        self.batch_size = batch_size
        self.threshold = threshold

    def __call__(self, instances_dir: Path, out_dir: Path) -> list[Path]:
        from monai_fracture.scoring import score_paths

        summary = score_paths(
            [instances_dir],
            out_dir,
            model=self.model,
            ct_model=self.ct_model,
            batch_size=self.batch_size,
            device=self.device,
            threshold=self.threshold,
            write_dicom=True,
            progress=False,
            report_workers=0,  # no forked children: they would inherit the node's listening socket
        )
        outputs = summary.output_files()
        counts = dict(getattr(summary, "counts", {}) or {})
        if counts.get("failed"):
            logger.warning("job %s: some instances could not be scored: %s", instances_dir.parent.name, _summary_text(summary, out_dir))
        errors = list(getattr(summary, "dicom_output_errors", []) or [])
        if errors or not outputs:
            detail = f"; DICOM output errors: {errors}" if errors else ""
            raise ScoringError(f"no SR/KOS written for {instances_dir} ({_summary_text(summary, out_dir)}{detail})")
        return outputs


def _summary_text(summary: Any, out_dir: Path) -> str:
    """A one-line reason from results.csv: why nothing was scored."""
    try:
        import pandas as pd

        table = pd.read_csv(out_dir / "results.csv")
        counts = table["status"].value_counts().to_dict()
        reasons = sorted(set(table["reason"].dropna().astype(str)))
        return f"statuses {counts}, reasons {reasons}"
    except Exception:  # results.csv missing or unreadable: fall back to the summary object
        return repr(summary)


def build_sender(config: NodeConfig) -> ResultSender:
    if config.stow_url:
        return StowSender(config.stow_url, config.stow_username, config.stow_password)
    if config.destination is None:
        raise ValueError("no destination: set destination (AE title, host, port) or stow_url")
    return CStoreSender(config.destination, calling_ae_title=config.ae_title)


class DicomNode:
    """Receive studies, score each once complete, send SR + KOS back; survive restarts."""

    def __init__(self, config: NodeConfig, scorer: StudyScorer | None = None, sender: ResultSender | None = None) -> None:
        self.config = config
        self.queue = StudyQueue(config.work_dir, config.max_pending_studies, config.max_pending_bytes)
        self.sender = sender or build_sender(config)
        self._scorer = scorer
        self._server: ThreadedAssociationServer | None = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.processed = 0
        self.failed = 0

    @property
    def scorer(self) -> StudyScorer:
        if self._scorer is None:
            self._scorer = self._load_scorer()
        return self._scorer

    def _load_scorer(self) -> StudyScorer:
        """Load the model(s) once (as ``Classifier``: network + its preprocessing); every study reuses them."""
        from monai_fracture.scoring import Classifier

        if not self.config.model:
            raise ValueError("no model configured (model: a model folder, bundle folder or model file)")
        cfg = self.config
        model = Classifier(cfg.model, device=cfg.device, threshold=cfg.threshold)
        ct_model = Classifier(cfg.ct_model, device=cfg.device, threshold=cfg.threshold) if cfg.ct_model else None
        return ScorePathsScorer(model, cfg.device, cfg.batch_size, cfg.threshold, ct_model=ct_model)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Recover the queue, load the model, then listen (so nothing is accepted that cannot be scored)."""
        recovered = self.queue.recover()
        if recovered:
            logger.info("%d unfinished studies recovered from %s", len(recovered), self.config.work_dir)
        self.scorer  # load the model before accepting associations: fail fast on a bad model
        ae = build_storage_ae(self.config)
        handlers = StorageHandlers(self.queue).handlers()
        self._server = start_guarded_server(ae, (self.config.bind_address, self.config.port), connection_limits(self.config),
                                            handlers, tls_context(self.config))
        logger.info(
            "listening as %s on %s:%d%s; results to %s; work dir %s",
            self.config.ae_title, self.config.bind_address, self.config.port, " (TLS)" if self.config.tls_cert else "", self.sender.describe(), self.config.work_dir,
        )
        self._worker = threading.Thread(target=self._work_loop, name="fracture-worker", daemon=True)
        self._worker.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop listening, let the current study finish, leave the rest queued on disk."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._worker.join(timeout_s)
            self._worker = None
        logger.info("stopped; %d studies still queued in %s", len(self.queue.pending()), self.config.work_dir)

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully."""
        def _on_signal(signum: int, _frame: Any) -> None:
            logger.info("signal %d received: shutting down", signum)
            self._stop.set()

        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stop.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ------------------------------------------------------------------ work
    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.process_ready()
            except Exception:  # never let the worker die; the study itself is marked failed inside
                logger.exception("worker error")
            self._stop.wait(self.config.poll_interval_s)

    def process_ready(self) -> int:
        """Process every job that is complete (idle long enough) or due for a retry."""
        done = 0
        for job in self.queue.claim_complete(self.config.study_idle_timeout_s):
            if self._stop.is_set():
                break
            self.process(job)
            done += 1
        return done

    def process(self, job: StudyJob) -> None:
        if job.status == JobStatus.COMPLETE:
            started = time.perf_counter()
            scratch = job.directory / ".scoring"
            try:
                shutil.rmtree(scratch, ignore_errors=True)
                results = list(self.scorer(job.instances_dir, scratch))
                self.queue.mark_scored(job, results)
                shutil.rmtree(scratch, ignore_errors=True)
            except Exception as err:
                self._fail(job, "scoring", err)
                return
            logger.info("study %s scored in %.2fs (%d instances, %d result objects)",
                        job.study_uid, time.perf_counter() - started, job.n_instances, len(results))
        files = job.result_files
        try:
            self.sender.send(files)
        except (SendError, OSError) as err:
            if job.send_attempts + 1 >= self.config.max_send_attempts:
                job.send_attempts += 1
                self._fail(job, "sending", err)
            else:
                self.queue.retry_later(job, str(err), self.config.retry_delay_s)
                logger.warning("study %s: send failed (attempt %d of %d), retrying in %.0fs: %s",
                               job.study_uid, job.send_attempts, self.config.max_send_attempts, self.config.retry_delay_s, err)
            return
        self.queue.mark_done(job, keep=self.config.keep_done)
        self.processed += 1
        logger.info("study %s: %d result objects sent by %s", job.study_uid, len(files), self.sender.describe())

    def _fail(self, job: StudyJob, stage: str, err: BaseException) -> None:
        detail = f"{type(err).__name__}: {err}"
        where = self.queue.mark_failed(job, stage, detail)
        self.failed += 1
        logger.error("study %s FAILED at %s: %s (kept in %s)", job.study_uid, stage, detail, where)
        logger.debug("%s", "".join(traceback.format_exception(err)))
