"""monai-fracture: DICOM-aware bone fracture classification on MONAI."""

__version__ = "0.1.0"
