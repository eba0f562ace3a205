"""Model folders: ModelInfo round trip, save/load in every accepted form, and weights_only safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_fracture.model.package import (
    MODEL_INFO,
    MODEL_WEIGHTS,
    ModelInfo,
    ModelPackageError,
    UnsafeCheckpointError,
    extract_state_dict,
    load_model,
    safe_torch_load,
    save_model,
)
from monai_fracture.networks import build_network

NETWORK = {"name": "efficientnet-lite0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2, "dropout": 0.2}


def _info(**overrides) -> ModelInfo:
    values = dict(network=dict(NETWORK), preprocessing={"modality": "xr", "size": 64}, threshold=0.37,
                  threshold_rule="maximise Youden's J", metrics={"val_roc_auc": 0.93}, epoch=4)
    values.update(overrides)
    return ModelInfo(**values)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = build_network(**NETWORK, pretrained=True)
    torch.nn.init.normal_(net._fc.weight, std=0.05)  # a head that makes probabilities differ per image
    folder = tmp_path_factory.mktemp("bundle") / "models"
    save_model(folder, net, _info())
    return folder


def test_model_info_json_round_trip(tmp_path):
    info = _info(training_data={"splits": {"training": {"n": 10, "class_counts": [6, 4]}}})
    path = info.save(tmp_path / MODEL_INFO)
    loaded = ModelInfo.load(path)
    assert loaded == info
    data = json.loads(path.read_text())
    assert data["threshold"] == pytest.approx(0.37)
    assert data["network"]["name"] == "efficientnet-lite0"
    # unknown keys from a newer version are ignored, not fatal
    data["added_in_a_later_version"] = 1
    assert ModelInfo.from_dict(data).threshold == pytest.approx(0.37)


def test_model_info_converts_numpy_and_tensor_values():
    info = _info(metrics={"val_roc_auc": np.float32(0.5), "counts": torch.tensor([1, 2])})
    data = json.loads(info.to_json())
    assert data["metrics"] == {"val_roc_auc": 0.5, "counts": [1, 2]}


def test_model_info_writes_undefined_scores_as_null_not_nan():
    """A region with no fractured image has no sensitivity; NaN would make model_info.json invalid JSON."""
    info = _info(metrics={"hip": {"sensitivity": float("nan"), "f1": np.float64("nan"), "specificity": 1.0},
                          "ci": (float("-inf"), 0.9)})
    text = info.to_json()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert data["metrics"] == {"hip": {"sensitivity": None, "f1": None, "specificity": 1.0}, "ci": [None, 0.9]}


@pytest.mark.parametrize("which", ["bundle", "folder", "file"])
def test_load_model_accepts_bundle_folder_and_file(model_dir, which):
    path = {"bundle": model_dir.parent, "folder": model_dir, "file": model_dir / MODEL_WEIGHTS}[which]
    model = load_model(path)
    assert model.format == "pytorch"
    assert model.path == model_dir / MODEL_WEIGHTS
    assert not model.network.training  # eval mode
    assert model.threshold == pytest.approx(0.37)
    saved = torch.load(model_dir / MODEL_WEIGHTS, weights_only=True)
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, saved[key]), key
    images = torch.randn(3, 3, 64, 64)
    probs = model.predict_proba(images)
    assert probs.shape == (3,)
    with torch.no_grad():  # P(class 1) of two logits is the logistic of their difference
        logits = model.network(images).double()
    np.testing.assert_allclose(probs, torch.sigmoid(logits[:, 1] - logits[:, 0]).numpy(), atol=1e-6)


def test_save_model_unwraps_data_parallel(tmp_path):
    net = build_network(**NETWORK, pretrained=False)
    wrapped = torch.nn.DataParallel(net)
    save_model(tmp_path, wrapped, _info())
    state = torch.load(tmp_path / MODEL_WEIGHTS, weights_only=True)
    assert not any(k.startswith("module.") for k in state)


def test_extract_state_dict_forms():
    weights = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    assert extract_state_dict(weights).keys() == weights.keys()
    assert extract_state_dict({"model": weights, "optimizer": {"state": {}}}).keys() == weights.keys()
    assert extract_state_dict({f"module.{k}": v for k, v in weights.items()}).keys() == weights.keys()
    with pytest.raises(ModelPackageError, match="no network state_dict"):
        extract_state_dict({"epoch": 3})


class _CodeOnLoad:
    """A pickled payload that would create a file when unpickled without weights_only."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_payload_is_refused_with_a_clear_error(model_dir, tmp_path):
    marker = tmp_path / "code_ran"
    folder = tmp_path / "evil"
    folder.mkdir()
    state = torch.load(model_dir / MODEL_WEIGHTS, weights_only=True)
    state["payload"] = _CodeOnLoad(str(marker))
    torch.save(state, folder / MODEL_WEIGHTS)
    (folder / MODEL_INFO).write_text((model_dir / MODEL_INFO).read_text())
    with pytest.raises(UnsafeCheckpointError) as err:
        load_model(folder)
    assert str(folder / MODEL_WEIGHTS) in str(err.value)
    assert "refused" in str(err.value) and "weights_only" in str(err.value)
    assert not marker.exists(), "the pickled payload ran"
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(folder / MODEL_WEIGHTS)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ModelPackageError, match="model path not found"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / MODEL_WEIGHTS).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelPackageError, match=MODEL_INFO):
        load_model(tmp_path)
    _info().save(tmp_path / MODEL_INFO)
    with pytest.raises(ModelPackageError, match="not a readable PyTorch checkpoint") as err:
        load_model(tmp_path)
    assert str(tmp_path / MODEL_WEIGHTS) in str(err.value)


def test_weights_that_do_not_fit_the_network_are_reported(tmp_path, model_dir):
    (tmp_path / MODEL_WEIGHTS).write_bytes((model_dir / MODEL_WEIGHTS).read_bytes())
    _info(network={**NETWORK, "num_classes": 3}).save(tmp_path / MODEL_INFO)
    with pytest.raises(ModelPackageError, match="do not fit"):
        load_model(tmp_path)
