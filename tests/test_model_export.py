"""Exported models (ONNX via monai_fracture.model.export, TorchScript via monai.bundle ckpt_export) match model.pt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_fracture.model.export import example_input, export_model
from monai_fracture.model.package import MODEL_ONNX, MODEL_TORCHSCRIPT, ModelInfo, load_model, save_model
from monai_fracture.networks import build_network

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "fracture_classification" / "configs"
NETWORK = {"name": "efficientnet-lite0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2, "dropout": 0.2}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory) -> Path:
    """A bundle root whose models/ holds an ImageNet Lite0 with a head that separates images."""
    torch.manual_seed(0)
    net = build_network(**NETWORK, pretrained=True)
    torch.nn.init.normal_(net._fc.weight, std=0.05)
    root = tmp_path_factory.mktemp("export_bundle")
    info = ModelInfo(network=dict(NETWORK), preprocessing={"modality": "xr", "size": 64, "normalization": "imagenet"},
                     threshold=0.42)
    save_model(root / "models", net, info)
    return root


def _batch(n: int) -> torch.Tensor:
    return example_input(ModelInfo(network=dict(NETWORK), preprocessing={"size": 64}), batch=n, seed=n)


def _assert_parity(reference, exported, batch: torch.Tensor) -> None:
    expected = reference.predict_proba(batch)
    got = exported.predict_proba(batch)
    if len(batch) > 1:
        assert np.ptp(expected) > 1e-3, "probabilities do not vary: the parity check would be vacuous"
    assert np.max(np.abs(expected - got)) < TOLERANCE


def test_onnx_export_matches_checkpoint(bundle_root):
    written = export_model(bundle_root, ["onnx"])
    assert written["onnx"] == bundle_root / "models" / MODEL_ONNX
    reference = load_model(bundle_root / "models" / "model.pt")
    onnx_model = load_model(written["onnx"])
    assert onnx_model.format == "onnx" and onnx_model.threshold == pytest.approx(0.42)
    for n in (1, 5):  # the batch axis is dynamic
        _assert_parity(reference, onnx_model, _batch(n))


def test_torchscript_from_bundle_ckpt_export_matches_and_embeds_metadata(bundle_root):
    models = bundle_root / "models"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
        "--filepath", str(models / MODEL_TORCHSCRIPT), "--ckpt_file", str(models / "model.pt"),
        "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json"),
        "--bundle_root", str(bundle_root), "--use_trace", "True",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ts_model = load_model(models / MODEL_TORCHSCRIPT)
    assert ts_model.format == "torchscript"
    _assert_parity(load_model(models / "model.pt"), ts_model, _batch(3))

    from monai.data import load_net_with_metadata

    _, meta, extra = load_net_with_metadata(str(models / MODEL_TORCHSCRIPT), more_extra_files=("inference.json",))
    assert meta["version"] == json.loads((CONFIGS / "metadata.json").read_text())["version"]
    assert "network_data_format" in meta
    assert "network_def" in json.loads(extra["inference.json"])
