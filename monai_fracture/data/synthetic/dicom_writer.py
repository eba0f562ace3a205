"""Build DX, CR and CT objects around simulated pixels, with the modules dciodvfy asks for.

Kept separate from the phantoms so that the pixel model and the DICOM packaging change
independently. Everything here is deterministic: no clock, no random UIDs (callers pass UIDs
derived from the seed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    UID,
)

# openjpeg logs every tile at INFO; one line per file drowns the generator's own log
logging.getLogger("openjpeg").setLevel(logging.WARNING)

# Transfer syntaxes the generator may write, by short name (what labels.csv shows).
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}

# Body part -> (BodyPartExamined defined term, SNOMED CT code, meaning)
BODY_PARTS: dict[str, tuple[str, str, str]] = {
    "femur": ("THIGH", "68367000", "Thigh"),
    "forearm": ("FOREARM", "14975008", "Forearm"),
    "leg": ("LEG", "30021000", "Lower leg"),
    "hand": ("HAND", "85562004", "Hand"),
    "long_bone": ("LEG", "30021000", "Lower leg"),
    "ribs": ("RIB", "113197003", "Rib"),
}


def available_transfer_syntaxes() -> list[str]:
    """Short names of the transfer syntaxes pydicom can encode here (plugins differ per machine)."""
    from pydicom.pixels.encoders.base import get_encoder

    names = ["explicit", "implicit"]
    for name in ("rle", "jpegls", "jpeg2000"):
        try:
            if get_encoder(TRANSFER_SYNTAXES[name]).is_available:
                names.append(name)
        except (NotImplementedError, ValueError, KeyError):
            continue
    return names


@dataclass
class Hierarchy:
    """Patient / study / series / instance identity of one object."""

    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    study_uid: str
    study_id: str
    accession_number: str
    study_date: str
    study_time: str
    series_uid: str
    series_number: int
    sop_uid: str
    instance_number: int
    frame_of_reference_uid: str | None = None


def _code(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _base_dataset(sop_class: UID, ids: Hierarchy, modality: str, body_part: str, description: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ids.sop_uid
    ds.StudyDate = ids.study_date
    ds.SeriesDate = ids.study_date
    ds.ContentDate = ids.study_date
    ds.StudyTime = ids.study_time
    ds.SeriesTime = ids.study_time
    ds.ContentTime = ids.study_time
    ds.AccessionNumber = ids.accession_number
    ds.Modality = modality
    ds.Manufacturer = "monai-fracture synthetic phantom"
    ds.InstitutionName = "Synthetic Hospital"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"{BODY_PARTS[body_part][2]} {modality}"
    ds.SeriesDescription = description
    ds.ManufacturerModelName = "phantom"
    ds.PatientName = ids.patient_name
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = ids.patient_birth_date
    ds.PatientSex = ids.patient_sex
    ds.BodyPartExamined = BODY_PARTS[body_part][0]
    ds.StudyInstanceUID = ids.study_uid
    ds.SeriesInstanceUID = ids.series_uid
    ds.StudyID = ids.study_id
    ds.SeriesNumber = ids.series_number
    ds.InstanceNumber = ids.instance_number
    ds.BurnedInAnnotation = "NO"
    return ds


def _pixel_module(ds: Dataset, pixels: np.ndarray, photometric: str, bits_stored: int, signed: bool = False) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels.astype("<i2" if signed else "<u2")).tobytes()


def radiograph_dataset(
    pixels: np.ndarray,
    *,
    ids: Hierarchy,
    modality: str,
    photometric: str,
    bits_stored: int,
    spacing_mm: float,
    body_part: str,
    view: str,
    laterality: str,
    window: tuple[float, float] | None,
    voi_lut: tuple[int, np.ndarray] | None = None,
) -> Dataset:
    """A DX (For Presentation) or CR image around ``pixels`` (uint16 stored values)."""
    if modality == "DX":
        ds = _base_dataset(DigitalXRayImageStorageForPresentation, ids, "DX", body_part, f"{view} view")
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
        ds.PixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "phantom geometry"
        ds.DetectorType = "SCINTILLATOR"
        ds.PositionerType = "COLUMN"
        ds.ImageLaterality = laterality
        ds.AnatomicRegionSequence = Sequence([_code(*BODY_PARTS[body_part][1:])])
        ds.AcquisitionContextSequence = Sequence([])
        ds.PixelIntensityRelationship = "LOG"
        # -1: higher stored values mean less X-ray reached the detector (bone high in MONOCHROME2)
        ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.LossyImageCompression = "00"
        ds.PatientOrientation = ["L", "F"] if view == "AP" else ["A", "F"]
    else:
        ds = _base_dataset(ComputedRadiographyImageStorage, ids, "CR", body_part, f"{view} view")
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ImagerPixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
        ds.PlateType = "ST-VI"
        ds.PhosphorType = "BaFBr:Eu"
        ds.PatientOrientation = ["L", "F"] if view == "AP" else ["A", "F"]
        ds.Laterality = laterality
    ds.ViewPosition = "AP" if view == "AP" else "LL"
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    ds.KVP = "55"
    ds.DistanceSourceToDetector = "1000"
    _pixel_module(ds, pixels, photometric, bits_stored)
    if window is not None:
        ds.WindowCenter = f"{window[0]:.1f}"
        ds.WindowWidth = f"{window[1]:.1f}"
        ds.VOILUTFunction = "LINEAR"
    if voi_lut is not None:
        first, table = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(table), first, 12]
        item.LUTExplanation = "phantom soft contrast"
        item.add_new(0x00283006, "OW", np.ascontiguousarray(table, dtype="<u2").tobytes())  # LUT Data
        ds.VOILUTSequence = Sequence([item])
    return ds


def ct_slice_dataset(
    pixels: np.ndarray,
    *,
    ids: Hierarchy,
    body_part: str,
    position: tuple[float, float, float],
    spacing: tuple[float, float, float],
    intercept: float,
    bits_stored: int,
    signed: bool,
    laterality: str = "R",
) -> Dataset:
    """One axial CT slice; ``pixels`` are stored values (HU = value + intercept)."""
    ds = _base_dataset(CTImageStorage, ids, "CT", body_part, "bone axial")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Laterality = laterality  # General Series 2C: limbs and ribs are paired body parts
    ds.FrameOfReferenceUID = ids.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "FFS"
    ds.ImagePositionPatient = [f"{v:.3f}" for v in position]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[2]:.4f}"]
    ds.SliceThickness = f"{spacing[0]:.3f}"
    ds.SpacingBetweenSlices = f"{spacing[0]:.3f}"
    ds.SliceLocation = f"{position[2]:.3f}"
    ds.RescaleIntercept = f"{intercept:.0f}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.KVP = "120"
    ds.AcquisitionNumber = 1
    ds.ConvolutionKernel = "BONE"
    ds.WindowCenter = "500"
    ds.WindowWidth = "2000"
    _pixel_module(ds, pixels, "MONOCHROME2", bits_stored, signed)
    return ds


def save_dataset(ds: Dataset, path: Path, transfer_syntax: str) -> None:
    """Write ``ds`` as a DICOM Part 10 file in the named transfer syntax (lossless only)."""
    ts = TRANSFER_SYNTAXES[transfer_syntax]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MONAI_FRACTURE"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if ts.is_compressed:
        ds.compress(ts, generate_instance_uid=False)  # keep the seed-derived UID (determinism)
    else:
        ds.file_meta.TransferSyntaxUID = ts
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
