"""Key Object Selection (TID 2010, "Of Interest") of the images judged positive."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import UID

from monai_fracture.reports import concepts
from monai_fracture.reports.results import ModelIdentity
from monai_fracture.reports.sr import device_observer


def build_key_object_selection(
    positive_headers: Sequence[Dataset],
    model_info: ModelIdentity,
    *,
    series_uid: str,
    sop_uid: str,
    device_uid: str,
    series_number: int = 9902,
    instance_number: int = 1,
    series_description: str = "Fracture key images (AI)",
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
    return hd.ko.KeyObjectSelectionDocument(
        evidence=list(positive_headers),
        content=content,
        series_instance_uid=UID(series_uid),
        series_number=series_number,
        sop_instance_uid=UID(sop_uid),
        instance_number=instance_number,
        manufacturer=concepts.MANUFACTURER,
        series_description=series_description[:64],
    )
