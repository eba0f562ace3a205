"""EfficientNet factory (2D radiographs, 3D CT), pretrained weights and transfer-learning helpers."""

from monai_fracture.networks.efficientnet import (
    B_NAMES,
    LITE_PARAMS,
    NETWORK_NAMES,
    EfficientNetLite,
    build_network,
    default_image_size,
    prepare_for_export,
)
from monai_fracture.networks.transfer import is_head_parameter, parameter_groups, set_backbone_trainable
from monai_fracture.networks.weights import PretrainedWeightsError, WeightsReport, load_pretrained

__all__ = [
    "B_NAMES",
    "LITE_PARAMS",
    "NETWORK_NAMES",
    "EfficientNetLite",
    "PretrainedWeightsError",
    "WeightsReport",
    "build_network",
    "default_image_size",
    "is_head_parameter",
    "load_pretrained",
    "parameter_groups",
    "prepare_for_export",
    "set_backbone_trainable",
]
