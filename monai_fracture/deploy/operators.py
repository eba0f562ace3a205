"""Our two operators: classify the selected series, and write TID 1500 SR + KOS into the source study.

Both reuse the library, not copies of it: ``FractureClassifierOperator`` reads pixels with
``monai_fracture.io`` and scores with ``monai_fracture.model.Classifier`` (the preprocessing
stored with the model, as in the bundle and ``monai-fracture score``);
``FractureReportWriterOperator`` calls ``monai_fracture.reports.write_study_outputs``, so the
app's SR and KOS are the same objects the batch scorer and the PACS node send.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.deploy.core import ConditionType, Fragment, Operator, OperatorSpec
from pydicom.dataset import Dataset

from monai_fracture.io.modalities import RADIOGRAPH_MODALITIES

logger = logging.getLogger(__name__)


@dataclass
class StudyScores:
    """What the writer needs for one study: source headers, one result per image or CT series."""

    study_uid: str
    sources: list[Dataset]
    results: list[Any]  # monai_fracture.reports.ImageResult
    model_info: Any  # monai_fracture.model.package.ModelInfo
    skipped: list[str] = field(default_factory=list)  # "<sop or series uid>: reason"


def load_classifiers(model_path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """``{"xr": Classifier, "ct": Classifier}`` from one model, or from ``xr/`` and ``ct/`` subfolders.

    A single model serves the family it was trained for (``ModelInfo.modality``); a folder with
    ``xr/`` and ``ct/`` model folders serves both.
    """
    from monai_fracture.model.classifier import Classifier

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
        scores = [self.score_study(selection) for selection in selections]
        scores = [s for s in scores if s.results]
        logger.info("%d studies with results", len(scores))
        op_output.emit(scores, "study_scores")

    def score_study(self, study_selection: Any) -> StudyScores:
        """One ``StudySelectedSeries`` -> :class:`StudyScores`; unreadable images are skipped with the reason."""
        from monai_fracture.io import ImageReadError, read_dicom, read_dicom_series
        from monai_fracture.reports import ImageResult

        sources: list[Dataset] = []
        results: list[ImageResult] = []
        skipped: list[str] = []
        study_uid = str(study_selection.study.StudyInstanceUID)
        seen_series: set[str] = set()
        model_info = None
        for selected in study_selection.selected_series:
            series = selected.series
            series_uid = str(series.SeriesInstanceUID)
            if series_uid in seen_series:  # a series matched by two selections is scored once
                continue
            seen_series.add(series_uid)
            instances = [sop.get_native_sop_instance() for sop in series.get_sop_instances()]
            modality = str(series.Modality or "").upper()
            family = "ct" if modality == "CT" else "xr" if modality in RADIOGRAPH_MODALITIES else None
            classifier = self.classifiers.get(family) if family else None
            if classifier is None:
                skipped.append(f"{series_uid}: no model for modality {modality or '?'}")
                logger.warning("series %s skipped: no model for modality %s", series_uid, modality or "?")
                continue
            model_info = classifier.info
            if family == "ct":
                paths = [ds.filename for ds in instances]
                try:
                    image = read_dicom_series(paths)
                except ImageReadError as err:
                    skipped.append(f"{series_uid}: {err}")
                    logger.warning("CT series %s skipped: %s", series_uid, err)
                    continue
                probability = float(classifier.score([image], batch_size=1)[0])
                results.append(ImageResult(tuple(str(ds.SOPInstanceUID) for ds in instances), probability, classifier.threshold, series_uid))
                sources.extend(instances)
                continue
            images, used = [], []
            for ds in instances:
                try:
                    images.append(read_dicom(ds.filename))
                    used.append(ds)
                except ImageReadError as err:
                    skipped.append(f"{ds.SOPInstanceUID}: {err}")
                    logger.warning("image %s skipped: %s", ds.SOPInstanceUID, err)
            probabilities = classifier.score(images, batch_size=self.batch_size) if images else []
            for ds, probability in zip(used, probabilities):
                results.append(ImageResult((str(ds.SOPInstanceUID),), float(probability), classifier.threshold, series_uid))
                sources.append(ds)
        logger.info("study %s: %d result(s), %d skipped", study_uid, len(results), len(skipped))
        return StudyScores(study_uid, sources, results, model_info, skipped)


class FractureReportWriterOperator(Operator):
    """Writes one TID 1500 SR per study (and a KOS of the positive images) under the output folder."""

    def __init__(self, fragment: Fragment, *args: Any, output_folder: str | Path, **kwargs: Any) -> None:
        self.output_folder = Path(output_folder)
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_scores")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        from monai_fracture.reports import write_study_outputs

        for study in op_input.receive("study_scores") or []:
            paths = write_study_outputs(study.sources, study.results, study.model_info, self.output_folder)
            self.written.extend(paths)
            logger.info("study %s: wrote %s", study.study_uid, ", ".join(p.name for p in paths))
