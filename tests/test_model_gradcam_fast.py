"""The batched heatmap pass (``class_activation_maps``, what scoring runs) against the reference
(``class_activation_map``: MONAI's ``ModelWithHooks``, one image, a full backward).

On phantom radiographs of two source shapes through the shipped FracAtlas model, the source-sized
maps must agree within 1e-4 (measured: under 1e-6 at network size; batching changes only the
order of float sums) and give the same hot region (peak and outline: what the SR and GSPS draw).
The scoring stream must reuse the classification input instead of reading a positive again.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import monai_fracture.io as mf_io
from monai_fracture.data.synthetic.phantom import simulate_radiograph
from monai_fracture.model import Classifier
from monai_fracture.model.gradcam import class_activation_map, hot_region, scale_to_unit
from monai_fracture.scoring import Evidence, score_items
from monai_fracture.scoring.catalog import build_catalog, walk_inputs
from helpers.scoring import image_files, make_demo_folder, make_model

pytestmark = pytest.mark.slow  # the reference is a full backward per image

MODEL = "bundles/fracture_classification/models/fracatlas"
ATOL = 1e-4  # on maps in [0, 1]


@pytest.fixture(scope="module")
def classifier():
    return Classifier(MODEL, backend="fp32")


@pytest.fixture(scope="module")
def inputs(classifier):
    cases = [((640, 520), "forearm", "transverse"), ((520, 640), "hand", "oblique"),
             ((640, 520), "leg", "comminuted")]
    images = [simulate_radiograph(shape, np.random.default_rng(7 + i), anatomy, kind).signal
              for i, (shape, anatomy, kind) in enumerate(cases)]
    return [classifier.heatmap_input(image, {}) for image in images]


def _reference(classifier: Classifier, cam_input) -> np.ndarray:
    raw = class_activation_map(classifier.model.network, cam_input.image[None], classifier.cam_layers(), 1,
                               classifier.heatmap_method, classifier.heatmap_fusion, classifier.heatmap_flip)
    return scale_to_unit(classifier._to_source_geometry(raw, cam_input.geometry))


@pytest.mark.parametrize("method,layers,flip", [("layercam", None, False), ("layercam", None, True),
                                                ("gradcam", ("last",), False), ("gradcam", ("_blocks.5", "last"), False)])
def test_batched_maps_equal_the_reference(classifier, inputs, method, layers, flip, monkeypatch):
    """Every batched method (``BATCHED_METHODS``) against MONAI's, on the family's and on given layers."""
    monkeypatch.setattr(classifier, "heatmap_method", method)
    monkeypatch.setattr(classifier, "heatmap_layer", layers)
    monkeypatch.setattr(classifier, "heatmap_flip", flip)
    chosen = inputs if not flip else inputs[:2]  # the flip reference is the slow one
    fast = classifier.heatmaps(chosen)
    for cam_input, cam in zip(chosen, fast):
        reference = _reference(classifier, cam_input)
        assert cam.shape == reference.shape == cam_input.geometry.shape
        assert np.allclose(cam, reference, atol=ATOL), f"max difference {np.abs(cam - reference).max():.2e}"
        mine, theirs = hot_region(cam), hot_region(reference)
        assert (mine.peak, mine.outline, mine.level) == (theirs.peak, theirs.outline, theirs.level)
        # maps equal to float tolerance may still put a few pixels on either side of the level
        assert mine.area_fraction == pytest.approx(theirs.area_fraction, abs=1e-5)


def test_no_weight_gradients_and_parameters_left_as_found():
    classifier = Classifier(MODEL, backend="fp32")  # fresh: the reference leaves weight gradients behind
    network = classifier.model.network
    network.get_parameter(next(n for n, _ in network.named_parameters())).requires_grad_(False)
    before = [p.requires_grad for p in network.parameters()]
    image = simulate_radiograph((400, 400), np.random.default_rng(1), "forearm", "transverse").signal
    cam = classifier.heatmap(image, {})
    assert cam.max() == 1.0
    assert [p.requires_grad for p in network.parameters()] == before
    assert all(p.grad is None for p in network.parameters())
    assert not network.training


def test_stream_reuses_the_classification_input(tmp_path, monkeypatch, classifier):
    folder = make_demo_folder(tmp_path / "in", n=6, seed=5, size=64)
    demo = Classifier(make_model(tmp_path / "model", image_files(folder)))
    items = build_catalog(walk_inputs([folder]), ct_enabled=False).items
    reads: list[str] = []
    real_read = mf_io.read_image

    def counting_read(path, *args, **kwargs):
        reads.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(mf_io, "read_image", counting_read)
    evidence = [e for e in score_items(items, demo, batch_size=4) if isinstance(e, Evidence)]
    assert evidence and all(e.error is None for e in evidence)
    assert sorted(reads) == sorted(p for i in items for p in i.paths), "a positive was read twice"
    monkeypatch.setattr(mf_io, "read_image", real_read)
    for found in evidence:  # the same region as the reference map of the file read again
        cam_input = demo.heatmap_input(*real_read(found.item.paths[0]))
        assert found.region == hot_region(_reference(demo, cam_input), level=0.5)
    assert torch.is_grad_enabled()


def test_region_outline_equals_the_hull_of_every_pixel_corner(classifier, inputs):
    """``hot_region`` hulls only each row's outermost pixels: the same polygon as all pixel corners."""
    from scipy import ndimage

    from monai_fracture.model.gradcam import _convex_hull

    rng = np.random.default_rng(3)
    maps = classifier.heatmaps(inputs[:2]) + [ndimage.gaussian_filter(rng.random((300, 260)), 6) for _ in range(3)]
    for cam in maps:
        region = hot_region(cam)
        rounded = np.round(cam.astype(np.float32), 4)
        peak = np.unravel_index(int(np.argmax(rounded)), rounded.shape)
        labels, _ = ndimage.label(rounded >= rounded[peak] * 0.5)
        rows, cols = np.nonzero(labels == labels[peak])
        corners = np.concatenate([np.stack([rows + dr, cols + dc], 1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)])
        hull = _convex_hull(corners)
        if len(hull) > 32:
            hull = hull[np.linspace(0, len(hull) - 1, 32).round().astype(int)]
        hull = np.stack([np.clip(hull[:, 0], -0.5, cam.shape[0] - 0.5), np.clip(hull[:, 1], -0.5, cam.shape[1] - 0.5)], 1)
        expected = tuple((round(float(r), 1), round(float(c), 1)) for r, c in hull)
        assert region.outline == expected + expected[:1]
