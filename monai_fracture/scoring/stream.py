"""The public scoring stream: work items in, per-image and per-study results out, as they are ready.

``score_items(items, classifier, ...)`` is what ``score_paths``, the PACS node and the MONAI Deploy
operator run; it yields, in order:

- ``ScoredBatch``: the per-image results of one model call (``ImageScore``: the item, its
  results.csv rows, its ``ImageResult`` with the decision, or None when it failed);
- ``Evidence``: for a positive radiograph, where the evidence is (Grad-CAM region, and the overlay
  when a heatmap image is wanted), after its batch, before its study completes;
- ``StudyScore``: a study whose last item was just scored, ready for the output writers.

It holds no files open and writes nothing: journal, report workers and manifest belong to the
caller (``scoring.runner``). Its stages are public functions, so another engine (e.g. Ray Data)
can run the same code as map and actor calls. Their contract:

==========================  =====================================================  ================
stage                       in -> out                                              where it runs
==========================  =====================================================  ================
``read_and_preprocess``     ``WorkItem`` -> ``{"image": tensor|None,               CPU task, any
                            "error": (reason, detail)|None}``; never raises        process
``classify_batch``          samples + items -> ``list[ImageScore]``; the model     actor holding the
                            call, the rounding and the **decision** (only here)    ``Classifier``
``localise_batch``          ``ImageScore`` s -> ``Evidence`` per positive           the same actor
                            radiograph: one heatmap pass for all, reusing the
                            kept network input; a failure is a value
                            (``localise_item``: the one-item case)
``StudyCollector``          items -> ``StudyScore`` when a study's last item       one place (driver):
                            arrives                                                it counts
``write_study``             ``StudyScore`` -> ``{output name: files written}``     CPU task, any
                            (``reports.outputs`` registry)                         process
==========================  =====================================================  ================

Every value crossing a stage is picklable (tensors, dataclasses of strings and floats, paths);
an ``ImageScore`` of a positive radiograph keeps its network input (``cam_input``, small: the
input, not the source pixels) until its batch is localised, and drops it before leaving an actor.
The decision ``probability >= threshold`` is ``reports.results.decide``, called through
``ImageResult.positive``; ``classify_batch`` derives the ``prediction`` column from it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from monai_fracture.reports.results import AlgorithmIdentity, EvidenceRegion, Heatmap, ImageResult
from monai_fracture.scoring.catalog import WorkItem, reason_text
from monai_fracture.model.classifier import CamInput, Classifier
from monai_fracture.scoring.loader import WorkItemDataset, make_loader, read_and_preprocess
from monai_fracture.scoring.studies import StudyCollector, StudyScore
from monai_fracture.scoring.table import ResultRow, format_probability, format_threshold, printable

logger = logging.getLogger(__name__)

PROBABILITY_DECIMALS = 6
#: Output families that show the evidence region: a run writing one of them localises positives.
REGION_OUTPUTS = frozenset({"sr", "pr", "sc"})

__all__ = [
    "Evidence",
    "ImageScore",
    "ScoredBatch",
    "StudyCollector",
    "StudyScore",
    "classify_batch",
    "localise_batch",
    "localise_item",
    "read_and_preprocess",
    "score_items",
    "write_study",
]


@dataclass(frozen=True)
class ImageScore:
    """One work item after the model: its rows (one per file) and its decision (None: it failed)."""

    item: WorkItem
    rows: tuple[ResultRow, ...]
    result: ImageResult | None
    #: a positive radiograph's network input and geometry, kept for its heatmap (no second read)
    cam_input: CamInput | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ScoredBatch:
    """The per-image results of one model call, in item order."""

    scores: tuple[ImageScore, ...]


@dataclass(frozen=True)
class Evidence:
    """Where a positive radiograph's evidence is: ``result`` carries the region (unchanged on failure).

    ``heatmap`` (the overlay for a Secondary Capture) only when asked; ``heatmap_number`` is its
    instance number in the study's SC series; ``error`` says why there is no region.
    """

    item: WorkItem
    result: ImageResult
    heatmap: Heatmap | None = None
    heatmap_number: int = 0
    error: str | None = None
    seconds: float = 0.0

    @property
    def region(self) -> EvidenceRegion | None:
        return self.result.region


StreamEvent = Union[ScoredBatch, Evidence, StudyScore]

#: Where scored batches come from, per family: ``(family, items, classifier, threshold)`` -> batches of
#: ``ImageScore`` with, by position in the batch, ``Evidence`` already computed where the model ran
#: (an engine's actors); positions without one are localised by the stream itself.
BatchSource = Callable[[str, list[WorkItem], Classifier, float], Iterator[tuple[list["ImageScore"], dict[int, "Evidence"]]]]


def scored_rows(item: WorkItem, result: ImageResult, model_id: str) -> tuple[ResultRow, ...]:
    """results.csv rows of a scored item; ``prediction`` is the result's decision."""
    return tuple(
        ResultRow(
            path=path,
            status="scored",
            study_uid=printable(item.study_uid),
            series_uid=printable(item.series_uid),
            sop_uid=printable(sop_uid),
            probability=format_probability(result.probability),
            prediction="1" if result.positive else "0",
            threshold=format_threshold(result.threshold),
            model=model_id,
        )
        for path, sop_uid in zip(item.paths, item.sop_uids)
    )


