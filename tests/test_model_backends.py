"""Inference backends: every variant agrees with fp32, the choice rule rejects one that does not,
stale exports are never used, the choice is cached, and scoring records what it ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_fracture.model.export import export_model
from monai_fracture.model.package import ModelInfo, load_model, save_model
from monai_fracture.networks import build_network
from monai_fracture.model import backend_cache, backends
from monai_fracture.model.backend_choice import choose_backend
from monai_fracture.model.backend_table import AUTO_CANDIDATES, BackendUnavailable
from monai_fracture.model.backends import Backend, available_backends, build_backend

NETWORK = {"name": "efficientnet-lite0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2, "dropout": 0.2}
SIZE = 64


def _network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_network(**NETWORK, pretrained=True)  # ImageNet Lite0 from the installed package
    torch.nn.init.normal_(net._fc.weight, std=0.05)
    return net


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """ImageNet Lite0 with a random head (probabilities that vary), exported to ONNX and TorchScript."""
    folder = tmp_path_factory.mktemp("backends") / "model"
    info = ModelInfo(network=dict(NETWORK), preprocessing={"modality": "xr", "size": SIZE}, threshold=0.5)
    save_model(folder, _network(0), info)
    export_model(folder, ["onnx", "torchscript"])
    return folder


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, SIZE, SIZE, generator=generator)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(backend_cache.CACHE_ENV, str(tmp_path / "cache"))


def _threshold(model, batch) -> float:
    """The median probability: decisions on both sides, so identical decisions are a real check."""
    return float(np.median(build_backend("fp32", model).predict_proba(batch)))


def test_every_cpu_backend_agrees_with_fp32(model_dir, batch):
    model = load_model(model_dir)
    reference = build_backend("fp32", model).predict_proba(batch)
    assert np.ptp(reference) > 1e-2, "probabilities do not vary: agreement would be vacuous"
    reasons = available_backends(model, "cpu", ["channels_last", "bf16", "torchscript", "onnx"])
    assert reasons == {"channels_last": "", "bf16": "", "torchscript": "", "onnx": ""}
    for name, tolerance in (("channels_last", 1e-5), ("torchscript", 1e-5), ("onnx", 1e-5), ("bf16", 5e-2)):
        got = build_backend(name, model).predict_proba(batch)
        assert got.dtype == np.float32 and got.shape == reference.shape
        assert np.max(np.abs(got - reference)) < tolerance, name
    # the fp32 reference network is never converted by a variant (it also serves Grad-CAM)
    assert all(p.is_contiguous() for p in model.network.parameters())
    assert np.array_equal(build_backend("fp32", model).predict_proba(batch), reference)


def test_fp16_is_refused_on_cpu_with_a_reason(model_dir):
    model = load_model(model_dir)
    with pytest.raises(BackendUnavailable, match="CUDA"):
        build_backend("fp16", model, "cpu")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        build_backend("tensorrt", model)


def test_measured_choice_is_the_fastest_that_agrees_and_is_cached(model_dir, batch):
    model = load_model(model_dir)
    threshold = _threshold(model, batch)
    backend, choice = choose_backend(model, batch, threshold, measure=True, repeats=1)
    assert choice.how == "measured" and backend.name == choice.name
    trials = {t.name: t for t in choice.trials}
    assert list(trials) == list(AUTO_CANDIDATES)
    accepted = [t for t in trials.values() if t.accepted]
    assert all(t.max_abs_difference <= 1e-3 and t.decisions_identical for t in accepted)
    assert choice.name == min(accepted, key=lambda t: t.seconds_per_image).name
    assert not trials["fp16"].accepted and "CUDA" in trials["fp16"].reason
    cache = json.loads((backend_cache.cache_dir() / "backends.json").read_text())
    assert [entry["backend"] for entry in cache.values()] == [choice.name]

    again, second = choose_backend(model, batch, threshold)
    assert (second.how, second.name, again.name) == ("cached", choice.name, choice.name)
    other_size, third = choose_backend(model, batch[:3], threshold)
    assert third.how == "default"  # the ranking was measured at another batch size


def test_a_variant_that_disagrees_is_rejected(model_dir, batch, monkeypatch):
    model = load_model(model_dir)
    threshold = _threshold(model, batch)
    real_build = backends.build_backend

    def build(name, model, device=None, threads=None):
        built = real_build(name, model, device, threads)
        if name == "onnx":  # a broken fast path: fast, but 0.01 off
            return Backend("onnx", lambda x: built.forward(x) + torch.tensor([0.0, 0.05]), built.device)
        return built

    monkeypatch.setattr(backends, "build_backend", build)
    backend, choice = choose_backend(model, batch, threshold)  # default order starts with onnx
    onnx = next(t for t in choice.trials if t.name == "onnx")
    assert not onnx.accepted and onnx.max_abs_difference > 1e-3 and "> 0.001" in onnx.reason
    assert backend.name == choice.name == "channels_last"
    _, measured = choose_backend(model, batch, threshold, measure=True, repeats=1, use_cache=False)
    assert measured.name != "onnx"


def test_stale_exports_are_not_used(model_dir, batch, tmp_path):
    stale = tmp_path / "model"
    stale.mkdir()
    for item in model_dir.iterdir():
        (stale / item.name).write_bytes(item.read_bytes())
    info = ModelInfo.load(stale / "model_info.json")
    save_model(stale, _network(7), info)  # retrained: model.pt changes, the exports do not
    model = load_model(stale)
    reasons = available_backends(model, "cpu", ["onnx", "torchscript"])
    assert "stale" in reasons["onnx"] and "stale" in reasons["torchscript"]
    with pytest.raises(BackendUnavailable, match="stale"):
        build_backend("onnx", model)
    _, choice = choose_backend(model, batch, 0.5)
    assert choice.name == "channels_last" and "stale" in choice.trials[0].reason


def test_requested_backend_is_honoured_and_recorded(model_dir, batch):
    model = load_model(model_dir)
    backend, choice = choose_backend(model, batch, 0.5, requested="bf16")
    assert backend.name == "bf16" and choice.how == "requested"
    assert 0 < choice.trials[0].max_abs_difference < 5e-2


def test_exported_model_alone_runs_natively(model_dir, batch):
    onnx_only = load_model(model_dir / "model.onnx")
    backend, choice = choose_backend(onnx_only, batch, 0.5)
    assert (backend.name, choice.how) == ("onnx", "native")
    with pytest.raises(BackendUnavailable, match="only backend 'onnx'"):
        build_backend("channels_last", onnx_only)


def test_score_records_the_backend_and_agrees_with_fp32(tmp_path):
    import pandas as pd

    from monai_fracture.cli import main as cli_main
    from helpers.scoring import image_files, make_demo_folder, make_model

    folder = make_demo_folder(tmp_path / "in", n=8, seed=5, size=96)
    model = make_model(tmp_path / "model", image_files(folder))
    common = ["--model", str(model), "--no-dicom"]
    assert cli_main(["score", str(folder), "--out", str(tmp_path / "onnx"), "--backend", "onnx", *common]) == 2
    export_model(model, ["onnx"])

    runs = {}
    for name in ("auto", "fp32"):
        out = tmp_path / name
        assert cli_main(["score", str(folder), "--out", str(out), "--backend", name, *common]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        runs[name] = (pd.read_csv(out / "results.csv", dtype=str), manifest["model"]["backend"])
    auto_rows, auto_backend = runs["auto"]
    fp32_rows, fp32_backend = runs["fp32"]
    assert (auto_backend["name"], auto_backend["how"]) == ("onnx", "export-checked")  # 8 images: one batch
    assert (fp32_backend["name"], fp32_backend["how"]) == ("fp32", "requested")
    scored = auto_rows[auto_rows.status == "scored"]
    reference = fp32_rows.set_index("path").loc[scored.path]
    assert len(scored) == len(image_files(folder))
    difference = np.abs(scored.probability.astype(float).to_numpy() - reference.probability.astype(float).to_numpy())
    assert difference.max() <= 1e-3
    assert list(scored.prediction) == list(reference.prediction)


def test_images_per_call_is_measured_on_long_cpu_runs_and_keeps_values(model_dir, batch):
    model = load_model(model_dir)
    threshold = _threshold(model, batch)
    short_backend, short = choose_backend(model, batch, threshold, expected_images=len(batch))
    assert short.micro_batch is None and short.micro_batch_seconds_per_image == {}
    backend, choice = choose_backend(model, batch, threshold, expected_images=100 * len(batch))
    tried = choice.micro_batch_seconds_per_image
    assert set(tried) == {"1", "2", "4", str(len(batch))}
    assert choice.micro_batch == backend.micro_batch == int(min(tried, key=tried.get))
    whole = short_backend.predict_proba(batch)
    for size in (1, 3, len(batch)):
        backend.micro_batch = size
        assert np.max(np.abs(backend.predict_proba(batch) - whole)) < 1e-5


def test_backend_choice_calls_the_network_with_few_images_at_a_time(model_dir, batch, monkeypatch):
    """Checking and racing backends on a whole batch held ~0.6 GB of fp32 activations at once (issue 15)."""
    from monai_fracture.model import backend_choice
    from monai_fracture.model.backend_choice import CHOICE_IMAGES_PER_CALL

    model = load_model(model_dir)
    threshold = _threshold(model, batch)
    seen: list[int] = []
    recording = [True]
    real_step = backend_choice._best_micro_batch

    def images_per_call_step(backend, batch, *args, **kwargs):  # the run's own call size is measured after
        recording[0] = False
        return real_step(backend, batch, *args, **kwargs)

    monkeypatch.setattr(backend_choice, "_best_micro_batch", images_per_call_step)
    hook = model.network.register_forward_pre_hook(lambda module, args: recording[0] and seen.append(len(args[0])))
    try:  # channels_last/bf16 copies of the network carry the hook too
        backend, choice = choose_backend(model, batch, threshold, measure=True, repeats=1, use_cache=False)
    finally:
        hook.remove()
    assert len(batch) > CHOICE_IMAGES_PER_CALL and seen and not recording[0]
    assert max(seen) <= CHOICE_IMAGES_PER_CALL <= 4, seen
    assert backend.micro_batch == choice.micro_batch  # set by the images-per-call step, not left at the choice's
    assert np.max(np.abs(backend.predict_proba(batch) - build_backend("fp32", model).predict_proba(batch))) < 1e-5


def test_onnx_runtime_session_keeps_no_cpu_arena(model_dir):
    """The arena kept the peak of the largest batch it had seen (~0.3 GB at 16 x 320 px) for the whole run."""
    onnx = build_backend("onnx", load_model(model_dir))
    assert onnx.forward.session.get_session_options().enable_cpu_mem_arena is False
