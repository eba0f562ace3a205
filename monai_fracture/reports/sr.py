"""TID 1500 Measurement Report (Comprehensive 3D SR) with one measurement group per decision."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from monai_fracture.reports import concepts
from monai_fracture.reports.results import ImageResult, ModelIdentity


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


def measurement_group(
    result: ImageResult,
    headers: dict[str, Dataset],
    algorithm: hd.sr.AlgorithmIdentification,
    tracking_uid: str,
    label: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group: fracture present/absent, its probability and threshold, source images."""
    sources = [
        hd.sr.SourceImageForMeasurementGroup.from_source_image(headers[uid]) for uid in result.sop_uids
    ]
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
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=label[:64]),
        finding_type=concepts.FRACTURE_OF_BONE,
        algorithm_id=algorithm,
        measurements=[probability, threshold],
        qualitative_evaluations=[evaluation],
        source_images=sources,
    )


def build_fracture_sr(
    headers: Sequence[Dataset],
    results: Sequence[ImageResult],
    model_info: ModelIdentity,
    *,
    series_uid: str,
    sop_uid: str,
    device_uid: str,
    series_number: int = 9901,
    instance_number: int = 1,
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
        groups.append(measurement_group(result, by_uid, algorithm, tracking_uid, label))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device_observer(device_uid, model_info)),
        procedure_reported=concepts.procedure_for_modalities(modalities),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=referenced,
        content=report[0],
        series_instance_uid=UID(series_uid),
        series_number=series_number,
        sop_instance_uid=UID(sop_uid),
        instance_number=instance_number,
        manufacturer=concepts.MANUFACTURER,
        is_complete=True,
        series_description="Fracture classification (AI)",
    )
