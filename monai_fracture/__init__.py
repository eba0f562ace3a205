"""monai-fracture: DICOM-aware bone fracture classification on MONAI."""

__version__ = "0.1.0"

import warnings as _warnings

# The MONAI Deploy SDK (holoscan) lives in the ``monai`` namespace, so every ``import monai``
# loads it and holoscan warns about the thread stack size; harmless for our CPU use.
_warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)
