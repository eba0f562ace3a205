"""``score_paths``: a folder of studies in, results.csv + DICOM outputs + manifest.json out.

The run is a stream: headers are scanned once (small records, no pixels), work items are
decoded and preprocessed in DataLoader workers while the model scores the previous batch,
each finished row goes to the fsync'd journal, and a study's SR/KOS are written as soon as
its last image is scored. A re-run with the same output folder continues where the last one
stopped; results.csv and manifest.json are (re)written atomically at the end.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import multiprocessing
import os
import platform
import signal
import sys
import time
from collections import defaultdict
from dataclasses import replace
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch

from monai_fracture.progress import progress as progress_for
from monai_fracture.reports import (
    AlgorithmIdentity,
    EvidenceRegion,
    ImageResult,
    parse_outputs,
    stable_hash,
    write_heatmap_output,
    write_study_outputs_from_files,
)
from monai_fracture.reports.files import atomic_write_bytes, check_output_tree, remove_stale_temporaries
from monai_fracture.scoring.backends import BackendUnavailable, available_backends
from monai_fracture.scoring.catalog import Catalog, FileRecord, WorkItem, build_catalog, reason_text, walk_inputs
from monai_fracture.scoring.classifier import MODEL_HELP, Classifier, default_model_path
from monai_fracture.scoring.journal import Journal, JournalState
from monai_fracture.scoring.loader import WorkItemDataset, make_loader
from monai_fracture.scoring.sharding import Shard, merge_shards, parse_shard, shard_from_environment, shard_results
from monai_fracture.scoring.table import (
    ResultRow,
    count_statuses,
    format_probability,
    format_threshold,
    printable,
    write_results_csv,
)

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DISK_FULL = 3
EXIT_INTERRUPTED = 130
PROBABILITY_DECIMALS = 6


class ModelNotFoundError(FileNotFoundError):
    """No --model given and no trained model in the bundle."""


@dataclass
class ScoreSummary:
    """What a scoring run did; ``results`` loads results.csv as a DataFrame of strings."""

    out_dir: Path
    results_csv: Path
    manifest: Path
    counts: dict[str, int]
    dicom_outputs: dict[str, list[Path]] = field(default_factory=dict)
    dicom_output_errors: list[dict[str, str]] = field(default_factory=list)
    interrupted: bool = False
    exit_code: int = EXIT_OK
    shard: Shard | None = None
    merged: bool = False

    @property
    def results(self):
        import pandas as pd

        return pd.read_csv(self.results_csv, dtype=str, keep_default_na=False)


@dataclass
class _StudyState:
    """A study's decisions so far and how many of its work items are still to come."""

    pending: int = 0
    results: list[ImageResult] = field(default_factory=list)
    source_paths: list[str] = field(default_factory=list)
    heatmaps: int = 0


