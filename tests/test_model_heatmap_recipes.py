"""Heatmap recipes (model.gradcam): layer defaults per family, fusion, flip, and no hook pile-up.

Fast checks on an untrained network; whether the maps point at fractures is
``tests/test_model_gradcam_pointing.py``.
"""

from __future__ import annotations

import pytest
import torch

from monai_fracture.model import Classifier
from monai_fracture.networks import build_network
from monai_fracture.model.gradcam import class_activation_map, default_layers, grad_cam
from monai_fracture.networks.registry import last_convolution


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("efficientnet-lite0", pretrained=False).eval()


def _module(network: torch.nn.Module, name: str) -> torch.nn.Module:
    return dict(network.named_modules())[name]


def test_efficientnets_default_to_the_mean_of_a_stride_8_and_a_stride_32_stage(network):
    """The recipe chosen on FracAtlas and the phantoms (docs/validation.md, Localisation)."""
    assert default_layers(network) == ("_blocks.2", "_blocks.5")
    assert default_layers(build_network("efficientnet-b0", pretrained=False)) == ("_blocks.2", "_blocks.5")
    assert Classifier.heatmap_method == "layercam" and Classifier.heatmap_fusion == "mean"
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    assert default_layers(plain) == (last_convolution(plain),) == ("2",)


def test_repeated_maps_do_not_pile_up_hooks(network):
    """MONAI's CAM classes hook the layer on every construction; one wrapper per layer set is reused."""
    inputs = torch.rand(1, 3, 64, 64)
    for method in ("gradcam", "gradcampp", "layercam"):
        for _ in range(3):
            grad_cam(network, inputs, "_blocks.4", method=method)
    block = _module(network, "_blocks.4")
    assert len(block._forward_hooks) == 1 and len(block._backward_hooks) == 1


def test_fused_map_is_the_mean_or_product_of_the_scaled_layer_maps(network):
    inputs = torch.rand(1, 3, 64, 64)
    layers = ("_blocks.4", "_conv_head")
    single = [class_activation_map(network, inputs, layer, method="layercam") for layer in layers]
    scaled = [(m - m.min()) / (m.max() - m.min()) for m in single]
    mean = class_activation_map(network, inputs, layers, method="layercam", fusion="mean")
    product = class_activation_map(network, inputs, layers, method="layercam", fusion="product")
    assert mean.shape == (1, 64, 64) and mean.min() >= 0
    torch.testing.assert_close(mean, (scaled[0] + scaled[1]) / 2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(product, scaled[0] * scaled[1], atol=1e-5, rtol=1e-4)


def test_flip_averages_with_the_mirrored_map_mirrored_back(network):
    inputs = torch.rand(1, 3, 64, 64)
    plain = class_activation_map(network, inputs, "_conv_head")
    mirrored = class_activation_map(network, torch.flip(inputs, (-1,)), "_conv_head")
    both = class_activation_map(network, inputs, "_conv_head", flip=True)
    torch.testing.assert_close(both, (plain + torch.flip(mirrored, (-1,))) / 2, atol=1e-5, rtol=1e-4)


def test_unknown_layers_methods_and_fusions_are_named(network):
    inputs = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="no layer _blocks.99"):
        class_activation_map(network, inputs, ("_blocks.99",))
    with pytest.raises(ValueError, match="unknown saliency method 'cam'"):
        class_activation_map(network, inputs, "_conv_head", method="cam")
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        class_activation_map(network, inputs, ("_blocks.4", "_conv_head"), fusion="max")
