"""A network family registered from outside the package works everywhere through the registry alone:
building with a small head, head replacement and head-only training, export, and Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet

from monai_fracture.model.classifier import Classifier
from monai_fracture.model.export import export_model
from monai_fracture.model.package import ModelInfo, load_model, save_model
from monai_fracture.networks import build_network, parameter_groups, set_backbone_trainable
from monai_fracture.networks.registry import (
    NetworkFamily,
    family_of,
    gradcam_layer,
    head_module,
    prepare_for_export,
    register_family,
    replace_head,
    unregister_family,
)

NAME = "tiny-densenet"
SIZE = 64
prepared: list[str] = []


class TinyDenseNet(DenseNet):
    """A MONAI DenseNet small enough to export in seconds."""


def _build(name, spatial_dims, in_channels, num_classes, dropout):
    return TinyDenseNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                        init_features=8, growth_rate=4, block_config=(2, 2), bn_size=2, dropout_prob=dropout or 0.0)


def _prepare(net):
    prepared.append(type(net).__name__)
    return net.eval()


@pytest.fixture(autouse=True)
def tiny_family():
    register_family(NetworkFamily(name="tiny-densenet", names=(NAME,), build=_build, head="class_layers.out",
                                  gradcam_layer="class_layers.relu", owns=lambda net: isinstance(net, TinyDenseNet),
                                  prepare_export=_prepare))
    yield
    unregister_family("tiny-densenet")


def test_building_and_head_replacement_use_the_declared_head():
    torch.manual_seed(0)
    net = build_network(NAME, num_classes=2, pretrained=False)
    assert isinstance(net, TinyDenseNet) and family_of(net).name == "tiny-densenet"
    head = head_module(net)
    assert head is net.class_layers.out and torch.all(head.bias == 0) and float(head.weight.detach().std()) < 0.05
    new = replace_head(net, 3)
    assert net.class_layers.out is new and net(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 3)
    set_backbone_trainable(net, False)
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {"class_layers.out.weight",
                                                                         "class_layers.out.bias"}
    groups = {g["name"]: g["params"] for g in parameter_groups(net)}
    assert groups["head"] == [new.weight] and groups["head_no_decay"] == [new.bias]
    with pytest.raises(ValueError, match="pretrained"):
        build_network(NAME, pretrained=True)


def test_export_and_gradcam_of_a_registered_family(tmp_path):
    torch.manual_seed(1)
    network = {"name": NAME, "spatial_dims": 2, "in_channels": 3, "num_classes": 2}
    net = build_network(**network, pretrained=False)
    torch.nn.init.normal_(head_module(net).weight, std=0.5)  # probabilities that differ per image
    folder = tmp_path / "model"
    save_model(folder, net, ModelInfo(network=network, preprocessing={"modality": "xr", "size": SIZE}))
    prepared.clear()
    written = export_model(folder, ["onnx", "torchscript"])  # checked against model.pt within 1e-4
    assert set(written) == {"onnx", "torchscript"} and prepared == ["TinyDenseNet"]
    assert isinstance(load_model(folder).network, TinyDenseNet)

    classifier = Classifier(folder)
    assert classifier.cam_layers() == (gradcam_layer(classifier.model.network),) == ("class_layers.relu",)
    image = np.zeros((80, 100), dtype=np.float32)
    image[20:40, 30:60] = 1000.0
    heat = classifier.heatmap(image, {"spacing": (1.0, 1.0)})
    assert heat.shape == image.shape and heat.min() == 0.0 and heat.max() == 1.0
    assert prepare_for_export(torch.nn.Conv2d(1, 1, 1)).training is False  # no family: plain eval
