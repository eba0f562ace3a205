"""monai-fracture: DICOM-aware bone fracture classification on MONAI."""

__version__ = "0.1.0"

import warnings as _warnings

# The MONAI Deploy SDK (holoscan) lives in the ``monai`` namespace, so every ``import monai``
# loads it and holoscan warns about the thread stack size; harmless for our CPU use.
_warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)

from monai_fracture.log_privacy import silence_phi_warnings as _silence_phi_warnings  # noqa: E402

_silence_phi_warnings()  # highdicom quotes PatientName in a warning: never on stderr
