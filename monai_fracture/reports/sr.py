"""TID 1500 Measurement Report (Comprehensive 3D SR) with one measurement group per decision."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from monai_fracture.reports import concepts, series
from monai_fracture.reports.files import derived_uid
from monai_fracture.reports.results import ImageResult, ModelIdentity
from monai_fracture.reports.series import Placement
from monai_fracture.reports.writer import StudyOutput


def algorithm_identification(model_info: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=str(model_info.name)[:64] or "monai-fracture",
        version=str(model_info.version)[:64] or "unknown",
        manufacturer=concepts.MANUFACTURER,
    )


def device_observer(device_uid: str, model_info: ModelIdentity) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name=str(model_info.name)[:64] or "monai-fracture",
            manufacturer_name=concepts.MANUFACTURER,
            model_name=str(model_info.version)[:64] or None,
        ),
    )


def summary_text(result: ImageResult, model_info: ModelIdentity) -> hd.sr.TextContentItem:
    """TEXT qualitative evaluation (TID 1501/1410 row "Qualitative Evaluations") with the decision in words.

    Renderers that show short items inline without their concept names (``dsr2html`` by default)
    still read "Fracture suspected (probability 0.93, threshold 0.13; model ...)".
    """
    return hd.sr.TextContentItem(
        name=concepts.QUALITATIVE_EVALUATIONS,
        value=result.summary(model_info)[:1024],
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def image_region(result: ImageResult, header: Dataset) -> hd.sr.ImageRegion:
    """The region of strongest evidence as a closed POLYLINE SCOORD in the source image's pixels."""
    assert result.region is not None
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=result.region.scoord_outline(),
        source_image=hd.sr.SourceImageForRegion.from_source_image(header),
    )


def measurement_group(
    result: ImageResult,
    headers: dict[str, Dataset],
    algorithm: hd.sr.AlgorithmIdentification,
    tracking_uid: str,
    label: str,
    model_info: ModelIdentity | None = None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """One group per decision: fracture present/absent, its probability and threshold, and a TEXT summary.

    A positive radiograph with a region becomes a TID 1410 planar ROI group whose image region
    (SCOORD on the source image) is where the evidence is strongest; everything else a TID 1501
    group with its source images.
    """
    probability = hd.sr.Measurement(
        name=concepts.PROBABILITY,
        value=float(result.probability),
        unit=concepts.NO_UNITS,
        algorithm_id=algorithm,
    )
    threshold = hd.sr.Measurement(name=concepts.THRESHOLD, value=float(result.threshold), unit=concepts.NO_UNITS)
    evaluation = hd.sr.QualitativeEvaluation(
        name=concepts.FRACTURE_OF_BONE, value=concepts.PRESENT if result.positive else concepts.ABSENT
    )
    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=label[:64]),
        finding_type=concepts.FRACTURE_OF_BONE,
        algorithm_id=algorithm,
        measurements=[probability, threshold],
        qualitative_evaluations=[evaluation],
    )
    if result.positive and result.region is not None and len(result.sop_uids) == 1:
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=image_region(result, headers[result.sop_uids[0]]), **common
        )
    else:
        sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(headers[uid]) for uid in result.sop_uids]
        group = hd.sr.MeasurementsAndQualitativeEvaluations(source_images=sources, **common)
    if model_info is not None:
        group[0].ContentSequence.append(summary_text(result, model_info))
    return group


def build_fracture_sr(
    headers: Sequence[Dataset],
    results: Sequence[ImageResult],
    model_info: ModelIdentity,
    placement: Placement,
    *,
    device_uid: str,
    tracking_uids: Sequence[str] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """One SR for one study; ``headers`` are clean source headers (``evidence.clean_study_headers``)."""
    by_uid = {str(h.SOPInstanceUID): h for h in headers}
    algorithm = algorithm_identification(model_info)
    referenced = [by_uid[uid] for r in results for uid in r.sop_uids]
    modalities = {str(h.get("Modality", "")).upper() for h in referenced}
    groups = []
    for index, result in enumerate(results):
        tracking_uid = tracking_uids[index] if tracking_uids else hd.UID()
        if len(result.sop_uids) == 1:
            label = f"fracture classification, image {index + 1}"
        else:
            label = f"fracture classification, series {index + 1}"
        groups.append(measurement_group(result, by_uid, algorithm, tracking_uid, label, model_info))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device_observer(device_uid, model_info)),
        procedure_reported=concepts.procedure_for_modalities(modalities),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(evidence=referenced, content=report[0], is_complete=True,
                                   **placement.highdicom_kwargs())


def write(study: StudyOutput) -> list[Path]:
    """The study's SR: every decision, positives with their evidence region."""
    model_key = series.model_key(study.model_info)
    sr = build_fracture_sr(
        study.headers,
        study.results,
        study.model_info,
        study.placement("sr", [r.content_key() for r in study.ordered]),
        device_uid=study.device_uid,
        tracking_uids=[derived_uid("tracking", study.study_uid, *model_key, *r.sop_uids) for r in study.results],
    )
    return [study.save("SR", sr)]