def failed_rows(item: WorkItem, reason: str, detail: str, model_id: str) -> tuple[ResultRow, ...]:
    return tuple(
        ResultRow(
            path=path,
            status="failed",
            reason=printable(reason_text(reason, detail), 1024),
            study_uid=printable(item.study_uid),
            series_uid=printable(item.series_uid),
            sop_uid=printable(sop_uid),
            model=model_id,
        )
        for path, sop_uid in zip(item.paths, item.sop_uids)
    )


def classify_batch(samples: Sequence[dict[str, Any]], items: Sequence[WorkItem], classifier: Classifier,
                   threshold: float | None = None, expected_images: int = 0) -> list[ImageScore]:
    """Score the readable samples in one model call; ``samples[i]["index"]`` indexes ``items``.

    Probabilities are rounded once (``PROBABILITY_DECIMALS``), so results.csv, the decision and
    the SR carry the same number; ``threshold`` defaults to the classifier's. The first real batch
    prepares the classifier (``Classifier.prepare``: the backend choice, measured when
    ``expected_images`` repays it).
    """
    threshold = classifier.threshold if threshold is None else float(threshold)
    good = [s for s in samples if s["image"] is not None]
    probabilities: dict[int, float] = {}
    if good:
        images = torch.stack([s["image"] for s in good])
        if not classifier.prepared:
            classifier.prepare(images, expected_images=expected_images)
        values = classifier.predict(images)
        probabilities = {s["index"]: round(float(v), PROBABILITY_DECIMALS) for s, v in zip(good, values)}
    scores = []
    for sample in samples:
        item = items[sample["index"]]
        if sample["error"] is not None:
            scores.append(ImageScore(item, failed_rows(item, *sample["error"], classifier.model_id), None))
            continue
        probability = probabilities[sample["index"]]
        if not np.isfinite(probability):
            rows = failed_rows(item, "preprocessing_failed", "model output is not finite", classifier.model_id)
            scores.append(ImageScore(item, rows, None))
            continue
        result = ImageResult(tuple(str(u) for u in item.sop_uids), probability, threshold, item.series_uid)
        geometry = sample.get("geometry")
        keep = geometry is not None and needs_region(item, result, classifier)
        cam_input = CamInput(sample["image"], geometry) if keep else None
        scores.append(ImageScore(item, scored_rows(item, result, classifier.model_id), result, cam_input))
    return scores


def needs_region(item: WorkItem, result: ImageResult, classifier: Classifier) -> bool:
    """A positive DICOM radiograph (one file, in a study) without a region yet, and a model with gradients."""
    return (
        result.positive
        and result.region is None
        and item.family == "xr"
        and len(item.paths) == 1
        and item.is_dicom
        and bool(item.study_uid)
        and classifier.supports_heatmaps
    )


def localise_item(item: WorkItem, result: ImageResult, classifier: Classifier, with_heatmap: bool) -> Evidence:
    """Heatmap of one positive radiograph (read again): its region in ``result``, its overlay when ``with_heatmap``.

    A failure costs the region, never the result: it comes back as ``Evidence.error``.
    """
    return next(localise_batch([ImageScore(item, (), result)], classifier, with_heatmap))


def localise_batch(scores: Sequence[ImageScore], classifier: Classifier, with_heatmap: bool) -> Iterator[Evidence]:
    """``Evidence`` for each of ``scores`` (positive radiographs), in order, from one heatmap pass.

    Each score's kept ``cam_input`` saves reading its file again; the batched pass counts in the
    first ``Evidence.seconds``, so they add up to the time spent. A failure costs the region,
    never the result: it comes back as ``Evidence.error``.
    """
    from monai_fracture.scoring.localise import Request, localise_many

    if not scores:
        return
    clock = time.perf_counter()
    requests = [Request(s.item.paths[0], str(s.item.sop_uids[0]), s.result.probability, s.cam_input)  # type: ignore[union-attr]
                for s in scores]
    for score, outcome in zip(scores, localise_many(classifier, requests, with_heatmap)):
        seconds = time.perf_counter() - clock
        result = score.result
        assert result is not None
        if isinstance(outcome, Exception):
            logger.warning("heatmap for %s not written: %s", score.item.paths[0], outcome)
            yield Evidence(score.item, result, error=f"heatmap: {type(outcome).__name__}: {outcome}", seconds=seconds)
        else:
            region, heatmap = outcome
            yield Evidence(score.item, replace(result, region=region), heatmap, seconds=seconds)
        clock = time.perf_counter()


