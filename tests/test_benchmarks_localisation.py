"""The localisation benchmarks' own machinery: the sweep equals ``Classifier.heatmap``, checkpoints load as trained.

Fast, on an untrained EfficientNet-Lite0 at 64 px; what the figures are is docs/validation.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.localisation import apply_recipe, checkpoint_classifier
from benchmarks.localisation_sweep import CHECKED, LAYERS, SHIPPED, LayerPasses, all_maps, outside_distance, peak_of
from monai_fracture.model import Classifier
from monai_fracture.model.gradcam import point_in_box
from monai_fracture.model.package import ModelInfo, save_model
from monai_fracture.networks import build_network

PREPROCESSING = {"modality": "xr", "size": 64, "normalization": "tf"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_model")
    network = build_network("efficientnet-lite0", pretrained=False)
    save_model(folder, network, ModelInfo(name="tiny", version="test", threshold=0.5, preprocessing=PREPROCESSING,
                                          network={"name": "efficientnet-lite0", "spatial_dims": 2,
                                                   "in_channels": 3, "num_classes": 2}))
    return folder


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0.2, 0.4, size=(90, 70)).astype(np.float32)
    pixels[30:50, 20:35] = 0.9
    return pixels


def test_the_sweep_gives_the_maps_classifier_heatmap_gives(model_dir, image):
    """Every recipe the sweep combines from shared passes must be the map ``score`` would write."""
    classifier = Classifier(model_dir, backend="fp32")
    passes = LayerPasses(classifier, LAYERS)
    names = list(CHECKED) + ["layercam@_blocks.2+_blocks.4,product,flip", "layercam@_blocks.5,x2"]
    mine = all_maps(classifier, passes, image, {}, names)
    for name in names:
        apply_recipe(classifier, name)
        expected = classifier.heatmap(image, {})
        assert mine[name].shape == image.shape
        np.testing.assert_allclose(mine[name], expected, atol=1e-5, err_msg=name)
    apply_recipe(classifier, "default")
    np.testing.assert_allclose(mine[SHIPPED], classifier.heatmap(image, {}), atol=1e-5,
                               err_msg="SHIPPED is not the classifier's default recipe")


def test_outside_distance_is_the_growth_point_in_box_needs():
    boxes = [(10.0, 20.0, 30.0, 40.0), (100.0, 100.0, 110.0, 120.0)]
    for peak in [(15, 25), (5, 25), (35, 45), (50, 60), (105, 90), (0, 0)]:
        needed = outside_distance(peak, boxes)
        assert any(point_in_box(peak, b, needed) for b in boxes)
        if needed > 0:
            assert not any(point_in_box(peak, b, needed - 0.5) for b in boxes)
    assert outside_distance((15, 25), boxes) == 0.0
    assert peak_of(np.array([[0.1, 0.50004], [0.5, 0.2]], np.float32)) == (0, 1)  # 4-decimal ties: first in raster


@pytest.mark.parametrize("ema_decay", [0.0, 0.99])
def test_a_cv_checkpoint_loads_with_its_trained_weights(model_dir, image, tmp_path, ema_decay):
    """The runner's checkpoint (network, EMA, recipe) -> a Classifier scoring with the weights it trained."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(1)
    net = build_network("efficientnet-lite0", pretrained=False)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) if ema_decay else None
    if ema is not None:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05)  # the EMA now lags the network: the two give different scores
    recipe = {"network": "efficientnet-lite0", "size": 64}
    source = tmp_path / "fold0" / "checkpoint.pt"
    source.parent.mkdir()
    torch.save({"recipe": json.dumps(recipe), "net": net.state_dict(), "ema": ema.state_dict() if ema else {},
                "epoch": 3, "step": 20}, source)
    before = source.read_bytes()
    classifier = checkpoint_classifier(source, model_dir, tmp_path / "work")
    assert source.read_bytes() == before
    expected_net = ema.module if ema is not None else net
    inputs = torch.as_tensor(classifier.preprocess_meta(image, {})).as_subclass(torch.Tensor)[None].float()
    with torch.no_grad():
        expected = torch.softmax(expected_net.eval()(inputs), 1)[0, 1].item()
        other = torch.softmax(net.eval()(inputs), 1)[0, 1].item()
    assert classifier.score([(image, {})])[0] == pytest.approx(expected, abs=1e-5)
    if ema is not None:
        assert abs(expected - other) > 1e-4, "EMA and network must differ for this test to tell them apart"
    assert classifier.info.preprocessing == {"modality": "xr", "size": 64, "normalization": "tf"}
    assert classifier.threshold == pytest.approx(0.5)  # the reference model's: a checkpoint has none
