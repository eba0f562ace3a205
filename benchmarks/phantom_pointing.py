"""Pointing game on radiograph phantoms, per heatmap recipe (method, layers, fusion, flip, scale).

    .venv/bin/python -m benchmarks.phantom_pointing --model-dir /tmp/phantom_model

Trains (or reloads from ``--model-dir``) the tiny phantom model of ``tests/test_model_gradcam_pointing.py``
and, for every held-out fractured phantom it detects, measures the distance from the heatmap peak
to the fracture centre the generator recorded. Prints one JSON line per recipe: hit rate within
``--tolerance`` of the side, median distance and seconds per heatmap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

RECIPES = [
    "layercam@_blocks.2+_blocks.5,mean", "layercam@_blocks.2+_blocks.5,product", "layercam@_blocks.2+last,product",
    "gradcam@last", "gradcampp@last", "layercam@last", "gradcam@_blocks.4", "layercam@_blocks.4",
    "layercam@_blocks.3", "layercam@_blocks.2", "layercam@_blocks.5", "layercam@_blocks.4+last",
    "layercam@_blocks.4+last,product", "layercam@_blocks.4+_blocks.5+last", "gradcam@_blocks.4+_blocks.5+last",
    "layercam@_blocks.4+last,flip", "layercam@_blocks.4+last,x2", "layercam@last,x2",
]


def pointing(classifier, images, labels, where, recipe: str, tolerance: float) -> dict:
    """Peak distances on the detected fractured phantoms under one recipe (``localisation.parse_recipe``)."""
    from benchmarks.localisation import apply_recipe
    from monai_fracture.model.gradcam import hot_region

    apply_recipe(classifier, recipe)
    probabilities = classifier.score([(a, {}) for a in images])
    distances, seconds = [], []
    for image, label, centre, probability in zip(images, labels, where, probabilities):
        if label != 1 or probability < classifier.threshold:
            continue
        started = time.perf_counter()
        cam = classifier.heatmap(image, {})
        seconds.append(time.perf_counter() - started)
        peak = hot_region(cam).peak
        distances.append(float(np.hypot(peak[0] - centre[0], peak[1] - centre[1])))
    side = max(images[0].shape)
    return {"n": len(distances), "hit_rate": round(float(np.mean(np.asarray(distances) <= tolerance * side)), 3),
            "median_px": round(float(np.median(distances)), 1), "seconds": round(float(np.median(seconds)), 4),
            "distances": sorted(round(d) for d in distances)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="where the phantom model is trained/reused")
    parser.add_argument("--recipes", nargs="+", default=RECIPES, help="see benchmarks.localisation.parse_recipe")
    parser.add_argument("--tolerance", type=float, default=0.15, help="hit radius as a fraction of the side")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_model_gradcam_pointing as phantoms

    from monai_fracture.model import Classifier

    if (args.model_dir / "model.pt").is_file():
        images, labels, where = phantoms._phantoms()
        n = phantoms.N_TRAIN
        classifier, images, labels, where = Classifier(args.model_dir, backend="fp32"), images[n:], labels[n:], where[n:]
    else:
        classifier, images, labels, where = phantoms.train_phantom_model(args.model_dir)
    for name in args.recipes:
        print(json.dumps({"recipe": name, **pointing(classifier, images, labels, where, name, args.tolerance)}),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
