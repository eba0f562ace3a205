"""Network families behind one registry (EfficientNet-B and -Lite today, 2D radiographs and 3D CT),
pretrained weights and transfer-learning helpers."""

from monai_fracture.networks.efficientnet import B_NAMES, LITE_PARAMS, NETWORK_NAMES, EfficientNetLite
from monai_fracture.networks.registry import (
    NetworkFamily,
    build_network,
    default_image_size,
    gradcam_layer,
    head_module,
    prepare_for_export,
    register_family,
    replace_head,
)
from monai_fracture.networks.transfer import is_head_parameter, parameter_groups, set_backbone_trainable
from monai_fracture.networks.weights import PretrainedWeightsError, WeightsReport, load_pretrained

__all__ = [
    "B_NAMES",
    "LITE_PARAMS",
    "NETWORK_NAMES",
    "EfficientNetLite",
    "NetworkFamily",
    "PretrainedWeightsError",
    "WeightsReport",
    "build_network",
    "default_image_size",
    "gradcam_layer",
    "head_module",
    "is_head_parameter",
    "load_pretrained",
    "parameter_groups",
    "prepare_for_export",
    "register_family",
    "replace_head",
    "set_backbone_trainable",
]
