"""Short start-up for one-shot scoring processes: MONAI without the packages scoring never uses.

``import monai`` walks every MONAI subpackage (``load_submodules``) and executes each module,
and those modules pull in optional packages at import time through ``optional_import``:
PyTorch Ignite (and with it ``torch.distributed``, FSDP and sympy), MLflow (with pandas,
pyarrow, FastAPI, scikit-learn), matplotlib, scipy, scikit-image, TensorBoard, CuPy, and the
MONAI Deploy App SDK (holoscan). A ``monai-fracture score`` process uses none of them for its
decode -> model -> DICOM path, yet pays to import them on every start (see docs/performance.md).

Two facts make the walk skippable without touching MONAI: ``load_submodules`` passes over a
name already present in ``sys.modules``, and Python answers a ``sys.modules`` entry of ``None``
with ``ModuleNotFoundError``, which ``optional_import`` turns into a placeholder that raises on
use. The names below are set to ``None`` while MONAI initialises and removed again afterwards,
so a later ``import scipy`` (our Grad-CAM blob finder) or ``import pandas`` works as usual.

The price, and why this is only for the score command's own process: MONAI objects that were
bound at import time to a skipped package stay placeholders in that process (for example
``monai.utils.enums`` without Ignite's ``EventEnum``, MONAI's MLflow handler, its matplotlib
plots). So the full list applies only when the CLI program owns the process
(``monai_fracture.cli.entry`` sets ``owns_process``); a caller of ``cli.main`` inside a longer
process (tests, a notebook) gets only the MONAI Deploy SDK skipped, as before. The Deploy app's
program (``python -m monai_fracture.deploy``) owns its process too and skips the same list
except the App SDK. Training, the bundle and the PACS node import MONAI the normal way.
"""

from __future__ import annotations

import sys

#: Top-level names kept out of ``sys.modules`` while MONAI initialises for scoring.
SKIPPED_WHILE_MONAI_LOADS: tuple[str, ...] = (
    "monai.deploy",  # MONAI Deploy App SDK: holoscan, cupy
    "ignite",  # training engines; drags in torch.distributed (FSDP, DTensor) and sympy
    "mlflow",  # experiment tracking; drags in pandas, pyarrow, FastAPI, scikit-learn
    "tensorboard",
    "torch.utils.tensorboard",
    "matplotlib",  # MONAI's plotting helpers; heatmap SCs import it themselves when asked for
    "pandas",  # MONAI's profiling helpers
    "scipy",  # MONAI's optional scipy transforms; our blob finder imports it itself
    "sklearn",
    "skimage",
    "cupy",
    "cupyx",
    "jsonschema",  # MONAI bundle config validation (never run while scoring)
    "tifffile",  # MONAI's whole-slide-image reader
    # MONAI's own training, federated-learning and application subpackages (walked, never used here)
    "monai.handlers",
    "monai.engines",
    "monai.fl",
    "monai.auto3dseg",
    "monai.apps.auto3dseg",
    "monai.apps.pathology",
    "monai.apps.detection",
    "monai.apps.nnunet",
    "monai.apps.deepedit",
    "monai.apps.deepgrow",
    "monai.apps.reconstruction",
    "monai.apps.vista3d",
    "monai.apps.generation",
    "monai.apps.nuclick",
)

#: What the MONAI Deploy app (``python -m monai_fracture.deploy``) needs of that list: the App SDK.
KEPT_FOR_DEPLOY: tuple[str, ...] = ("monai.deploy", "cupy", "cupyx")

#: True when the CLI program is the whole process (set by ``monai_fracture.cli.entry``).
owns_process = False


def import_monai_for_scoring(keep: tuple[str, ...] = ()) -> None:
    """Import MONAI as a short-lived scoring process needs it; no-op when MONAI is loaded already.

    ``keep`` names entries of the list that this process does use (``KEPT_FOR_DEPLOY`` for the
    Deploy app, which a MAP starts once per study: as much a one-shot process as the CLI).
    """
    if "monai" in sys.modules:
        return
    skipped = SKIPPED_WHILE_MONAI_LOADS if owns_process else ("monai.deploy",)
    placed = [name for name in skipped if name not in sys.modules and name not in keep]
    for name in placed:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import monai  # noqa: F401
    finally:
        for name in placed:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
