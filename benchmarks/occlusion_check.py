"""Cross-check of the heatmap peak against MONAI ``OcclusionSensitivity`` on a few FracAtlas true positives.

    .venv/bin/python -m benchmarks.occlusion_check --data ../shared/data/fracatlas --images 6

Occlusion asks the model directly (how much P(fracture) drops when a patch of the network input
is blurred away), with no gradients, at the cost of hundreds of forward passes per image; so it
runs on a handful of images only. For each, prints the distance between the occlusion peak and
each recipe's heatmap peak (fraction of the long side), and whether each peak lies in a box.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.localisation import apply_recipe, validation_frame, yolo_boxes
from monai_fracture.io import read_image
from monai_fracture.model import Classifier
from monai_fracture.model.gradcam import point_in_box


def occlusion_map(classifier: Classifier, image: np.ndarray, meta: dict, mask_size: int, overlap: float) -> np.ndarray:
    """Drop of P(fracture) when each patch is occluded, in the source geometry."""
    from monai.visualize import OcclusionSensitivity

    processed = classifier.preprocess_meta(image, meta)
    inputs = torch.as_tensor(processed).as_subclass(torch.Tensor)[None].float()
    network = classifier.model.network.eval()
    with torch.no_grad():
        baseline = torch.softmax(network(inputs), 1)[0, 1]
        occlusion = OcclusionSensitivity(network, mask_size=mask_size, n_batch=16, verbose=False, overlap=overlap)
        occluded, _ = occlusion(inputs)
    drop = torch.relu(baseline - occluded[:, 1:2])  # (1, 1, H, W)
    return classifier._to_source_geometry(drop[0], processed, image.shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--model", type=Path, default=Path("bundles/fracture_classification/models/fracatlas"))
    parser.add_argument("--images", type=int, default=6, help="true positives to check")
    parser.add_argument("--mask-size", type=int, default=48, help="occluded patch side, network-input pixels")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--recipes", nargs="+", default=["default", "gradcam@last"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    classifier = Classifier(args.model, backend="fp32")
    val = validation_frame(args.data, args.model)
    done = 0
    for path in val[val["label"] == 1]["path"]:
        if done >= args.images:
            break
        image, meta = read_image(args.data / path)
        if float(classifier.score([(image, meta)])[0]) < classifier.threshold:
            continue
        boxes = yolo_boxes(args.data / "annotations" / "yolo" / f"{Path(path).stem}.txt", *image.shape)
        if not boxes:
            continue
        started = time.perf_counter()
        occ = occlusion_map(classifier, image, meta, args.mask_size, args.overlap)
        row = {"path": path, "occlusion_seconds": round(time.perf_counter() - started, 1)}
        occ_peak = np.unravel_index(int(np.argmax(occ)), occ.shape)
        row["occlusion_in_box"] = any(point_in_box(occ_peak, b) for b in boxes)
        for recipe in args.recipes:
            apply_recipe(classifier, recipe)
            cam = classifier.heatmap(image, meta)
            peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
            row[recipe] = {"distance_to_occlusion_peak": round(float(np.hypot(*np.subtract(peak, occ_peak)))
                                                                / max(image.shape), 3),
                           "in_box": any(point_in_box(peak, b) for b in boxes)}
        print(json.dumps(row), flush=True)
        done += 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