def write_study(study: StudyScore, identity: AlgorithmIdentity, dicom_dir: str | os.PathLike,
                outputs: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """Write the chosen outputs of one complete study; ``{output name: files written}``.

    Reads the source headers itself (no datasets cross processes), so it runs in a report worker.
    """
    from monai_fracture.reports.study import write_outputs_from_files

    return write_outputs_from_files(study.paths, study.results, identity, dicom_dir, outputs=outputs)


def score_items(
    items: Sequence[WorkItem],
    classifier: Classifier | None,
    *,
    threshold: float | None = None,
    ct_classifier: Classifier | None = None,
    batch_size: int = 16,
    workers: int = 0,
    regions: bool = True,
    heatmaps: bool = False,
    resumed: Iterable[tuple[WorkItem, ImageResult | None]] = (),
    timings: MutableMapping[str, float] | None = None,
    before_loader: Callable[[str], None] | None = None,
    batches: BatchSource | None = None,
) -> Iterator[StreamEvent]:
    """Score ``items`` (radiographs with ``classifier``, CT series with ``ct_classifier``) as a stream.

    A family without items needs no classifier (``classifier=None`` for a CT-only run).
    ``threshold`` overrides both classifiers' thresholds. ``regions``: localise positive radiographs
    (the SR region, the GSPS); ``heatmaps``: also return their overlays (SC). ``resumed`` are items
    scored by an earlier run, with their results: they count toward their studies (and get a
    region when they lack one) but are not scored again. ``timings`` accumulates ``data_wait_s``,
    ``model_s`` and ``heatmaps_s``; ``before_loader(family)`` runs before each family's decode
    workers start. ``batches`` replaces the local DataLoader + model loop (``local_batches``) by another
    engine's (``scoring.ray_engine``). Every item of ``items`` appears in exactly one ``ImageScore``.
    """
    classifiers = {"xr": classifier, "ct": ct_classifier}
    thresholds = {family: (c.threshold if threshold is None else float(threshold))
                  for family, c in classifiers.items() if c is not None}
    timings = timings if timings is not None else {}
    items = list(items)
    resumed = list(resumed)
    collector = StudyCollector()
    for item, _ in resumed:
        collector.expect(item)
    for item in items:
        collector.expect(item)

    def finish(item: WorkItem, result: ImageResult | None, found: Evidence | None = None) -> Iterator[StreamEvent]:
        model = classifiers[item.family]
        if result is not None and regions and model is not None and needs_region(item, result, model):
            evidence = found or localise_item(item, result, model, with_heatmap=heatmaps)
            timings["heatmaps_s"] = timings.get("heatmaps_s", 0.0) + evidence.seconds
            if evidence.heatmap is not None:
                evidence = replace(evidence, heatmap_number=collector.next_heatmap_number(item))
            result = evidence.result
            yield evidence
        study = collector.add(item, result)
        if study is not None:
            yield study

    for item, result in resumed:
        yield from finish(item, result)
    for family in ("xr", "ct"):
        family_items = [i for i in items if i.family == family]
        if not family_items:
            continue
        model = classifiers[family]
        if model is None:
            raise ValueError(f"{len(family_items)} {family} item(s) but no {family} classifier")
        if before_loader is not None:
            before_loader(family)
        source = batches or partial(local_batches, batch_size=batch_size, workers=workers, timings=timings)
        for scores, evidence in source(family, family_items, model, thresholds[family]):
            yield ScoredBatch(tuple(scores))  # the caller journals these before any slow step
            # the batch's positives without evidence yet share one heatmap pass (localise_batch)
            pending = [p for p, s in enumerate(scores) if regions and p not in evidence and s.result is not None
                       and needs_region(s.item, s.result, model)]
            located = localise_batch([scores[p] for p in pending], model, with_heatmap=heatmaps)  # lazy, in order
            wanted = set(pending)
            for position, score in enumerate(scores):
                found = next(located) if position in wanted else evidence.get(position)
                yield from finish(score.item, score.result, found)


def local_batches(family: str, items: list[WorkItem], classifier: Classifier, threshold: float, *, batch_size: int,
                  workers: int, timings: MutableMapping[str, float]) -> Iterator[tuple[list[ImageScore], dict]]:
    """The local engine: decode in DataLoader workers, the model in this process (a ``BatchSource``)."""
    loader = make_loader(WorkItemDataset(items, classifier.preprocessing), batch_size, workers)
    waited = time.perf_counter()
    for samples in loader:
        timings["data_wait_s"] = timings.get("data_wait_s", 0.0) + time.perf_counter() - waited
        started = time.perf_counter()
        scores = classify_batch(samples, items, classifier, threshold,
                                expected_images=sum(len(i.paths) for i in items))
        timings["model_s"] = timings.get("model_s", 0.0) + time.perf_counter() - started
        yield scores, {}
        waited = time.perf_counter()


def resumed_result(item: WorkItem, rows: Sequence[ResultRow | None], threshold: float,
                   region: dict | None) -> ImageResult | None:
    """The ``ImageResult`` of an item an earlier run scored (its journal rows), None unless scored.

    The threshold is the run's, not the row's 6-digit text, so a resumed SR equals an uninterrupted one.
    """
    if not rows or any(r is None or r.status != "scored" for r in rows):
        return None
    try:
        probability = float(rows[0].probability)  # type: ignore[union-attr]
    except ValueError:
        return None
    return ImageResult(tuple(str(u) for u in item.sop_uids), probability, threshold, item.series_uid,
                       EvidenceRegion.from_dict(region) if region and len(item.paths) == 1 else None)

