"""Our two operators: classify the selected series, and write the study's DICOM outputs into it.

Both run the library's own stream, not copies of it: ``FractureClassifierOperator`` scores the
selected files with ``monai_fracture.scoring.score_items`` (the catalog, preprocessing, decision
and Grad-CAM evidence region of ``monai-fracture score``); ``FractureReportWriterOperator`` writes
each study with the registered output writers (``reports.outputs``: SR with the region, KOS, GSPS
by default), so the app's objects are the ones the batch scorer and the PACS node send.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
logger = logging.getLogger(__name__)

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "MG", "RF", "XA", "IO", "PX"})


@dataclass
class StudyScores:
    """What the writer needs for one study and model: source files, one result per image or CT series."""

    study_uid: str
    paths: list[str]
    results: list[Any]  # monai_fracture.reports.ImageResult
    model_info: Any  # monai_fracture.model_package.ModelInfo
    skipped: list[str] = field(default_factory=list)  # "<file or instance>: reason"


def load_classifiers(model_path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """``{"xr": Classifier, "ct": Classifier}`` from one model, or from ``xr/`` and ``ct/`` subfolders.

    A single model serves the family it was trained for (``ModelInfo.modality``); a folder with
    ``xr/`` and ``ct/`` model folders serves both.
    """
    from monai_fracture.scoring.classifier import Classifier

    model_path = Path(model_path)
    parts = {name: model_path / name for name in ("xr", "ct") if (model_path / name).is_dir()}
    if not parts:
        classifier = Classifier(model_path, device=device)
        return {"ct" if classifier.modality == "ct" else "xr": classifier}
    return {name: Classifier(path, device=device) for name, path in parts.items()}


class FractureClassifierOperator(Operator):
    """Scores every selected radiograph (one result per image) and CT series (one per series).

    Named input ``study_selected_series_list`` (from ``DICOMSeriesSelectorOperator``), named
    output ``study_scores``: a list of :class:`StudyScores`.
    """

    def __init__(self, fragment: Fragment, *args: Any, model_path: str | Path, device: str = "cpu", batch_size: int = 16, **kwargs: Any) -> None:
        self.model_path = Path(model_path)
        self.device = device
        self.batch_size = batch_size
        self._classifiers: dict[str, Any] | None = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("study_scores").condition(ConditionType.NONE)

    @property
    def classifiers(self) -> dict[str, Any]:
        if self._classifiers is None:
            self._classifiers = load_classifiers(self.model_path, self.device)
            logger.info("model(s) loaded from %s for %s", self.model_path, ", ".join(sorted(self._classifiers)))
        return self._classifiers

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        selections = op_input.receive("study_selected_series_list") or []
        scores = [study for selection in selections for study in self.score_study(selection)]
        logger.info("%d studies with results", len(scores))
        op_output.emit(scores, "study_scores")

    def score_study(self, study_selection: Any) -> list[StudyScores]:
        """One ``StudySelectedSeries`` -> one :class:`StudyScores` per model family with results.

        The selected files go through ``score_items`` exactly as ``monai-fracture score`` scores a
        folder; files that cannot be scored are listed in ``skipped`` with the reason.
        """
        from monai_fracture.scoring.catalog import build_catalog
        from monai_fracture.scoring.stream import ScoredBatch, StudyScore, score_items

        study_uid = str(study_selection.study.StudyInstanceUID)
        paths: list[str] = []
        skipped: list[str] = []
        seen_series: set[str] = set()
        for selected in study_selection.selected_series:
            series = selected.series
            series_uid = str(series.SeriesInstanceUID)
            if series_uid in seen_series:  # a series matched by two selections is scored once
                continue
            seen_series.add(series_uid)
            modality = str(series.Modality or "").upper()
            family = "ct" if modality == "CT" else "xr" if modality in RADIOGRAPH_MODALITIES else None
            if family is None or family not in self.classifiers:
                skipped.append(f"{series_uid}: no model for modality {modality or '?'}")
                logger.warning("series %s skipped: no model for modality %s", series_uid, modality or "?")
                continue
            paths.extend(str(sop.get_native_sop_instance().filename) for sop in series.get_sop_instances())
        catalog = build_catalog(sorted(set(paths)), ct_enabled="ct" in self.classifiers)
        skipped.extend(f"{r.path}: {r.reason}" for r in catalog.decided())
        items = [i for i in catalog.items if i.family in self.classifiers]
        studies: list[StudyScores] = []
        for event in score_items(items, self.classifiers.get("xr"), ct_classifier=self.classifiers.get("ct"),
                                 batch_size=self.batch_size):
            if isinstance(event, ScoredBatch):
                skipped.extend(f"{row.path}: {row.reason}" for s in event.scores if s.result is None for row in s.rows)
            elif isinstance(event, StudyScore):
                info = self.classifiers[event.family].info
                studies.append(StudyScores(event.study_uid, list(event.paths), list(event.results), info))
        for line in skipped:
            logger.warning("study %s: skipped %s", study_uid, line)
        if studies:
            studies[0].skipped.extend(skipped)
        logger.info("study %s: %d result(s), %d skipped", study_uid, sum(len(s.results) for s in studies), len(skipped))
        return studies


class FractureReportWriterOperator(Operator):
    """Writes each study's chosen outputs (``outputs``, default SR + KOS + GSPS) under the output folder."""

    def __init__(self, fragment: Fragment, *args: Any, output_folder: str | Path, outputs: Any = None,
                 **kwargs: Any) -> None:
        from monai_fracture.reports.outputs import parse_outputs

        self.output_folder = Path(output_folder)
        self.outputs = parse_outputs(outputs)
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_scores")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        from monai_fracture.reports.study import write_outputs_from_files

        for study in op_input.receive("study_scores") or []:
            written = write_outputs_from_files(study.paths, study.results, study.model_info, self.output_folder,
                                               outputs=self.outputs)
            paths = [path for files in written.values() for path in files]
            self.written.extend(paths)
            logger.info("study %s: wrote %s", study.study_uid, ", ".join(p.name for p in paths))
