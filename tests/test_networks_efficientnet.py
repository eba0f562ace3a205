"""Network factory: shapes, real ImageNet weights (offline), adaptation, transfer helpers, export."""

from __future__ import annotations

from urllib.error import URLError

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_fracture.training.unfreeze import UnfreezeBackbone
from monai_fracture.networks import (
    NETWORK_NAMES,
    EfficientNetLite,
    PretrainedWeightsError,
    build_network,
    parameter_groups,
    prepare_for_export,
    set_backbone_trainable,
)
from monai_fracture.networks.weights import b_weights_cache_path, flat_key, lite_weights_path, load_state_dict_into
from monai_fracture.transforms import ImageNetNormalize, ResizeWithPadToSquare

LITE_NAMES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


@pytest.fixture(scope="module")
def lite0_imagenet() -> nn.Module:
    return build_network("efficientnet-lite0", num_classes=1000, pretrained=True).eval()


def photo_batch(photo: np.ndarray, size: int = 224) -> torch.Tensor:
    """An RGB uint8 photo through our own resize/pad and TF-style normalisation."""
    x = torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0
    x = ResizeWithPadToSquare(size=size)(x)
    return torch.as_tensor(ImageNetNormalize("tf")(x))[None]


def calibrate_batchnorm(net: nn.Module, batch: torch.Tensor) -> None:
    """Set BatchNorm statistics from one batch, so an untrained net has activations of normal size."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics
    net.train()
    with torch.no_grad():
        net(batch)
    net.eval()


# --- building ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_every_name_builds_in_2d_with_the_right_output(name):
    net = build_network(name, num_classes=2).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 2)
    assert net._fc.out_features == 2 and net._dropout.p == 0.2


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-lite0"])
def test_3d_networks_build(name):
    net = build_network(name, spatial_dims=3, in_channels=1, num_classes=3).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 32, 32, 32))
    assert out.shape == (1, 3)
    assert net._conv_stem.weight.shape == (32, 1, 3, 3, 3)


def test_lite_architecture_keeps_stem_and_head_unscaled():
    lite2 = EfficientNetLite("efficientnet-lite2")
    assert lite2._conv_stem.out_channels == 32 and lite2._conv_head.out_channels == 1280
    assert len(lite2._blocks[0]) == 1 and len(lite2._blocks[-1]) == 1  # first/last stage not repeated
    assert not any("_se_" in name for name, _ in lite2.named_parameters())  # no squeeze-excitation
    assert all(isinstance(m._swish, nn.ReLU6) for m in [lite2, lite2._blocks[1][0]])
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        build_network("efficientnet-lite4")


def test_network_from_bundle_style_config():
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network": {"_target_": "monai_fracture.networks.build_network",
                                       "name": "efficientnet-lite0", "num_classes": 2, "pretrained": True}})
    net = parser.get_parsed_content("network")
    assert isinstance(net, EfficientNetLite) and net._fc.out_features == 2


# --- pretrained weights -----------------------------------------------------------------------


@pytest.mark.parametrize("name", LITE_NAMES)
def test_lite_imagenet_weights_load_strictly_from_the_installed_package(name):
    package = torch.load(lite_weights_path(name), map_location="cpu", weights_only=True)
    net = build_network(name, num_classes=1000)
    report = load_state_dict_into(net, package, name)
    model_keys = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    assert set(model_keys) <= set(report.loaded) and report.head_kept and not report.inflated
    state = net.state_dict()
    for key in model_keys:  # every tensor is the package's, under MONAI's name
        assert torch.equal(state[key], package[flat_key(key)]), key
    assert len({flat_key(k) for k in model_keys}) == sum(not k.endswith("num_batches_tracked") for k in package)


def test_lite0_reproduces_imagenet_on_real_photos(lite0_imagenet):
    skimage_data = pytest.importorskip("skimage.data")
    with torch.no_grad():
        cat = lite0_imagenet(photo_batch(skimage_data.chelsea())).softmax(1)[0]
        coffee = lite0_imagenet(photo_batch(skimage_data.coffee())).softmax(1)[0]
    assert 281 <= int(cat.argmax()) <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert float(cat[281:286].sum()) > 0.8
    assert int(coffee.argmax()) in (967, 968)  # espresso / cup
    assert float(coffee[967] + coffee[968]) > 0.8


def test_new_head_keeps_backbone_and_grey_stem_matches_rgb(lite0_imagenet):
    net = build_network("efficientnet-lite0", num_classes=2, pretrained="imagenet").eval()
    assert torch.equal(net._conv_head.weight, lite0_imagenet._conv_head.weight)
    assert net._fc.weight.shape == (2, 1280)
    grey_net = build_network("efficientnet-lite0", in_channels=1, num_classes=1000, pretrained=True).eval()
    grey = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(grey_net(grey), lite0_imagenet(grey.repeat(1, 3, 1, 1)), atol=1e-4)


def test_local_weights_file_in_either_key_style(tmp_path, lite0_imagenet):
    package_file = lite_weights_path("efficientnet-lite0")
    net = build_network("efficientnet-lite0", num_classes=1000, pretrained=str(package_file))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), lite0_imagenet.state_dict().values()))
    trained = build_network("efficientnet-lite0", num_classes=2)
    with torch.no_grad():
        trained._fc.weight.fill_(0.5)
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    loaded = build_network("efficientnet-lite0", num_classes=2, pretrained=path)
    for (key, a), b in zip(loaded.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), key


def test_weights_of_another_architecture_fail_with_the_file_name(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="efficientnet-lite1-.*missing|efficientnet-lite1-.*unexpected"):
        build_network("efficientnet-lite0", pretrained=str(lite_weights_path("efficientnet-lite1")))
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(PretrainedWeightsError, match="nowhere.pth: weights file not found"):
        build_network("efficientnet-lite0", pretrained=missing)


def test_b0_offline_without_cached_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise URLError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = tmp_path / "hub" / "checkpoints" / "efficientnet-b0-355c32eb.pth"
    assert b_weights_cache_path("efficientnet-b0") == expected
    with pytest.raises(PretrainedWeightsError) as info:
        build_network("efficientnet-b0", pretrained=True)
    assert str(expected) in str(info.value) and "could not be downloaded" in str(info.value)
    # the same file, once there, is used without any download
    reference = build_network("efficientnet-b0", num_classes=1000)
    expected.parent.mkdir(parents=True, exist_ok=True)
    torch.save({flat_key(k): v for k, v in reference.state_dict().items()}, expected)
    net = build_network("efficientnet-b0", num_classes=1000, pretrained=True)
    assert torch.equal(net._blocks[3][1]._se_reduce.weight, reference._blocks[3][1]._se_reduce.weight)
    assert torch.equal(net._fc.weight, reference._fc.weight)
    net3d = build_network("efficientnet-b0", spatial_dims=3, in_channels=1, num_classes=2, pretrained=True)
    stem = reference._conv_stem.weight.sum(dim=1, keepdim=True)  # RGB summed, then inflated over depth 3
    assert torch.allclose(net3d._conv_stem.weight, stem.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3, atol=1e-7)
    se3d, se2d = net3d._blocks[3][1]._se_reduce.weight, reference._blocks[3][1]._se_reduce.weight
    assert torch.allclose(se3d[..., 0, 0, 0], se2d[..., 0, 0])


def test_3d_inflation_matches_2d_on_depth_constant_input(lite0_imagenet):
    net3d = build_network("efficientnet-lite0", spatial_dims=3, num_classes=1000, pretrained=True).eval()
    assert torch.allclose(net3d._conv_stem.weight.sum(dim=2), lite0_imagenet._conv_stem.weight, atol=1e-6)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    volume = image.unsqueeze(2).repeat(1, 1, 96, 1, 1)
    net2d = lite0_imagenet

    def stem(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net._swish(net._bn0(net._conv_stem(net._conv_stem_padding(x))))

    with torch.no_grad():
        a, b = stem(net2d, image), stem(net3d, volume)
        for stage in range(3):  # receptive field still inside the volume: the centre slice is exact
            a, b = net2d._blocks[stage](a), net3d._blocks[stage](b)
            centre = b[:, :, b.shape[2] // 2]
            assert a.abs().max() > 1.0
            assert torch.allclose(centre, a, atol=1e-5 * float(a.abs().max())), stage


# --- transfer learning ------------------------------------------------------------------------


def test_freezing_leaves_only_the_head_trainable():
    net = build_network("efficientnet-b0", num_classes=2)
    set_backbone_trainable(net, False)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"_fc.weight", "_fc.bias"}
    set_backbone_trainable(net, True)
    assert all(p.requires_grad for p in net.parameters())


def test_parameter_groups_cover_every_parameter_once():
    net = build_network("efficientnet-lite0", num_classes=2)
    set_backbone_trainable(net, False)  # frozen parameters are still grouped, for later unfreezing
    groups = parameter_groups(net, backbone_lr=1e-4, head_lr=1e-3, weight_decay=0.01)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == len(list(net.parameters()))
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert by_name["head"]["lr"] == 1e-3 and by_name["backbone"]["lr"] == 1e-4
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0 and by_name["backbone"]["weight_decay"] == 0.01
    assert all(p.ndim <= 1 for p in by_name["backbone_no_decay"]["params"])
    assert by_name["head"]["params"] == [net._fc.weight]
    torch.optim.AdamW(groups)  # accepted as is


def test_unfreeze_handler_trains_head_only_during_warmup():
    net = build_network("efficientnet-lite0", num_classes=2)
    seen: list[bool] = []
    engine = Engine(lambda e, batch: None)
    UnfreezeBackbone(warmup_epochs=2, network=net).attach(engine)
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(net._conv_stem.weight.requires_grad))
    engine.run([0], max_epochs=4)
    assert seen == [False, False, True, True]
    assert net._fc.weight.requires_grad


# --- export -----------------------------------------------------------------------------------


def onnx_outputs(net: nn.Module, example: torch.Tensor, batch: torch.Tensor, path) -> np.ndarray:
    """Export with a dynamic batch (the key is forward's argument name, ``inputs``) and run in ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.onnx.export(net, (example,), str(path), dynamo=True, dynamic_shapes={"inputs": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]


def test_b0_with_plain_swish_exports_to_torchscript_and_onnx(tmp_path):
    torch.manual_seed(0)  # the random initialisation decides how large the logits get
    net = build_network("efficientnet-b0", num_classes=2)
    generator = torch.Generator().manual_seed(3)
    calibrate_batchnorm(net, torch.rand(4, 3, 64, 64, generator=generator))
    with torch.no_grad():  # random head -> logits of tens; scale to the few units of a trained classifier
        net._fc.weight.mul_(0.05)
    net = prepare_for_export(net)
    x = torch.rand(2, 3, 64, 64, generator=generator)
    with torch.no_grad():
        reference = net(x)
    assert float(reference.abs().max()) > 0.1  # real activations, not BatchNorm-shrunk zeros
    traced = torch.jit.trace(net, x, check_trace=False)
    with torch.no_grad():
        assert float((traced(x) - reference).abs().max()) < 1e-4
    batch = torch.rand(3, 3, 64, 64, generator=generator)
    with torch.no_grad():
        expected = torch.softmax(net(batch), 1)
    got = torch.softmax(torch.from_numpy(onnx_outputs(net, x, batch, tmp_path / "b0.onnx")), 1)
    # random weights inflate inner activations, so ORT's kernels differ by ~1e-4 on logits: compare P
    assert got.shape == (3, 2) and float((got - expected).abs().max()) < 1e-4


def test_imagenet_lite0_onnx_matches_torch(tmp_path, lite0_imagenet):
    skimage_data = pytest.importorskip("skimage.data")
    net = prepare_for_export(lite0_imagenet)
    batch = torch.cat([photo_batch(skimage_data.chelsea(), 96), photo_batch(skimage_data.coffee(), 96)])
    with torch.no_grad():
        expected = net(batch).numpy()
    got = onnx_outputs(net, batch[:1], batch, tmp_path / "lite0.onnx")
    assert float(np.abs(expected).max()) > 3.0
    assert got.shape == (2, 1000) and float(np.abs(got - expected).max()) < 1e-4
