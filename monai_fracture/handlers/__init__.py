"""Ignite handlers for training bundles."""

from monai_fracture.handlers.unfreeze import UnfreezeBackbone

__all__ = ["UnfreezeBackbone"]
