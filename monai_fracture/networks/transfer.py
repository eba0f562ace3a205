"""Transfer-learning helpers: head-only warm-up and discriminative learning rates.

The "head" is the classifier the network's family declares (``networks.registry``);
everything else is the pretrained backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from monai_fracture.networks import registry


def is_head_parameter(name: str, head_prefixes: Sequence[str]) -> bool:
    """Whether parameter ``name`` (as in ``named_parameters``) belongs to the classifier head."""
    name = name.removeprefix("module.")
    return any(name.startswith(prefix) for prefix in head_prefixes)


def set_backbone_trainable(net: nn.Module, trainable: bool, head_prefixes: Sequence[str] | None = None) -> int:
    """Freeze (``False``) or unfreeze the backbone; the head (the family's, unless given) always stays trainable.

    Only ``requires_grad`` changes: BatchNorm running statistics still update in train mode.
    Returns the number of backbone parameter tensors touched.
    """
    head_prefixes = registry.head_prefixes(net) if head_prefixes is None else head_prefixes
    touched = 0
    for name, parameter in net.named_parameters():
        if is_head_parameter(name, head_prefixes):
            parameter.requires_grad_(True)
        else:
            parameter.requires_grad_(trainable)
            touched += 1
    return touched


def parameter_groups(
    net: nn.Module,
    backbone_lr: float = 1e-4,
    head_lr: float = 1e-3,
    weight_decay: float = 1e-4,
    head_prefixes: Sequence[str] | None = None,
) -> list[dict]:
    """Optimizer parameter groups: backbone and head learning rates, no decay on norms and biases.

    Every parameter appears in exactly one group, frozen ones included, so an optimizer built
    once keeps working after :func:`set_backbone_trainable` unfreezes the backbone. Empty
    groups are left out. Each group carries a ``name`` for logging.
    """
    head_prefixes = registry.head_prefixes(net) if head_prefixes is None else head_prefixes
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in net.named_parameters():
        key = (is_head_parameter(name, head_prefixes), parameter.ndim > 1)
        groups.setdefault(key, []).append(parameter)
    result = []
    for (head, decays), params in sorted(groups.items()):
        result.append({
            "name": f"{'head' if head else 'backbone'}{'' if decays else '_no_decay'}",
            "params": params,
            "lr": head_lr if head else backbone_lr,
            "weight_decay": weight_decay if decays else 0.0,
        })
    return result


__all__ = ["is_head_parameter", "parameter_groups", "set_backbone_trainable"]
