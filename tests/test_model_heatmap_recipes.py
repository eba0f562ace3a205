"""Heatmap recipes (model.gradcam): layer defaults per family, fusion, flip, and no hook pile-up.

Fast checks on an untrained network; whether the maps point at fractures is
``tests/test_model_gradcam_pointing.py``.
"""

from __future__ import annotations

import pytest
import torch

from monai_fracture.model import Classifier
from monai_fracture.networks import build_network
from monai_fracture.model.gradcam import class_activation_map, default_layers, grad_cam, scale_to_unit
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


def _model_with_heatmap(folder, heatmap: dict):
    from monai_fracture.model.package import ModelInfo, save_model

    torch.manual_seed(0)
    network = build_network("efficientnet-lite0", pretrained=False)
    for module in network.modules():  # BatchNorm statistics of real activations: maps that are not all zero
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        network.train()(torch.rand(8, 3, 96, 96))
    info = ModelInfo(network={"name": "efficientnet-lite0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2},
                     preprocessing={"modality": "xr", "size": 96}, heatmap=heatmap)
    return save_model(folder, network, info)


def test_a_model_carries_its_own_heatmap_recipe(tmp_path):
    """``model_info.json`` ``heatmap`` sets the recipe; ``use_model_heatmap_recipe`` returns to it after a trial."""
    import numpy as np

    folder = _model_with_heatmap(tmp_path / "m", {"method": "gradcam", "layers": ["last"], "flip": True,
                                                  "chosen_by": "documentation only"})
    classifier = Classifier(folder, backend="fp32")
    assert (classifier.heatmap_method, classifier.heatmap_flip) == ("gradcam", True)
    assert classifier.cam_layers() == (last_convolution(classifier.model.network),)
    image = np.random.default_rng(0).random((120, 100)).astype(np.float32)
    cam_input = classifier.heatmap_input(image, {})
    expected = class_activation_map(classifier.model.network, cam_input.image[None], classifier.cam_layers(),
                                    method="gradcam", flip=True)
    got = classifier.heatmap(image, {})
    assert got.shape == image.shape and got.max() == 1.0
    assert np.allclose(got, scale_to_unit(classifier._to_source_geometry(expected, cam_input.geometry)), atol=1e-4)
    assert not np.allclose(got, classifier.heatmap(image, {}, method="layercam"), atol=1e-2)
    classifier.heatmap_method, classifier.heatmap_layer = "layercam", ("_blocks.2",)
    classifier.use_model_heatmap_recipe()
    assert (classifier.heatmap_method, classifier.heatmap_layer) == ("gradcam", ("last",))
    plain = Classifier(_model_with_heatmap(tmp_path / "plain", {}), backend="fp32")
    assert (plain.heatmap_method, plain.heatmap_layer) == (Classifier.heatmap_method, None)


@pytest.mark.parametrize("heatmap,message", [
    ({"method": "cam"}, "heatmap method 'cam'"),
    ({"layers": "last"}, "non-empty list of layer names"),
    ({"fusion": "max"}, "heatmap fusion 'max'"),
    ({"flip": "yes"}, "flip must be true or false"),
    ({"scale": 0.5}, "scale must be a number >= 1"),
])
def test_a_bad_heatmap_recipe_is_refused_when_the_model_loads(tmp_path, heatmap, message):
    from monai_fracture.model.package import ModelPackageError

    folder = _model_with_heatmap(tmp_path / "m", heatmap)
    with pytest.raises(ModelPackageError, match=message):
        Classifier(folder)


def test_a_misspelt_recipe_key_or_layer_is_refused_before_any_image(tmp_path):
    from monai_fracture.model.package import ModelPackageError

    with pytest.raises(ModelPackageError, match="unknown key"):
        Classifier(_model_with_heatmap(tmp_path / "key", {"layer": ["last"]}))
    with pytest.raises(ModelPackageError, match="_blocks.99 not in the network"):
        Classifier(_model_with_heatmap(tmp_path / "layer", {"method": "gradcam", "layers": ["_blocks.99"]}))
