"""Network families: what training, export, transfer learning and Grad-CAM need to know about a network.

A family (EfficientNet and EfficientNet-Lite today, declared in ``networks/efficientnet.py``) says
how to build its networks, which module is the classification head, where pretrained weights come
from, how to prepare a network for TorchScript/ONNX export, and which layer Grad-CAM reads. Code
outside the family module asks this registry and never names a layer itself, so adding a network
(ConvNeXt, DenseNet, ...) is one ``register_family`` call::

    register_family(NetworkFamily(
        name="densenet", names=("densenet121",), build=my_builder, head="class_layers.out",
        gradcam_layer="class_layers.relu", owns=lambda net: isinstance(net, DenseNet)))
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)

# Modules whose import registers the families shipped with the package.
BUILTIN_FAMILY_MODULES = ("monai_fracture.networks.efficientnet",)


def _eval(net: nn.Module) -> nn.Module:
    return net.eval()


@dataclass(frozen=True)
class NetworkFamily:
    """One family of networks and the facts the rest of the package asks about it.

    ``build(name, spatial_dims=, in_channels=, num_classes=, dropout=)`` returns a randomly
    initialised network; ``head`` and ``gradcam_layer`` are dotted module names inside it;
    ``load_pretrained(net, name, pretrained, progress)`` fills it with weights (``None``: the family
    has no pretrained source); ``prepare_export(net)`` makes it traceable/exportable (in eval mode);
    ``owns(net)`` recognises a network of this family; ``image_size(name)`` is the resolution its
    pretrained weights were trained at; ``heatmap_layers`` are the layers the default heatmap
    (LayerCAM, fused by product) reads: a finer stage for resolution and the Grad-CAM layer for class
    specificity (empty: the Grad-CAM layer alone).
    """

    name: str
    names: tuple[str, ...]
    build: Callable[..., nn.Module]
    head: str
    gradcam_layer: str
    owns: Callable[[nn.Module], bool]
    load_pretrained: Callable[[nn.Module, str, Any, bool], Any] | None = None
    prepare_export: Callable[[nn.Module], nn.Module] = _eval
    # the global pooling before the head: its input is the last feature map, the one a class
    # activation map (and box-guided training) reads; None: the last adaptive average pooling
    pooling: str | None = None
    image_size: Callable[[str], int] | None = None
    heatmap_layers: tuple[str, ...] = ()


_FAMILIES: dict[str, NetworkFamily] = {}
_builtin_loaded = False


def register_family(family: NetworkFamily) -> NetworkFamily:
    """Add ``family`` (replacing one of the same name); its network names must not belong to another family."""
    for other in _FAMILIES.values():
        clash = set(other.names) & set(family.names)
        if other.name != family.name and clash:
            raise ValueError(f"network family {family.name!r}: names {sorted(clash)} already belong to {other.name!r}")
    _FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    _FAMILIES.pop(name, None)


def families() -> tuple[NetworkFamily, ...]:
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        for module in BUILTIN_FAMILY_MODULES:
            importlib.import_module(module)
    return tuple(_FAMILIES.values())


def network_names() -> tuple[str, ...]:
    return tuple(name for family in families() for name in family.names)


def family_named(network_name: str) -> NetworkFamily:
    """The family that builds ``network_name`` (e.g. ``efficientnet-lite0``)."""
    for family in families():
        if network_name in family.names:
            return family
    raise ValueError(f"unknown network {network_name!r}; choose one of {', '.join(network_names())}")


def _unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(net, "module", net)


def family_of(net: nn.Module) -> NetworkFamily | None:
    """The family of a built network, or ``None`` for a network no family claims."""
    net = _unwrap(net)
    return next((family for family in families() if family.owns(net)), None)


def _require_family(net: nn.Module) -> NetworkFamily:
    family = family_of(net)
    if family is None:
        raise ValueError(f"{type(_unwrap(net)).__name__} belongs to no registered network family "
                         f"({', '.join(f.name for f in families())}): register_family() it first")
    return family


def build_network(
    name: str = "efficientnet-lite0",
    spatial_dims: int = 2,
    in_channels: int = 3,
    num_classes: int = 2,
    pretrained: bool | str | PathLike | None = False,
    dropout: float | None = 0.2,
    progress: bool = False,
    bn_momentum: float | None = 0.1,
    head_init_std: float = 0.01,
) -> nn.Module:
    """A classifier of any registered family, with a small fresh head, optionally with pretrained weights.

    Args:
        name: a network name of a registered family (``efficientnet-b0`` .. ``b7``,
            ``efficientnet-lite0`` .. ``lite2`` ship with the package).
        spatial_dims: 2 for radiographs, 3 for CT volumes (depth = first spatial axis).
        in_channels: input channels; with pretrained weights the family adapts the stem.
        num_classes: outputs of the head.
        pretrained: ``False``/``None`` random; ``True``/``"imagenet"`` the family's pretrained
            source; otherwise a path to a ``.pth`` state dict.
        dropout: dropout before the head; ``None`` keeps the family's default.
        progress: show a download progress bar where the family downloads.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention). MONAI's
            EfficientNet keeps the TF value 0.01, so after a short fine-tune the running
            statistics still describe ImageNet and eval-mode probabilities drift far from 0.5;
            0.1 adapts them. ``None`` keeps the family's value.
        head_init_std: the head starts at N(0, std) weights and zero bias (see ``init_head``).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    family = family_named(name)
    net = family.build(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                       dropout=dropout)
    if bn_momentum is not None:
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    init_head(net, std=head_init_std)
    if pretrained:
        if family.load_pretrained is None:
            raise ValueError(f"network family {family.name!r} has no pretrained weights source")
        family.load_pretrained(net, name, pretrained, progress)
    return net