def default_report_workers() -> int:
    """Processes that build SR/KOS: one per four cores, 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; report workers finish the study they are writing
    # and the main process decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: end this forked worker when its parent dies, even by SIGKILL (else it lingers forever)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        # SIGKILL, not SIGTERM: the worker inherits the parent's SIGTERM handler, which only sets a flag;
        # a report cut short leaves just a temporary file, removed by the next run
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(0)


def _report_pool(workers: int):
    """Forked worker processes where fork exists (cheap start, modules already loaded), else threads.

    ``workers <= 0`` builds reports in one thread of this process: for long-running servers,
    whose forked children would inherit (and, if the server is killed, keep) its listening socket.
    """
    if workers <= 0:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports")
    if "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("fork"), initializer=_ignore_sigint
        )
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reports")


def _report_job(paths: list[str], results: list[ImageResult], identity: AlgorithmIdentity, dicom_dir: Path,
                outputs: tuple[str, ...]):
    started = time.perf_counter()
    written = write_study_outputs_from_files(paths, results, identity, dicom_dir, outputs=outputs)
    return written, time.perf_counter() - started


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import highdicom
    import monai
    import pydicom

    from monai_fracture import __version__

    return {
        "monai-fracture": __version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "pydicom": pydicom.__version__,
        "highdicom": highdicom.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _decided_row(record: FileRecord) -> ResultRow:
    return ResultRow(
        path=record.path,
        status=record.status or "failed",
        reason=printable(record.reason, 1024),
        study_uid=printable(record.study_uid),
        series_uid=printable(record.series_uid),
        sop_uid=printable(record.sop_uid),
    )


class _Run:
    """One scoring run over one shard (or everything)."""

    def __init__(
        self,
        inputs: Sequence[str | os.PathLike],
        out_dir: Path,
        xr: Classifier,
        ct: Classifier | None,
        *,
        batch_size: int,
        workers: int,
        heatmaps: bool,
        write_dicom: bool,
        shard: Shard | None,
        progress: bool | None,
        command: Sequence[str] | None,
        report_workers: int | None = None,
        outputs: Sequence[str] | None = None,
        engine: str = "local",
        ray_settings: Any = None,
    ) -> None:
        self.inputs = [os.fspath(p) for p in inputs]
        self.out_dir = out_dir
        self.dicom_dir = out_dir / "dicom"
        self.xr, self.ct = xr, ct
        self.batch_size, self.workers = batch_size, workers
        self.outputs = parse_outputs(outputs, heatmaps=heatmaps)
        self.heatmaps, self.write_dicom = "sc" in self.outputs, write_dicom
        # progress: True = bars, False = silent, None = bars on a terminal, else log lines (rate, ETA)
        self.shard, self.progress_mode = shard, progress
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.command = list(command) if command is not None else list(sys.argv)
        suffix = f".{shard.suffix}" if shard else ""
        self.results_path = out_dir / (f"results.{shard.suffix}.csv" if shard else "results.csv")
        self.manifest_path = out_dir / (f"manifest.{shard.suffix}.json" if shard else "manifest.json")
        self.journal = Journal(out_dir / f"journal{suffix}.jsonl")
        self.timings: dict[str, float] = defaultdict(float)
        self.dicom_outputs: dict[str, list[Path]] = defaultdict(list)
        self.dicom_errors: list[dict[str, str]] = []
        self.studies: dict[tuple[str, str], _StudyState] = {}
        self.scored_this_run = 0
        self.state = JournalState()
        self.report_workers = report_workers if report_workers is not None else default_report_workers()
        self.engine, self.ray_settings = engine, ray_settings
        if engine == "ray":
            from monai_fracture.scoring.ray_engine import RayReportPool

            self.report_pool = RayReportPool()
        else:
            self.report_pool = _report_pool(self.report_workers)
        self.report_jobs: list[tuple[tuple[str, str], Future]] = []

    # -- identity of the run ---------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.xr.model_id + (f"+ct:{self.ct.model_id}" if self.ct else "")

    def classifier(self, family: str) -> Classifier:
        if family == "ct":
            assert self.ct is not None
            return self.ct
        return self.xr

    # -- rows ------------------------------------------------------------------------------
    def _scored_rows(self, item: WorkItem, probability: float, classifier: Classifier) -> list[ResultRow]:
        prediction = "1" if probability >= classifier.threshold else "0"
        return [
            ResultRow(
                path=path,
                status="scored",
                study_uid=printable(item.study_uid),
                series_uid=printable(item.series_uid),
                sop_uid=printable(sop_uid),
                probability=format_probability(probability),
                prediction=prediction,
                threshold=format_threshold(classifier.threshold),
                model=classifier.model_id,
            )
            for path, sop_uid in zip(item.paths, item.sop_uids)
        ]

    def _failed_rows(self, item: WorkItem, reason: str, detail: str, classifier: Classifier) -> list[ResultRow]:
        return [
            ResultRow(
                path=path,
                status="failed",
                reason=printable(reason_text(reason, detail), 1024),
                study_uid=printable(item.study_uid),
                series_uid=printable(item.series_uid),
                sop_uid=printable(sop_uid),
                model=classifier.model_id,
            )
            for path, sop_uid in zip(item.paths, item.sop_uids)
        ]

    def _record(self, rows: list[ResultRow]) -> None:
        self.journal.write_rows(rows)
        for row in rows:
            self.state.rows[row.path] = row

    # -- studies ---------------------------------------------------------------------------
    @staticmethod
    def _study_key(item: WorkItem) -> tuple[str, str] | None:
        return (item.family, item.study_uid) if item.is_dicom and item.study_uid else None

    def _journal_key(self, key: tuple[str, str]) -> str:
        return f"{key[0]}:{key[1]}"

    def _result_from_rows(self, item: WorkItem) -> ImageResult | None:
        rows = [self.state.rows.get(p) for p in item.paths]
        if not rows or any(r is None or r.status != "scored" for r in rows):
            return None
        try:
            probability = float(rows[0].probability)
        except ValueError:
            return None
        # the classifier's threshold, not the row's 6-digit text: the resumed SR equals the uninterrupted one
        threshold = self.classifier(item.family).threshold
        region = self.state.regions.get(item.paths[0]) if len(item.paths) == 1 else None
        return ImageResult(tuple(str(u) for u in item.sop_uids), probability, threshold, item.series_uid,
                           EvidenceRegion.from_dict(region) if region else None)

    def _finish_item(self, item: WorkItem, result: ImageResult | None) -> None:
        key = self._study_key(item)
        if key is None:
            return
        study = self.studies[key]
        study.pending -= 1
        if result is not None:
            study.results.append(result)
            study.source_paths.extend(item.paths)
        if study.pending == 0:
            self._write_study(key, study)

    def _write_study(self, key: tuple[str, str], study: _StudyState) -> None:
        """Hand the study's SR/KOS to a report worker: building them with highdicom is pure Python
        (tens of ms per study), so done inline it would cap the whole run."""
        journal_key = self._journal_key(key)
        results, paths = list(study.results), list(study.source_paths)
        study.results.clear()
        study.source_paths.clear()
        if not self.write_dicom or not results or journal_key in self.state.studies_done:
            return
        identity = AlgorithmIdentity.of(self.classifier(key[0]).info)
        self.report_jobs.append((key, self.report_pool.submit(_report_job, paths, results, identity, self.dicom_dir,
                                                              self.outputs)))
        self._collect_reports(block=False)

    def _collect_reports(self, block: bool) -> None:
        """Record finished report jobs (journal ``study_done``), or wait for all with ``block``."""
        remaining = []
        for key, future in self.report_jobs:
            if not block and not future.done():
                remaining.append((key, future))
                continue
            try:
                written, seconds = future.result()
            except Exception as err:  # an odd source header must not stop the run
                logger.warning("study %s: DICOM outputs not written: %s", stable_hash(key[1]), err)
                self.dicom_errors.append(
                    {"study": f"study-{stable_hash(key[1])}", "error": printable(f"{type(err).__name__}: {err}", 512)}
                )
                continue
            self.timings["reports_s"] += seconds
            self.dicom_outputs[key[1]].extend(written)
            journal_key = self._journal_key(key)
            self.journal.write_study_done(journal_key)
            self.state.studies_done.add(journal_key)
        self.report_jobs = remaining

    def _needs_region(self, item: WorkItem, result: ImageResult, classifier: Classifier) -> bool:
        """A positive DICOM radiograph without a region yet, in a run that writes SR, GSPS or SC."""
        return (
            result.positive
            and result.region is None
            and self.write_dicom
            and bool({"sr", "pr", "sc"} & set(self.outputs))
            and item.family == "xr"
            and len(item.paths) == 1
            and item.is_dicom
            and bool(item.study_uid)
            and classifier.supports_heatmaps
        )

    def _localise(self, item: WorkItem, result: ImageResult, classifier: Classifier) -> ImageResult:
        """Grad-CAM of a positive radiograph: its region goes to the journal and the result (SR, GSPS),
        its overlay to an SC when asked. A failure costs the region, never the result."""
        from monai_fracture.scoring.localise import localise

        started = time.perf_counter()
        try:
            region, heatmap = localise(classifier, item.paths[0], str(item.sop_uids[0]), result.probability,
                                       with_heatmap=self.heatmaps)
            self.journal.write_region(item.paths[0], region.to_dict())
            self.state.regions[item.paths[0]] = region.to_dict()
            result = replace(result, region=region)
            if heatmap is not None:
                study = self.studies[self._study_key(item)]
                study.heatmaps += 1
                header = pydicom.dcmread(item.paths[0], stop_before_pixels=True, force=True)
                path = write_heatmap_output(header, heatmap, classifier.info, self.dicom_dir, instance_number=study.heatmaps)
                self.dicom_outputs[str(item.study_uid)].append(path)
        except Exception as err:
            logger.warning("heatmap for %s not written: %s", item.paths[0], err)
            self.dicom_errors.append({"path": item.paths[0], "error": printable(f"heatmap: {type(err).__name__}: {err}", 512)})
        finally:
            self.timings["heatmaps_s"] += time.perf_counter() - started
        return result

    # -- the run ---------------------------------------------------------------------------
    def prepare(self) -> tuple[Catalog, list[str], list[WorkItem]]:
        started = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        check_output_tree(self.out_dir)
        if self.shard is None:
            remove_stale_temporaries(self.out_dir)
        self.state = self.journal.load()
        self.journal.check_run(self.state, self.model_id, format_threshold(self.xr.threshold))
        self.resumed_rows = len(self.state.rows)
        self.journal.open()
        if self.state.run is None:
            self.journal.write_run(self.model_id, format_threshold(self.xr.threshold), started=_now())
        paths = walk_inputs(self.inputs, exclude=[self.out_dir])
        catalog = build_catalog(paths, ct_enabled=self.ct is not None, progress=self.progress)
        owned = [p for p in paths if self.shard is None or self.shard.owns(catalog.records[p].study_uid or p)]
        new_rows = [_decided_row(r) for p in owned if (r := catalog.records[p]).status is not None and p not in self.state.rows]
        if new_rows:
            self._record(new_rows)
        items = [i for i in catalog.items if self.shard is None or self.shard.owns(i.study_key)]
        pending: list[WorkItem] = []
        for item in items:
            key = self._study_key(item)
            done = all(p in self.state.rows for p in item.paths)
            if key is not None:
                study = self.studies.setdefault(key, _StudyState())
                if done:
                    result = self._result_from_rows(item)
                    if result is not None and item.family == "xr" and self._needs_region(item, result, self.xr):
                        result = self._localise(item, result, self.xr)  # the last run was killed before its region
                    if result is not None:
                        study.results.append(result)
                        study.source_paths.extend(item.paths)
                else:
                    study.pending += 1
            if not done:
                pending.append(item)
        for key, study in self.studies.items():
            if study.pending == 0:
                self._write_study(key, study)  # finished before a kill, outputs not yet written
        self.timings["scan_s"] = time.perf_counter() - started
        return catalog, owned, pending

    def score(self, pending: list[WorkItem]) -> None:
        total_files = sum(len(i.paths) for i in pending)
        threads = torch.get_num_threads()
        if self.workers > 0 and self.xr.device.type == "cpu":
            # decode workers and report writers need cores too: do not oversubscribe
            torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - self.workers - self.report_workers)))
        bar = progress_for(total_files, "scoring", self.progress_mode)
        started = time.perf_counter()
        try:
            for family in ("xr", "ct"):
                items = [i for i in pending if i.family == family]
                if not items:
                    continue
                classifier = self.classifier(family)
                if classifier.backend is None:
                    classifier.plan_backend(sum(len(i.paths) for i in items))
                if self.engine == "ray":
                    self._score_on_ray(items, classifier, bar)
                    continue
                # fork decode workers while the report pool's manager thread is idle (no lock held)
                self._collect_reports(block=self.workers > 0)
                loader = make_loader(WorkItemDataset(items, classifier.preprocessing), self.batch_size, self.workers)
                waited = time.perf_counter()
                for batch in loader:
                    self.timings["data_wait_s"] += time.perf_counter() - waited
                    self._score_batch(batch, items, classifier)
                    self._collect_reports(block=False)
                    bar.update(sum(len(items[s["index"]].paths) for s in batch))
                    waited = time.perf_counter()
        finally:
            bar.close()
            self.timings["score_s"] = time.perf_counter() - started
            self.model_threads = torch.get_num_threads()
            torch.set_num_threads(threads)

    def _score_on_ray(self, items: list[WorkItem], classifier: Classifier, bar: Any) -> None:
        """The same records as ``_score_batch``, from Ray Data stages (``scoring.ray_engine``)."""
        from monai_fracture.scoring.ray_engine import score_items_on_ray

        # regions in the actors, unless an SC wants the heatmap image itself (the driver makes it then)
        in_actors = "sc" not in self.outputs
        wants = [in_actors and self._needs_region(i, ImageResult((), 1.0, 0.0, None), classifier) for i in items]
        preprocessing = {**classifier.info.preprocessing, "modality": classifier.modality}
        started = time.perf_counter()
        for scored in score_items_on_ray(
            items, wants, model=classifier.model.path, preprocessing=preprocessing, device=str(classifier.device),
            threshold=classifier.threshold, backend=classifier.requested_backend, batch_size=self.batch_size, settings=self.ray_settings,
        ):
            batch = [{"index": s.index, "error": s.error} for s in scored]
            probabilities = {s.index: round(s.probability, PROBABILITY_DECIMALS) for s in scored if s.error is None}
            regions = {s.index: s.region for s in scored if s.region}
            self._record_batch(batch, items, classifier, probabilities, regions)
            self._collect_reports(block=False)
            bar.update(sum(len(items[s.index].paths) for s in scored))
        self.timings["ray_s"] += time.perf_counter() - started

    def _score_batch(self, batch: list[dict[str, Any]], items: list[WorkItem], classifier: Classifier) -> None:
        good = [s for s in batch if s["image"] is not None]
        probabilities: dict[int, float] = {}
        if good:
            started = time.perf_counter()
            values = classifier.predict(torch.stack([s["image"] for s in good]))
            self.timings["model_s"] += time.perf_counter() - started
            # rounded once, so results.csv, the decision and the SR carry the same number
            probabilities = {s["index"]: round(float(v), PROBABILITY_DECIMALS) for s, v in zip(good, values)}
        self._record_batch(batch, items, classifier, probabilities, {})

    def _record_batch(self, batch: list[dict[str, Any]], items: list[WorkItem], classifier: Classifier,
                      probabilities: dict[int, float], regions: dict[int, dict[str, Any]]) -> None:
        rows: list[ResultRow] = []
        outcomes: list[tuple[WorkItem, ImageResult | None, float | None]] = []
        for sample in batch:
            item = items[sample["index"]]
            if sample["error"] is not None:
                rows.extend(self._failed_rows(item, *sample["error"], classifier))
                outcomes.append((item, None, None))
                continue
            probability = probabilities[sample["index"]]
            if not np.isfinite(probability):
                rows.extend(self._failed_rows(item, "preprocessing_failed", "model output is not finite", classifier))
                outcomes.append((item, None, None))
                continue
            rows.extend(self._scored_rows(item, probability, classifier))
            result = ImageResult(tuple(str(u) for u in item.sop_uids), probability, classifier.threshold, item.series_uid)
            outcomes.append((item, result, probability))
            self.scored_this_run += len(item.paths)
        self._record(rows)  # journal first: a kill after this never loses these rows
        for index, (item, result, probability) in zip((s["index"] for s in batch), outcomes):
            if result is not None and self._needs_region(item, result, classifier):
                if index in regions:  # computed where the model ran (Ray actors)
                    self.journal.write_region(item.paths[0], regions[index])
                    self.state.regions[item.paths[0]] = regions[index]
                    result = replace(result, region=EvidenceRegion.from_dict(regions[index]))
                else:
                    result = self._localise(item, result, classifier)
            self._finish_item(item, result)

    def close_reports(self) -> None:
        """Let the writer finish what it started (also after Ctrl-C), then record it."""
        started = time.perf_counter()
        self._collect_reports(block=True)
        self.report_pool.shutdown(wait=True)
        self.timings["reports_wait_s"] += time.perf_counter() - started

    def finish(self, owned: list[str], interrupted: bool, started_at: str, t0: float) -> tuple[Path, dict]:
        rows = [self.state.rows[p] for p in owned if p in self.state.rows]
        if not interrupted:
            missing = [p for p in owned if p not in self.state.rows]
            for path in missing:  # should not happen; never drop an input silently
                logger.error("no result for %s", path)
                rows.append(ResultRow(path=path, status="failed", reason="internal_error: no result recorded"))
        results_path = write_results_csv(self.results_path, rows)
        statuses, reasons = count_statuses(rows)
        total = time.perf_counter() - t0
        self.timings["total_s"] = total
        model_s = self.timings.get("model_s", 0.0)
        manifest = {
            "results": results_path.name,
            "counts": statuses,
            "reasons": reasons,
            "total_files": len(rows),
            "expected_files": len(owned),
            "resumed_rows": self.resumed_rows,
            "scored_this_run": self.scored_this_run,
            "timings": {k: round(v, 4) for k, v in sorted(self.timings.items())},
            "images_per_second": (self.scored_this_run / total) if total > 0 else None,
            "model_images_per_second": (self.scored_this_run / model_s) if model_s > 0 else None,
            "model": _model_entry(self.xr),
            "ct_model": _model_entry(self.ct) if self.ct else None,
            "settings": {
                "engine": self.engine,
                "batch_size": self.batch_size,
                "workers": self.workers,
                "device": str(self.xr.device),
                "heatmaps": self.heatmaps,
                "outputs": list(self.outputs) if self.write_dicom else [],
                "write_dicom": self.write_dicom,
                "report_workers": self.report_workers,
                "torch_threads": getattr(self, "model_threads", torch.get_num_threads()),
            },
            "dicom_outputs": sum(len(v) for v in self.dicom_outputs.values()),
            "dicom_output_errors": self.dicom_errors,
            "versions": _versions(),
            "command": self.command,
            "inputs": self.inputs,
            "host": platform.node(),
            "shard": {"index": self.shard.index, "count": self.shard.count} if self.shard else None,
            "start_time": started_at,
            "end_time": _now(),
            "interrupted": interrupted,
        }
        atomic_write_bytes(self.manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        return results_path, manifest


def _model_entry(classifier: Classifier) -> dict[str, Any]:
    info = classifier.info
    return {
        "id": classifier.model_id,
        "name": info.name,
        "version": info.version,
        "threshold": classifier.threshold,
        "model_threshold": float(info.threshold),
        "threshold_rule": getattr(info, "threshold_rule", None),
        "path": str(classifier.model.path),
        "format": classifier.model.format,
        "backend": classifier.backend_choice.to_dict() if classifier.backend_choice else None,
    }


def _resolve_model(model: Any) -> Any:
    if model is not None:
        return model
    found = default_model_path()
    if found is None:
        raise ModelNotFoundError(MODEL_HELP)
    return found


def score_paths(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    model: Any = None,
    ct_model: Any = None,
    batch_size: int = 16,
    workers: int = 0,
    device: str = "cpu",
    threshold: float | None = None,
    heatmaps: bool = False,
    write_dicom: bool = True,
    shard: str | Shard | tuple[int, int] | None = None,
    progress: bool | None = None,
    command: Sequence[str] | None = None,
    report_workers: int | None = None,
    backend: str = "auto",
    outputs: str | Sequence[str] | None = None,
    engine: str = "local",
    ray_settings: Any = None,
) -> ScoreSummary:
    """Score every file under ``inputs`` into ``out_dir`` (see docs/scoring.md).

    ``model`` / ``ct_model``: a ``LoadedModel``, a ``Classifier`` or a path (bundle folder,
    model folder, model file); ``model`` defaults to the bundle's ``models/``. ``threshold``
    overrides the models' stored thresholds. ``shard`` ``"i/n"`` scores one part (by study);
    under torchrun the rank is used. ``report_workers`` processes build the SR/KOS (default: one
    per four cores, 1 to 4). ``backend`` picks how the network runs (``auto``: the fastest variant
    within 1e-3 of fp32 with identical decisions, see ``scoring.backends``). ``outputs`` names the DICOM
    objects (``sr,kos,pr,sc``; default ``sr,kos,pr``, ``heatmaps=True`` adds ``sc``). KeyboardInterrupt ends the run cleanly with
    ``interrupted=True`` / exit code 130; rerunning with the same ``out_dir`` resumes.
    """
    t0 = time.perf_counter()
    started_at = _now()
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out_dir = Path(os.path.abspath(os.fspath(out_dir)))
    shard = parse_shard(shard) or shard_from_environment()
    xr = model if isinstance(model, Classifier) else Classifier(
        _resolve_model(model), device=device, threshold=threshold, backend=backend)
    if str(xr.modality) == "ct":
        raise ValueError(f"{xr.model.path} is a CT model: pass it as ct_model (--ct-model)")
    ct = None
    if ct_model is not None:
        ct = ct_model if isinstance(ct_model, Classifier) else Classifier(
            ct_model, device=device, threshold=threshold, backend=backend)
    for classifier in (xr, ct):
        if classifier is not None and classifier.requested_backend != "auto":
            reason = available_backends(classifier.model, classifier.device, [classifier.requested_backend])
            if reason[classifier.requested_backend]:
                raise BackendUnavailable(f"backend {classifier.requested_backend}: {reason[classifier.requested_backend]}")
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; choose local or ray")
    if engine == "ray" and shard is not None:
        raise ValueError("--engine ray partitions the work itself: drop --shard (and torchrun)")
    ray_started = False
    if engine == "ray":
        from monai_fracture.scoring.ray_engine import RaySettings, connect

        ray_settings = ray_settings or RaySettings()
        ray_started = connect(ray_settings)
    distributed = _init_distributed(shard)
    run = _Run(
        inputs, out_dir, xr, ct,
        batch_size=batch_size, workers=workers, heatmaps=heatmaps, write_dicom=write_dicom,
        shard=shard, progress=progress, command=command, report_workers=report_workers, outputs=outputs,
        engine=engine, ray_settings=ray_settings,
    )
    interrupted = False
    owned: list[str] = []
    try:
        try:
            _, owned, pending = run.prepare()
            run.score(pending)
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted: results so far are kept; run again with the same --out to finish")
        try:
            run.close_reports()
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting; unfinished studies are redone on resume
            interrupted = True
        results_path, manifest = run.finish(owned, interrupted, started_at, t0)
    finally:
        run.journal.close()
        if ray_started:
            from monai_fracture.scoring.ray_engine import disconnect

            disconnect(ray_started)
    merged = False
    if shard is not None and not interrupted:
        merged = _merge_if_complete(out_dir, shard, distributed)
    failed = manifest["counts"].get("failed", 0) > 0 or bool(run.dicom_errors)
    exit_code = EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if failed else EXIT_OK)
    return ScoreSummary(
        out_dir=out_dir,
        results_csv=out_dir / "results.csv" if merged else results_path,
        manifest=out_dir / "manifest.json" if merged else run.manifest_path,
        counts=manifest["counts"],
        dicom_outputs={k: list(v) for k, v in run.dicom_outputs.items()},
        dicom_output_errors=list(run.dicom_errors),
        interrupted=interrupted,
        exit_code=exit_code,
        shard=shard,
        merged=merged,
    )


def _init_distributed(shard: Shard | None) -> bool:
    """Join the torchrun process group (gloo) so rank 0 can merge after a barrier."""
    if shard is None or not shard.from_torchrun:
        return False
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return True


def _merge_if_complete(out_dir: Path, shard: Shard, distributed: bool) -> bool:
    if distributed:
        import torch.distributed as dist

        dist.barrier()
        merged = False
        if shard.index == 0:
            merge_shards(out_dir, shard.count)
            merged = True
        dist.barrier()
        dist.destroy_process_group()
        return merged or (out_dir / "results.csv").is_file()
    if len(shard_results(out_dir, shard.count)) == shard.count:
        try:
            merge_shards(out_dir, shard.count)  # the last shard to finish merges
            return True
        except (FileNotFoundError, ValueError) as err:
            logger.warning("shards not merged: %s", err)
    return False
