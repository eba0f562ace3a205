"""Key Object Selection (TID 2010, "Of Interest") of the images judged positive."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset

from monai_fracture.reports import concepts
from monai_fracture.reports.results import ModelIdentity
from monai_fracture.reports.series import Placement
from monai_fracture.reports.sr import device_observer
from monai_fracture.reports.writer import StudyOutput


def build_key_object_selection(
    positive_headers: Sequence[Dataset],
    model_info: ModelIdentity,
    placement: Placement,
    *,
    device_uid: str,
) -> hd.ko.KeyObjectSelectionDocument:
    """KOS (TID 2010, "Of Interest") referencing exactly ``positive_headers``; there must be at least one."""
    if not positive_headers:
        raise ValueError("a Key Object Selection needs at least one referenced image")
    content = hd.ko.KeyObjectSelection(
        document_title=concepts.KEY_OBJECTS_TITLE,
        referenced_objects=list(positive_headers),
        observer_device_context=device_observer(device_uid, model_info),
        description=f"Images with a suspected fracture ({model_info.name} {model_info.version})"[:1024],
    )
    return hd.ko.KeyObjectSelectionDocument(evidence=list(positive_headers), content=content,
                                            **placement.highdicom_kwargs())


def write(study: StudyOutput) -> list[Path]:
    """A KOS of the positive images; none when no image is positive."""
    positive_uids = [uid for r in study.positives for uid in r.sop_uids]
    if not positive_uids:
        return []
    by_uid = study.by_uid
    kos = build_key_object_selection([by_uid[uid] for uid in positive_uids], study.model_info,
                                     study.placement("kos", positive_uids), device_uid=study.device_uid)
    return [study.save("KO", kos)]
