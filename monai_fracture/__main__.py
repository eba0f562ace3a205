"""``python -m monai_fracture`` is the CLI (also under ``torchrun -m monai_fracture``)."""

from monai_fracture.cli import entry

raise SystemExit(entry())