def head_name(net: nn.Module) -> str:
    """Dotted name of the classification head of ``net`` (``_fc`` for EfficientNet)."""
    return _require_family(net).head


def head_prefixes(net: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the head, as ``named_parameters`` spells them."""
    return (f"{head_name(net)}.",)


def head_module(net: nn.Module) -> nn.Linear:
    """The classification head of ``net`` (a ``Linear``)."""
    head = _unwrap(net).get_submodule(head_name(net))
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(_unwrap(net)).__name__}: head {head_name(net)!r} is a {type(head).__name__}, "
                         "not a Linear layer")
    return head


def init_head(net: nn.Module, std: float = 0.01) -> nn.Module:
    """Small head weights (N(0, std)) and zero bias, so training starts at P = 0.5.

    MONAI initialises a Linear layer uniformly in +-1/sqrt(out_features): for a two-class head that
    is +-0.71, which on ImageNet features gives logits in the tens and a starting loss far above log(2).
    """
    head = head_module(net)
    nn.init.normal_(head.weight, std=std)
    nn.init.zeros_(head.bias)
    return net


def replace_head(net: nn.Module, num_classes: int, std: float = 0.01) -> nn.Linear:
    """Put a fresh ``num_classes`` head (small init) in place of the family's head; returns it."""
    name = head_name(net)
    old = head_module(net)
    new = nn.Linear(old.in_features, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attribute = name.rpartition(".")
    parent = _unwrap(net).get_submodule(parent_name) if parent_name else _unwrap(net)
    setattr(parent, attribute, new)
    init_head(net, std=std)
    return new


def prepare_for_export(net: nn.Module) -> nn.Module:
    """The network made traceable for TorchScript / ONNX by its family (returned in eval mode)."""
    family = family_of(net)
    return family.prepare_export(net) if family is not None else net.eval()


def pooling_layer(net: nn.Module) -> str:
    """The global pooling whose input is the last feature map: the family's ``pooling``, else the last one found.

    Without a declaration the last ``AdaptiveAvgPool2d/3d`` of the network is taken (the usual
    "features, pool, linear head" classifier).
    """
    family = family_of(net)
    if family is not None and family.pooling:
        return family.pooling
    last = None
    for name, module in _unwrap(net).named_modules():
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
            last = name
    if last is None:
        raise ValueError(f"{type(_unwrap(net)).__name__} has no global average pooling before its head "
                         "(declare NetworkFamily.pooling)")
    return last


def last_convolution(net: nn.Module) -> str:
    """Name of the network's last convolution: the Grad-CAM layer of a network no family claims."""
    last = None
    for name, module in net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            last = name
    if last is None:
        raise ValueError("the network has no convolution layer for Grad-CAM")
    return last


def gradcam_layer(net: nn.Module) -> str:
    """The layer Grad-CAM reads: the family's declared layer, else the last convolution."""
    family = family_of(net)
    return family.gradcam_layer if family is not None else last_convolution(_unwrap(net))


def heatmap_layers(net: nn.Module) -> tuple[str, ...]:
    """The layers of the default heatmap: the family's ``heatmap_layers``, else its Grad-CAM layer."""
    family = family_of(net)
    if family is not None and family.heatmap_layers:
        return family.heatmap_layers
    return (gradcam_layer(net),)


def default_image_size(name: str) -> int:
    """The resolution the pretrained weights of network ``name`` were trained at."""
    family = family_named(name)
    if family.image_size is None:
        raise ValueError(f"network family {family.name!r} declares no default image size")
    return family.image_size(name)


__all__ = [
    "NetworkFamily",
    "build_network",
    "default_image_size",
    "families",
    "family_named",
    "family_of",
    "gradcam_layer",
    "heatmap_layers",
    "head_module",
    "head_name",
    "head_prefixes",
    "init_head",
    "last_convolution",
    "network_names",
    "pooling_layer",
    "prepare_for_export",
    "register_family",
    "replace_head",
    "unregister_family",
]
