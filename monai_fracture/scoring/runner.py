"""``score_paths``: a folder of studies in, results.csv + DICOM outputs + manifest.json out.

The run is a stream (``scoring.stream.score_items``): headers are scanned once (small records, no
pixels), work items are decoded and preprocessed in DataLoader workers while the model scores the
previous batch, each finished row goes to the fsync'd journal, and a study's outputs are written
by report workers as soon as its last image is scored. A re-run with the same output folder
continues where the last one stopped; results.csv and manifest.json are (re)written atomically
at the end. The files the output writers report are journaled and listed in manifest.json.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import torch

from monai_fracture.progress import progress as progress_for
from monai_fracture.files import stable_hash
from monai_fracture.model.classifier import MODEL_HELP, Classifier, as_classifier, default_model_path
from monai_fracture.reports import AlgorithmIdentity, parse_outputs, write_heatmap_output
from monai_fracture.reports.files import check_output_tree, remove_stale_temporaries
from monai_fracture.scoring import manifest as manifests
from monai_fracture.scoring.catalog import FileRecord, WorkItem, build_catalog, walk_inputs
from monai_fracture.scoring.distributed import (  # noqa: F401  (EXIT_* re-exported)
    EXIT_DISK_FULL,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    exit_code,
    init_distributed,
    merge_if_complete,
)
from monai_fracture.scoring.journal import Journal, JournalState
from monai_fracture.scoring.processes import default_report_workers, model_threads, report_pool
from monai_fracture.scoring.sharding import Shard, parse_shard, shard_from_environment
from monai_fracture.scoring.stream import (
    REGION_OUTPUTS,
    Evidence,
    ScoredBatch,
    StudyScore,
    resumed_result,
    score_items,
    write_study,
)
from monai_fracture.scoring.table import ResultRow, count_statuses, format_threshold, printable, write_results_csv

logger = logging.getLogger(__name__)


class ModelNotFoundError(FileNotFoundError):
    """No --model given and no trained model in the bundle."""


@dataclass
class ScoreSummary:
    """What a scoring run did; ``results`` loads results.csv as a DataFrame of strings.

    ``dicom_outputs``: StudyInstanceUID -> the files the output writers reported (this run's and,
    after a resume, the earlier runs' of this folder); ``output_files()`` lists them all.
    """

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

    def output_files(self) -> list[Path]:
        """Every DICOM output the run reports, sorted (what a PACS sender sends)."""
        return sorted({path for paths in self.dicom_outputs.values() for path in paths})


def _report_job(study: StudyScore, identity: AlgorithmIdentity, dicom_dir: Path, outputs: tuple[str, ...]):
    started = time.perf_counter()
    written = write_study(study, identity, dicom_dir, outputs)
    return written, time.perf_counter() - started


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
    """One scoring run over one shard (or everything): journal, report workers and manifest around
    the stream (``score_items``)."""

    def __init__(self, inputs: Sequence[str | os.PathLike], out_dir: Path, xr: Classifier, ct: Classifier | None, *,
                 threshold: float | None, batch_size: int, workers: int, heatmaps: bool, write_dicom: bool,
                 shard: Shard | None, progress: bool | None, command: Sequence[str] | None,
                 report_workers: int | None = None, outputs: Sequence[str] | None = None, engine: Any = None) -> None:
        self.inputs = [os.fspath(p) for p in inputs]
        self.out_dir, self.dicom_dir = out_dir, out_dir / "dicom"
        self.xr, self.ct = xr, ct
        self.threshold = threshold
        self.batch_size, self.workers = batch_size, workers
        self.outputs = parse_outputs(outputs, heatmaps=heatmaps)
        self.heatmaps, self.write_dicom = "sc" in self.outputs, write_dicom
        # progress: True = bars, False = silent, None = bars on a terminal, else log lines (rate, ETA)
        self.shard, self.progress_mode = shard, progress
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.command = list(command) if command is not None else list(sys.argv)
        suffix = f".{shard.suffix}" if shard else ""
        self.results_path = out_dir / f"results{suffix}.csv"
        self.manifest_path = out_dir / f"manifest{suffix}.json"
        self.journal = Journal(out_dir / f"journal{suffix}.jsonl")
        self.timings: dict[str, float] = defaultdict(float)
        self.dicom_errors: list[dict[str, str]] = []
        self.scored_this_run = 0
        self.resumed_rows = 0
        self.model_threads = torch.get_num_threads()
        self.state = JournalState()
        self.report_workers = report_workers if report_workers is not None else default_report_workers()
        self.engine = engine  # None: the local engine; else e.g. scoring.ray_engine.RayEngine
        self.report_pool = engine.report_pool() if engine else report_pool(self.report_workers, warm=write_dicom)
        self.report_jobs: list[tuple[tuple[str, str], Future]] = []

    def threshold_of(self, family: str) -> float:
        classifier = self.ct if family == "ct" and self.ct is not None else self.xr
        return classifier.threshold if self.threshold is None else self.threshold

    @property
    def model_id(self) -> str:
        return self.xr.model_id + (f"+ct:{self.ct.model_id}" if self.ct else "")

    @property
    def dicom_outputs(self) -> dict[str, list[Path]]:
        """StudyInstanceUID -> the files the journal records for it."""
        return {key.split(":", 1)[1]: [self.out_dir / p for paths in outputs.values() for p in paths]
                for key, outputs in self.state.files.items()}

    def _record(self, rows: Iterable[ResultRow]) -> None:
        rows = list(rows)
        self.journal.write_rows(rows)
        for row in rows:
            self.state.rows[row.path] = row

    def _relative(self, paths: Iterable[Path]) -> list[str]:
        return [os.path.relpath(p, self.out_dir) for p in paths]

    def _evidence(self, event: Evidence) -> None:
        """Journal the region (the resumed SR and GSPS reuse it); write the heatmap SC at once."""
        path = event.item.paths[0]
        if event.error is not None:
            self.dicom_errors.append({"path": path, "error": printable(event.error, 512)})
            return
        region = event.result.region.to_dict()  # type: ignore[union-attr]
        self.journal.write_region(path, region)
        self.state.regions[path] = region
        if event.heatmap is None:
            return
        started = time.perf_counter()
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            written = write_heatmap_output(header, event.heatmap, self.xr.info, self.dicom_dir,
                                           instance_number=event.heatmap_number)
            key = f"{event.item.family}:{event.item.study_uid}"
            files = {"sc": self._relative([written])}
            self.journal.write_files(key, files)
            self.state.files.setdefault(key, {}).setdefault("sc", []).extend(files["sc"])
        except Exception as err:
            logger.warning("heatmap for %s not written: %s", path, err)
            self.dicom_errors.append({"path": path, "error": printable(f"heatmap: {type(err).__name__}: {err}", 512)})
        finally:
            self.timings["heatmaps_s"] += time.perf_counter() - started

    def _write_study(self, study: StudyScore) -> None:
        """Hand the study's outputs to a report worker: building them with highdicom is pure Python
        (tens of ms per study), so done inline it would cap the whole run."""
        key = f"{study.family}:{study.study_uid}"
        if not self.write_dicom or key in self.state.studies_done:
            return
        classifier = self.ct if study.family == "ct" and self.ct is not None else self.xr
        identity = AlgorithmIdentity.of(classifier.info)
        self.report_jobs.append((study.key, self.report_pool.submit(_report_job, study, identity, self.dicom_dir,
                                                                    self.outputs)))
        self._collect_reports(block=False)

    def _collect_reports(self, block: bool) -> None:
        """Record finished report jobs (journal ``study_done`` with the files written), or wait for all."""
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
            journal_key = f"{key[0]}:{key[1]}"
            files = {name: self._relative(paths) for name, paths in written.items() if paths}
            self.journal.write_study_done(journal_key, files)
            self.state.studies_done.add(journal_key)
            known = self.state.files.setdefault(journal_key, {})
            for name, paths in files.items():
                known.setdefault(name, []).extend(p for p in paths if p not in known.get(name, []))
        self.report_jobs = remaining

    def prepare(self) -> tuple[list[str], list[WorkItem], list[tuple[WorkItem, Any]]]:
        """Load the journal, scan the inputs: (owned paths, items to score, items scored before)."""
        started = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        check_output_tree(self.out_dir)
        if self.shard is None:
            remove_stale_temporaries(self.out_dir)
        self.state = self.journal.load()
        self.journal.check_run(self.state, self.model_id, format_threshold(self.threshold_of("xr")))
        self.resumed_rows = len(self.state.rows)
        self.journal.open()
        if self.state.run is None:
            self.journal.write_run(self.model_id, format_threshold(self.threshold_of("xr")), started=manifests.now())
        paths = walk_inputs(self.inputs, exclude=[self.out_dir])
        catalog = build_catalog(paths, ct_enabled=self.ct is not None, progress=self.progress)
        owned = [p for p in paths if self.shard is None or self.shard.owns(catalog.records[p].study_uid or p)]
        new_rows = [_decided_row(r) for p in owned if (r := catalog.records[p]).status is not None and p not in self.state.rows]
        if new_rows:
            self._record(new_rows)
        items = [i for i in catalog.items if self.shard is None or self.shard.owns(i.study_key)]
        pending = [i for i in items if not all(p in self.state.rows for p in i.paths)]
        resumed = [
            (i, resumed_result(i, [self.state.rows.get(p) for p in i.paths], self.threshold_of(i.family),
                               self.state.regions.get(i.paths[0])))
            for i in items if all(p in self.state.rows for p in i.paths)
        ]
        self.timings["scan_s"] = time.perf_counter() - started
        return owned, pending, resumed

    def score(self, pending: list[WorkItem], resumed: list[tuple[WorkItem, Any]]) -> None:
        bar = progress_for(sum(len(i.paths) for i in pending), "scoring", self.progress_mode)
        started = time.perf_counter()
        regions = self.write_dicom and bool(REGION_OUTPUTS & set(self.outputs))
        stream = score_items(
            pending, self.xr, threshold=self.threshold, ct_classifier=self.ct, batch_size=self.batch_size,
            workers=self.workers, regions=regions, heatmaps=self.heatmaps, resumed=resumed, timings=self.timings,
            batches=self.engine.batches(self.batch_size, regions, self.heatmaps) if self.engine else None,
            # fork decode workers while the report pool's manager thread is idle (no lock held)
            before_loader=lambda family: self._collect_reports(block=self.workers > 0),
        )
        try:
            with model_threads(self.xr.device, self.workers, self.report_workers) as used:
                for event in stream:
                    if isinstance(event, ScoredBatch):
                        self._record(row for score in event.scores for row in score.rows)  # journal first
                        self.scored_this_run += sum(len(s.item.paths) for s in event.scores if s.result is not None)
                        self._collect_reports(block=False)
                        bar.update(sum(len(s.item.paths) for s in event.scores))
                    elif isinstance(event, Evidence):
                        self._evidence(event)
                    else:
                        self._write_study(event)
        finally:
            stream.close()
            bar.close()
            self.timings["score_s"] = time.perf_counter() - started
            self.model_threads = used[0] if "used" in locals() else torch.get_num_threads()

    def close_reports(self) -> None:
        """Let the writers finish what they started (also after Ctrl-C), then record it."""
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
        files = manifests.output_files_entry(self.state.files)
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
            "model": manifests.model_entry(self.xr, self.threshold_of("xr")),
            "ct_model": manifests.model_entry(self.ct, self.threshold_of("ct")) if self.ct else None,
            "settings": {
                "engine": self.engine.name if self.engine else "local",
                "batch_size": self.batch_size,
                "workers": self.workers,
                "device": str(self.xr.device),
                "heatmaps": self.heatmaps,
                "outputs": list(self.outputs) if self.write_dicom else [],
                "write_dicom": self.write_dicom,
                "report_workers": self.report_workers,
                "torch_threads": self.model_threads,
            },
            "dicom_outputs": sum(len(v) for v in files.values()),
            "dicom_files": files,
            "dicom_output_errors": self.dicom_errors,
            "versions": manifests.versions(),
            "command": self.command,
            "inputs": self.inputs,
            "host": platform.node(),
            "shard": {"index": self.shard.index, "count": self.shard.count} if self.shard else None,
            "start_time": started_at,
            "end_time": manifests.now(),
            "interrupted": interrupted,
        }
        manifests.write_manifest(self.manifest_path, manifest)
        return results_path, manifest


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
    device: str | None = None,
    threshold: float | None = None,
    heatmaps: bool = False,
    write_dicom: bool = True,
    shard: str | Shard | tuple[int, int] | None = None,
    progress: bool | None = None,
    command: Sequence[str] | None = None,
    report_workers: int | None = None,
    backend: str | None = None,
    outputs: str | Sequence[str] | None = None,
    engine: Any = "local",
) -> ScoreSummary:
    """Score every file under ``inputs`` into ``out_dir`` (see docs/scoring.md).

    ``model`` / ``ct_model``: a ``LoadedModel``, a ``Classifier`` or a path (bundle folder,
    model folder, model file); ``model`` defaults to the bundle's ``models/``. ``threshold``
    overrides the models' stored thresholds (also a given ``Classifier``'s); ``device`` (default
    cpu) and ``backend`` (default auto) build the classifiers, and must agree with a given one. ``shard`` ``"i/n"`` scores one part (by study);
    under torchrun the rank is used. ``report_workers`` processes build the SR/KOS (default: one
    per four cores, 1 to 4). ``backend`` picks how the network runs (``auto``: the fastest variant
    within 1e-3 of fp32 with identical decisions, see ``model.backend_choice``). ``outputs`` names the DICOM
    objects (``sr,kos,pr,sc``; default ``sr,kos,pr``, ``heatmaps=True`` adds ``sc``). KeyboardInterrupt ends the run cleanly with
    ``interrupted=True`` / exit code 130; rerunning with the same ``out_dir`` resumes. ``engine``: ``local``,
    ``ray`` or a ``scoring.ray_engine.RayEngine`` (its cluster settings; docs/scaling.md).
    """
    t0 = time.perf_counter()
    started_at = manifests.now()
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out_dir = Path(os.path.abspath(os.fspath(out_dir)))
    shard = parse_shard(shard) or shard_from_environment()
    xr = as_classifier(_resolve_model(model), device, threshold, backend)
    if str(xr.modality) == "ct":
        raise ValueError(f"{xr.model.path} is a CT model: pass it as ct_model (--ct-model)")
    ct = as_classifier(ct_model, device, threshold, backend) if ct_model is not None else None
    from monai_fracture.scoring.ray_engine import engine_for

    cluster = engine_for(engine, sharded=shard is not None)
    with cluster or contextlib.nullcontext():  # a Ray cluster joined (or started) for this run
        distributed = init_distributed(shard)
        run = _Run(
            inputs, out_dir, xr, ct, threshold=threshold,
            batch_size=batch_size, workers=workers, heatmaps=heatmaps, write_dicom=write_dicom,
            shard=shard, progress=progress, command=command, report_workers=report_workers, outputs=outputs,
            engine=cluster,
        )
        interrupted = False
        owned: list[str] = []
        try:
            try:
                owned, pending, resumed = run.prepare()
                run.score(pending, resumed)
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
    merged = False
    if shard is not None and not interrupted:
        merged = merge_if_complete(out_dir, shard, distributed)
    failed = manifest["counts"].get("failed", 0) > 0 or bool(run.dicom_errors)
    return ScoreSummary(
        out_dir=out_dir,
        results_csv=out_dir / "results.csv" if merged else results_path,
        manifest=out_dir / "manifest.json" if merged else run.manifest_path,
        counts=manifest["counts"],
        dicom_outputs={k: list(v) for k, v in run.dicom_outputs.items()},
        dicom_output_errors=list(run.dicom_errors),
        interrupted=interrupted,
        exit_code=exit_code(interrupted, failed),
        shard=shard,
        merged=merged,
    )

