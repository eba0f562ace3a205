"""Small DX datasets built in memory, for tests that encode their own pixel data (HTJ2K, bombs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def dx_header(syntax: str | UID, rows: int, columns: int, *, bits_allocated: int = 8, bits_stored: int | None = None,
              patient_id: str = "TEST", patient_name: str = "Test^Patient") -> Dataset:
    """A MONOCHROME2 DX header the reader accepts (fresh UIDs, no pixel data yet) in transfer syntax ``syntax``."""
    bits_stored = bits_allocated if bits_stored is None else bits_stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "DX", patient_id, patient_name
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_allocated, bits_stored, bits_stored - 1, 0
    return ds


def content_items(ds: Dataset, value_type: str | None = None) -> Iterator[Dataset]:
    """The content items of an SR tree (or of one item's subtree), depth first; only ``value_type`` ones if given."""
    stack = list(getattr(ds, "ContentSequence", []))
    while stack:
        item = stack.pop(0)
        if value_type is None or item.ValueType == value_type:
            yield item
        stack[0:0] = list(getattr(item, "ContentSequence", []))


def first_multi_image_study(datasets: Iterable[Dataset]) -> list[Dataset]:
    """The first study (in input order) with two or more images: the AP + lateral pair the report tests need."""
    by_study: dict[str, list[Dataset]] = {}
    for ds in datasets:
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    multi = [group for group in by_study.values() if len(group) >= 2]
    assert multi, "the demo set should contain a study with two images"
    return multi[0]
