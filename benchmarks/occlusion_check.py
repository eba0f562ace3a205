"""What the model itself relies on: MONAI ``OcclusionSensitivity`` on FracAtlas true positives, against the boxes.

    nice -n 5 .venv/bin/python -m benchmarks.occlusion_check --data ../shared/data/fracatlas --images 30 \
        --out benchmarks/out/occlusion/occlusion.json

Occlusion asks the model directly (how much P(fracture) drops when a patch of the network input
is blurred away), with no gradients, at the cost of hundreds of forward passes per image; so it
runs on the first ``--images`` true positives of the fold (the order of ``benchmarks.localisation``
and of the sweep). Each row has the occlusion map's peak, its distance outside the nearest box
(fraction of the long side) and its energy in the boxes, in the row format of
``benchmarks.localisation_sweep`` under the recipe name ``occlusion``, so
``benchmarks.localisation_report --occlusion`` sets it beside the heatmaps on the same images.
The file is rewritten after every image and a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.localisation import true_positives, validation_frame
from benchmarks.localisation_sweep import to_source, outside_distance, peak_of
from monai_fracture.model import Classifier
from monai_fracture.model.gradcam import energy_in_boxes

logger = logging.getLogger("benchmarks.occlusion_check")


def occlusion_map(classifier: Classifier, image: np.ndarray, meta: dict, mask_size: int, overlap: float) -> np.ndarray:
    """Drop of P(fracture) when each patch is occluded, in the source geometry, scaled to [0, 1]."""
    from monai.visualize import OcclusionSensitivity

    processed = classifier.preprocess_meta(image, meta)
    inputs = torch.as_tensor(processed).as_subclass(torch.Tensor)[None].float()
    network = classifier.model.network.eval()
    with torch.no_grad():
        baseline = torch.softmax(network(inputs), 1)[0, 1]
        occlusion = OcclusionSensitivity(network, mask_size=mask_size, n_batch=16, verbose=False, overlap=overlap,
                                         activate=lambda logits: torch.softmax(logits, 1))
        occluded, _ = occlusion(inputs)
    drop = torch.relu(baseline - occluded[:, 1:2])  # (1, 1, H, W)
    return to_source(drop[0], processed, image.shape)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--model", type=Path, default=Path("bundles/fracture_classification/models/fracatlas"))
    parser.add_argument("--images", type=int, default=6, help="true positives to check")
    parser.add_argument("--mask-size", type=int, default=48, help="occluded patch side, network-input pixels")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/occlusion/occlusion.json"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    classifier = Classifier(args.model, backend="fp32")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(args.out.read_text()) if args.out.is_file() else {"images": []}
    rows = done["images"]
    seen = {row["path"] for row in rows}
    settings = {"mask_size": args.mask_size, "overlap": args.overlap}
    if rows and done.get("settings") != settings:
        raise SystemExit(f"{args.out} was written with {done.get('settings')}, not {settings}: use another --out")
    for entry, image, meta, probability, boxes in true_positives(classifier, validation_frame(args.data, args.model),
                                                                 args.data, args.images):
        if entry["path"] in seen:
            continue
        started = time.perf_counter()
        occ = occlusion_map(classifier, image, meta, args.mask_size, args.overlap)
        peak = peak_of(occ)
        rows.append({"path": entry["path"], "probability": round(probability, 4), "shape": list(image.shape),
                     "boxes": [[round(v, 1) for v in b] for b in boxes],
                     "seconds": round(time.perf_counter() - started, 1),
                     "occlusion": {"peak": list(peak), "outside": round(outside_distance(peak, boxes) / max(image.shape), 4),
                                   "energy": round(energy_in_boxes(occ, boxes), 4)}})
        args.out.write_text(json.dumps({"model": classifier.model_id, "settings": settings, "recipes": ["occlusion"],
                                        "images": rows}) + "\n")
        logger.info("%d %s %.0fs outside %.3f", len(rows), entry["path"], rows[-1]["seconds"],
                    rows[-1]["occlusion"]["outside"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
