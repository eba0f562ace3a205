"""monai-fracture: DICOM-aware bone fracture classification on MONAI."""

__version__ = "0.1.0"

import os as _os
import warnings as _warnings

# ONNX Runtime (1.32) opens a telemetry database under ~/.cache/Microsoft when it is imported;
# only this variable, set before that import, stops it (disable_telemetry_events() comes too late).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# The MONAI Deploy SDK (holoscan) lives in the ``monai`` namespace, so every ``import monai``
# loads it and holoscan warns about the thread stack size; harmless for our CPU use.
_warnings.filterwarnings("ignore", message="Current stack size", category=RuntimeWarning)

from monai_fracture.log_privacy import silence_phi_warnings as _silence_phi_warnings  # noqa: E402

_silence_phi_warnings()  # highdicom quotes PatientName in a warning: never on stderr
