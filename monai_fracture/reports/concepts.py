"""The coded concepts our DICOM outputs use, written down once (SNOMED CT and DICOM codes)."""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

#: The finding the classifier reports on.
FRACTURE_OF_BONE = Code("125605004", "SCT", "Fracture of bone")
#: Qualitative values of the finding.
PRESENT = codes.SCT.Present  # (52101004, SCT, "Present")
ABSENT = codes.SCT.Absent  # (272519000, SCT, "Absent")
#: NUM concept for P(fracture), unitless.
PROBABILITY = codes.DCM.Probability  # (122157, DCM, "Probability")
#: NUM concept for the decision threshold the probability was compared with.
THRESHOLD = codes.DCM.ThresholdValue  # (122411, DCM, "Threshold Value")
#: TEXT qualitative evaluation of TID 1501/1410 (row "Qualitative Evaluations"): the decision in words.
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
NO_UNITS = codes.UCUM.NoUnits  # ("1", UCUM, "no units")
#: Procedure reported, by modality family.
PROCEDURE_RADIOGRAPHY = codes.SCT.PlainRadiography  # (168537006, SCT)
PROCEDURE_CT = codes.SCT.ComputedTomography  # (77477000, SCT)
#: Title of the Key Object Selection that flags positive images (CID 7010).
KEY_OBJECTS_TITLE = codes.DCM.OfInterest  # (113000, DCM, "Of Interest")

#: Modalities reported as CT procedures; everything else is a projection radiograph.
CROSS_SECTIONAL_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})

MANUFACTURER = "monai-fracture"


def procedure_for_modalities(modalities: set[str]) -> Code:
    """The procedure code for a study: CT when any scored source is cross-sectional."""
    return PROCEDURE_CT if modalities & CROSS_SECTIONAL_MODALITIES else PROCEDURE_RADIOGRAPHY
