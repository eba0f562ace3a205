"""The Classifier's run-time contract: the backend is chosen once, in ``prepare``, and checked where the
Classifier is built; ``predict`` only predicts; settings passed beside a Classifier are never ignored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from monai_fracture.model import backend_cache, backend_choice
from monai_fracture.model.backend_table import BackendUnavailable
from monai_fracture.model.backends import available_backends
from monai_fracture.model.classifier import Classifier
from monai_fracture.model.package import ModelInfo, save_model
from monai_fracture.networks import build_network
from monai_fracture.scoring import score_paths

SIZE = 32  # small: prepare() times every backend candidate


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = {"name": "efficientnet-lite0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2}
    folder = tmp_path_factory.mktemp("classifier") / "model"
    info = ModelInfo(network=network, preprocessing={"modality": "xr", "size": SIZE}, threshold=0.4)
    save_model(folder, build_network(**network, pretrained=False), info)
    return folder


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(backend_cache.CACHE_ENV, str(tmp_path / "cache"))


def _batch(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def test_predict_runs_only_what_prepare_chose_and_never_writes_the_cache(model_dir, monkeypatch):
    classifier = Classifier(model_dir)
    batch = _batch()
    with pytest.raises(RuntimeError, match="prepare"):
        classifier.predict(batch)
    choice = classifier.prepare(batch, expected_images=5000)  # long run: every candidate is timed
    assert choice.how == "measured" and classifier.prepared and classifier.backend_choice is choice
    cache = backend_cache.cache_file()
    written = cache.read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("predict() must not choose a backend or write the cache")

    monkeypatch.setattr(backend_choice, "choose_backend", refuse)
    monkeypatch.setattr(backend_cache, "write_cache", refuse)
    monkeypatch.setattr(backend_choice, "write_cache", refuse)
    first = classifier.predict(batch)
    assert first.shape == (len(batch),) and torch.isfinite(torch.as_tensor(first)).all()
    assert (classifier.predict(batch) == first).all()
    assert cache.read_bytes() == written


def test_an_unavailable_backend_is_refused_where_the_classifier_is_built(model_dir):
    for name, reason in (("fp16", "CUDA only"), ("onnx", "model.onnx not found"), ("tensorrt", "unknown backend")):
        with pytest.raises(BackendUnavailable, match=reason) as raised:
            Classifier(model_dir, backend=name)
        if name != "tensorrt":  # the table is the one validation point: the same words everywhere
            model = Classifier(model_dir).model
            assert available_backends(model, "cpu", [name])[name] in str(raised.value)


def test_score_paths_refuses_a_device_or_backend_that_contradicts_a_given_classifier(model_dir, tmp_path):
    from helpers.scoring import make_demo_folder

    folder = make_demo_folder(tmp_path / "in", n=2, seed=4, size=64)
    classifier = Classifier(model_dir, threshold=0.3)
    for setting in ({"backend": "fp32"}, {"device": "meta"}):
        with pytest.raises(ValueError, match=f"{next(iter(setting))} .*the Classifier has"):
            score_paths([folder], tmp_path / "refused", model=classifier, write_dicom=False, progress=False, **setting)
        assert not (tmp_path / "refused").exists()
    # the same values twice (as the PACS node passes them) are fine, and are what the run used
    summary = score_paths([folder], tmp_path / "out", model=classifier, threshold=0.3, device="cpu", backend="auto",
                          write_dicom=False, progress=False)
    rows = pd.read_csv(tmp_path / "out" / "results.csv", dtype=str)
    assert summary.exit_code == 0 and set(rows[rows.status == "scored"].threshold) == {"0.3"}
