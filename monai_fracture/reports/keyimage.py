"""Former home of the KOS and SC builders, kept so existing imports work: see ``ko`` and ``sc``."""

from monai_fracture.reports.ko import build_key_object_selection
from monai_fracture.reports.sc import build_heatmap_sc, overlay_rgb

__all__ = ["build_heatmap_sc", "build_key_object_selection", "overlay_rgb"]
