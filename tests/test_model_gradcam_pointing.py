"""Pointing game on radiograph phantoms whose fracture position is known: the heatmap must point at it.

A small EfficientNet-Lite0 (ImageNet start, as the bundle trains) learns the phantoms for two
epochs; then, for every held-out fractured phantom it detects, the peak of ``Classifier.heatmap``
(what ``score`` writes into the SR, the GSPS and the SC) is compared with the fracture centre the
generator recorded. The shipped recipe (the mean of LayerCAM on ``_blocks.2`` and on
``_blocks.5``) must put at least 90% of the peaks within 0.15 of the side (19 px at 128): the
target of issue 12. The last convolution alone sees the input as a 4 x 4 grid and fails it, as
does the inverted map of the first release (figures per recipe in docs/validation.md).

The model trains in float64: in float32 the CPU's kernels (an AMD EPYC against an Intel Xeon)
trained different networks from the same seed, and the recipe's hit rate moved with them (0.87
on an AMD EPYC, at least 0.90 on an Intel Xeon), so the test measured the machine as well as the
recipe; in float64 the AMD EPYC gives 0.93 (0.93 also on 43 detected phantoms of 120 held out).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_fracture.data.synthetic.phantom import ANATOMIES, ANATOMY_WEIGHTS, FRACTURE_TYPES, FRACTURE_WEIGHTS, simulate_radiograph
from monai_fracture.model.package import ModelInfo, save_model
from monai_fracture.networks import build_network
from monai_fracture.model import Classifier
from monai_fracture.model.classifier import channel_first
from monai_fracture.model.gradcam import hot_region
from monai_fracture.transforms.presets import build_preprocessing

pytestmark = pytest.mark.slow

SIZE, N_IMAGES, N_TRAIN, EPOCHS = 128, 160, 120, 2
TOLERANCE = 0.15  # of the image side: 19 px at 128
MIN_HIT_RATE = 0.9  # share of detected fractured phantoms whose heatmap peak lies within TOLERANCE
PREPROCESSING = {"modality": "xr", "size": SIZE, "normalization": "tf"}


def _phantoms() -> tuple[list[np.ndarray], list[int], list[tuple[float, float] | None]]:
    rng = np.random.default_rng(0)
    images, labels, where = [], [], []
    for index in range(N_IMAGES):
        fractured = index % 2 == 0
        anatomy = str(rng.choice(ANATOMIES, p=ANATOMY_WEIGHTS))
        kind = str(rng.choice(FRACTURE_TYPES, p=FRACTURE_WEIGHTS)) if fractured else None
        phantom = simulate_radiograph((SIZE, SIZE), np.random.default_rng(1000 + index), anatomy, kind)
        images.append(phantom.signal)
        labels.append(int(fractured))
        where.append((phantom.fracture.row, phantom.fracture.col) if phantom.fracture else None)
    return images, labels, where


def train_phantom_model(folder) -> tuple[Classifier, list[np.ndarray], list[int], list[tuple[float, float] | None]]:
    """Train the tiny phantom model into ``folder``; the classifier and the held-out phantoms."""
    torch.manual_seed(0)
    images, labels, where = _phantoms()
    chain = build_preprocessing(**PREPROCESSING, load=False)
    inputs = torch.stack([torch.as_tensor(chain({"image": channel_first(a, {})})["image"]).as_subclass(torch.Tensor)
                          for a in images])
    targets = torch.tensor(labels)
    network = build_network("efficientnet-lite0", pretrained=True).double()
    inputs = inputs.double()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(EPOCHS):
        network.train()
        order = torch.randperm(N_TRAIN)
        for start in range(0, N_TRAIN, 16):
            batch = order[start : start + 16]
            loss = torch.nn.functional.cross_entropy(network(inputs[batch]), targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    info = ModelInfo(name="phantom-pointing", version="test", threshold=0.5, preprocessing=PREPROCESSING,
                     network={"name": "efficientnet-lite0", "spatial_dims": 2, "in_channels": 3, "num_classes": 2})
    save_model(folder, network.float(), info)
    return Classifier(folder, backend="fp32"), images[N_TRAIN:], labels[N_TRAIN:], where[N_TRAIN:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_phantom_model(tmp_path_factory.mktemp("phantom_model"))


def test_heatmap_peak_lies_on_the_fracture(trained):
    classifier, images, labels, where = trained
    probabilities = classifier.score([(a, {}) for a in images])
    negatives = [p for p, y in zip(probabilities, labels) if y == 0]
    positives = [p for p, y in zip(probabilities, labels) if y == 1]
    assert np.mean(positives) > np.mean(negatives) + 0.2, "the model did not learn the phantoms"
    distances = []
    for image, label, centre, probability in zip(images, labels, where, probabilities):
        if label != 1 or probability < classifier.threshold:
            continue  # pointing game on true positives
        cam = classifier.heatmap(image, {})
        assert cam.shape == image.shape and cam.min() == 0.0 and cam.max() == 1.0
        peak = hot_region(cam).peak
        distances.append(float(np.hypot(peak[0] - centre[0], peak[1] - centre[1])))
    assert len(distances) >= 10, f"only {len(distances)} true positives"
    hits = np.asarray(distances) <= TOLERANCE * SIZE
    assert hits.mean() >= MIN_HIT_RATE, (
        f"hit rate {hits.mean():.2f} within {TOLERANCE * SIZE:.0f} px (median peak distance "
        f"{np.median(distances):.0f} px), distances {sorted(round(d) for d in distances)}")
