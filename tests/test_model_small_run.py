"""A run that fits in its first batch takes a backend checked at export, without the fp32 pass
(``model.small_run``); longer runs, requested backends and unchecked exports keep the usual rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_fracture.model import backend_cache, backend_choice, backends
from monai_fracture.model.classifier import Classifier
from monai_fracture.model.export import export_model
from monai_fracture.model.package import ModelInfo, save_model
from monai_fracture.networks import build_network

SIZE = 32


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(backend_cache.CACHE_ENV, str(tmp_path / "cache"))


def _model(folder: Path, check: bool) -> Path:
    torch.manual_seed(0)
    network = {"name": "efficientnet-lite0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2}
    info = ModelInfo(network=network, preprocessing={"modality": "xr", "size": SIZE}, threshold=0.4)
    save_model(folder, build_network(**network, pretrained=False), info)
    export_model(folder, ["onnx"], check=check)
    return folder


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("checked") / "model", check=True)


def _batch(n: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _count_fp32_calls(monkeypatch) -> list[str]:
    """Names of the backends whose ``predict_proba`` ran (the fp32 reference is the one to avoid)."""
    calls: list[str] = []
    original = backends.Backend.predict_proba

    def counted(self, batch):
        calls.append(self.name)
        return original(self, batch)

    monkeypatch.setattr(backends.Backend, "predict_proba", counted)
    return calls


def test_one_batch_run_uses_the_export_checked_backend_without_an_fp32_pass(checked, monkeypatch):
    calls = _count_fp32_calls(monkeypatch)

    def refuse(*args, **kwargs):
        raise AssertionError("a one-batch run must not run the fp32 agreement check")

    monkeypatch.setattr(backend_choice, "choose_backend", refuse)
    classifier = Classifier(checked)
    batch = _batch(3)
    choice = classifier.prepare(batch, expected_images=3)
    assert (choice.name, choice.how) == ("onnx", "export-checked")
    assert choice.trials[-1].max_abs_difference < 1e-4  # the difference recorded at export
    probabilities = classifier.predict(batch)
    assert calls == ["onnx"]
    reference = backends.build_backend("fp32", classifier.model, "cpu").predict_proba(batch)
    assert abs(probabilities - reference).max() <= 1e-3


def test_unchecked_export_falls_back_to_the_fp32_reference(tmp_path):
    classifier = Classifier(_model(tmp_path / "model", check=False))
    choice = classifier.prepare(_batch(2), expected_images=1)
    assert (choice.name, choice.how) == ("fp32", "reference")
    assert choice.trials[0].name == "onnx" and not choice.trials[0].accepted


@pytest.mark.parametrize("expected_images, requested, how", [(0, "auto", "default"), (4, "auto", "default"),
                                                             (2, "onnx", "requested")])
def test_longer_or_unknown_runs_and_requests_keep_the_checked_rule(checked, expected_images, requested, how):
    classifier = Classifier(checked, backend=requested)
    choice = classifier.prepare(_batch(2), expected_images=expected_images)
    assert choice.how == how and choice.trials[0].max_abs_difference is not None
