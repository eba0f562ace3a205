"""Box-guided training pieces: YOLO boxes, masks aligned with the preprocessing, CAM, the attention loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_fracture.networks import build_network
from monai_fracture.training.box_guidance import (
    BoxAttentionLoss,
    BoxFileError,
    FeatureMapTap,
    box_mask,
    class_activation_map,
    read_yolo_boxes,
)
from monai_fracture.transforms.presets import build_preprocessing


def test_read_yolo_boxes(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("0 0.5 0.25 0.2 0.1\n\n0 0.9 0.95 0.4 0.2\n")
    boxes = read_yolo_boxes(good)
    assert boxes.shape == (2, 4)
    np.testing.assert_allclose(boxes[0], [0.5, 0.25, 0.2, 0.1])
    empty = tmp_path / "b.txt"
    empty.write_text("")
    assert read_yolo_boxes(empty).shape == (0, 4)
    assert read_yolo_boxes(tmp_path / "missing.txt").shape == (0, 4)
    bad = tmp_path / "c.txt"
    bad.write_text("0 0.5 0.5\n")
    with pytest.raises(BoxFileError, match="c.txt: line 1"):
        read_yolo_boxes(bad)


@pytest.mark.parametrize("shape", [(120, 60), (50, 100)])
def test_box_mask_lines_up_with_the_preprocessed_image(shape):
    """A bright rectangle at a box's place must land inside the mask after resize + pad to a square."""
    rows, cols = shape
    image = np.zeros(shape, dtype=np.float32)
    r0, r1, c0, c1 = int(rows * 0.2), int(rows * 0.5), int(cols * 0.6), int(cols * 0.9)
    image[r0:r1, c0:c1] = 1.0
    image[0, 0] = 0.5  # keeps the percentile window away from a two-value image
    box = np.array([[(c0 + c1) / 2 / cols, (r0 + r1) / 2 / rows, (c1 - c0) / cols, (r1 - r0) / rows]])
    chain = build_preprocessing("xr", size=64, normalization=None, load=False, in_channels=1)
    out = np.asarray(chain({"image": MetaTensor(torch.as_tensor(image)[None])})["image"][0])
    mask = box_mask(box, shape, 64)
    bright = out > 0.25  # the rectangle, edge pixels that area resizing half-covers included
    assert bright.sum() > 20
    assert mask[bright].mean() == 1.0  # every bright pixel is inside the mask
    assert bright[mask == 1].mean() > 0.8  # and the mask is not much larger than the rectangle


def test_cam_is_what_the_head_decides_on():
    """Mean of the CAM (fracture minus normal) plus the bias difference equals the logit difference."""
    torch.manual_seed(0)
    # train mode (batch statistics): an untrained network in eval mode shrinks activations to ~0
    net = build_network("efficientnet-lite0", pretrained=False, dropout=0.0).train()
    torch.nn.init.normal_(net._fc.weight, std=0.1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), FeatureMapTap(net) as tap:
        logits = net(x)
    assert tap.features.abs().mean() > 0.01
    assert (logits[:, 0] - net._fc.bias[0]).abs().min() > 1e-3  # the normal class matters
    cam = class_activation_map(tap.features, net._fc)
    assert cam.shape == (2, 2, 2)
    expected = logits[:, 1] - logits[:, 0]
    got = cam.mean(dim=(1, 2)) + net._fc.bias[1] - net._fc.bias[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not net._avg_pooling._forward_pre_hooks  # the tap removed its hook


def test_box_attention_loss_prefers_attention_inside_boxes():
    loss = BoxAttentionLoss()
    masks = torch.zeros(2, 16, 16)
    masks[0, :8, :8] = 1  # image 0 has a box in the top-left quarter; image 1 has none
    inside, outside = torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)
    inside[0, :2, :2] = 5.0
    outside[0, 2:, 2:] = 5.0
    assert loss(inside, masks) < 0.1 < loss(outside, masks)
    # images without boxes contribute nothing, but the graph stays usable
    cam = torch.randn(2, 4, 4, requires_grad=True)
    none = loss(cam, torch.zeros(2, 16, 16))
    none.backward()
    assert float(none.detach()) == 0.0 and cam.grad is not None


def test_box_attention_loss_gradient_moves_mass_into_the_box():
    cam = torch.zeros(1, 4, 4, requires_grad=True)
    masks = torch.zeros(1, 32, 32)
    masks[0, 24:, 24:] = 1
    loss_fn = BoxAttentionLoss()
    optimizer = torch.optim.SGD([cam], lr=1.0)
    start = float(loss_fn(cam, masks))
    for _ in range(20):
        optimizer.zero_grad()
        loss_fn(cam, masks).backward()
        optimizer.step()
    assert float(loss_fn(cam, masks)) < start / 2
    assert cam[0, 3, 3] > cam[0, 0, 0]
    with pytest.raises(ValueError, match="temperature"):
        BoxAttentionLoss(temperature=0)
