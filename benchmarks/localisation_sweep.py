"""Every heatmap recipe on every FracAtlas validation true positive, from a few network passes per image.

    nice -n 5 .venv/bin/python -m benchmarks.localisation_sweep --data ../shared/data/fracatlas \
        --out benchmarks/out/localisation_sweep --threads 1

``benchmarks.localisation`` calls ``Classifier.heatmap`` once per recipe (one forward and backward
pass each, more with ``flip``/``x2``); with ~60 recipes that is hours on the shared CPU. Here one
pass per view (plain, left-right flipped, input x2) records every candidate layer's activations and
gradients at once (MONAI ``ModelWithHooks``), one more pass gives MONAI ``GradCAMpp`` on the last
convolution, and all recipes are combined from them exactly as ``model.gradcam.class_activation_map``
does: per-layer map upsampled to the input, ``[0, 1]`` per layer before a product/mean fusion, views
averaged, padding cut and the map resized back to the source pixels, then scaled to ``[0, 1]``.
Before the sweep, the first image's maps are compared with ``Classifier.heatmap`` (the code ``score``
runs) for a handful of recipes; the run stops if they differ, so the table cannot drift from what ships.

Per image and recipe it records the peak (first maximum after rounding to four decimals, as
``hot_region``), its distance outside the nearest box (0 inside; the box growth at which it would
count as a hit, as a fraction of the long side) and the energy in the boxes.
``benchmarks.localisation_report`` turns ``sweep.json`` into hit rates with bootstrap CIs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.localisation import (
    apply_recipe,
    checkpoint_classifier,
    true_positives,
    validation_frame,
    yolo_boxes,
)
from monai_fracture.io import read_image
from monai_fracture.model import Classifier
from monai_fracture.model.classifier import channel_first, undo_spatial_operations
from monai_fracture.model.gradcam import energy_in_boxes, scale_to_unit

logger = logging.getLogger("benchmarks.localisation_sweep")

LAYERS = ("_blocks.2", "_blocks.3", "_blocks.4", "_blocks.5", "last")
SHIPPED = "layercam@_blocks.2+_blocks.5,mean"  # what Classifier.heatmap does by default (the self-check says so)
PREVIOUS = "layercam@_blocks.4+last,product"  # the default before the sweep
CHECKED = (SHIPPED, PREVIOUS, "layercam@_blocks.2,flip", "layercam@_blocks.3+last,mean,x2", "gradcam@last",
           "gradcampp@last")


def recipes(layers: tuple[str, ...] = LAYERS) -> list[str]:
    """The swept recipes (``benchmarks.localisation.parse_recipe`` syntax).

    Plain: every layer alone and every pair by product and by mean; flip and x2: every layer
    alone and every pair by product; Grad-CAM and Grad-CAM++ on the last convolution.
    """
    singles = [f"layercam@{layer}" for layer in layers]
    pairs = [f"{a}+{b}" for a, b in itertools.combinations(layers, 2)]
    names = singles + [f"layercam@{p},{f}" for p in pairs for f in ("product", "mean")]
    for option in ("flip", "x2"):
        names += [f"{s},{option}" for s in singles] + [f"layercam@{p},product,{option}" for p in pairs]
    return names + ["gradcam@last", "gradcampp@last"]


def peak_of(cam: np.ndarray) -> tuple[int, int]:
    """The first maximum after rounding to four decimals: the peak ``model.gradcam.hot_region`` reports."""
    rounded = np.round(np.nan_to_num(cam.astype(np.float32)), 4)
    row, col = np.unravel_index(int(np.argmax(rounded)), rounded.shape)
    return int(row), int(col)


def outside_distance(peak: tuple[int, int], boxes: list[tuple[float, float, float, float]]) -> float:
    """Smallest box growth (pixels) that puts ``peak`` inside a box: 0 inside, as ``point_in_box`` grows boxes."""
    r, c = peak
    return float(min(max(r0 - r, r - r1, c0 - c, c - c1, 0.0) for r0, c0, r1, c1 in boxes))


class LayerPasses:
    """Raw per-layer maps of one input from a single forward and backward pass (MONAI ``ModelWithHooks``)."""

    def __init__(self, classifier: Classifier, layers: tuple[str, ...]) -> None:
        from monai.visualize import GradCAMpp
        from monai.visualize.class_activation_maps import ModelWithHooks

        from monai_fracture.networks.registry import last_convolution

        network = classifier.model.network
        self.last = last_convolution(network)
        self.names = tuple(self.last if name == "last" else name for name in layers)
        self.hooked = ModelWithHooks(network, self.names, register_forward=True, register_backward=True)
        self.gradcampp = GradCAMpp(nn_module=network, target_layers=self.last, postprocessing=lambda v: v)

    def __call__(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"layercam@L": map, "gradcam@last": map}`` at the input's size, raw (unscaled)."""
        with torch.enable_grad():
            _, activations, gradients = self.hooked(inputs.float(), class_idx=1)
        maps = {}
        for name, a, g in zip(self.names, activations, gradients):
            key = "last" if name == self.last else name
            maps[f"layercam@{key}"] = torch.relu((torch.relu(g) * a).sum(1, keepdim=True))
            if key == "last":  # MONAI GradCAM.compute_map: channel weights are the mean gradients
                weights = g.mean(dim=tuple(range(2, g.ndim)), keepdim=True)
                maps["gradcam@last"] = torch.relu((weights * a).sum(1, keepdim=True))
        size = tuple(inputs.shape[2:])
        return {k: torch.nn.functional.interpolate(m.detach().float(), size=size, mode="bilinear", align_corners=False)
                for k, m in maps.items()}

    def gradcam_pp(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            raw = self.gradcampp.compute_map(inputs.float(), class_idx=1, layer_idx=-1)
        return torch.nn.functional.interpolate(raw.detach().float(), size=tuple(inputs.shape[2:]), mode="bilinear",
                                               align_corners=False)


def _unit(values: torch.Tensor) -> torch.Tensor:
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else torch.zeros_like(values)


def _fuse(maps: dict[str, torch.Tensor], layers: list[str], fusion: str) -> torch.Tensor:
    if len(layers) == 1:
        return maps[f"layercam@{layers[0]}"]
    scaled = torch.stack([_unit(maps[f"layercam@{layer}"]) for layer in layers])
    return scaled.prod(0) if fusion == "product" else scaled.mean(0)


def to_source(stack: torch.Tensor, processed, shape: tuple[int, int]) -> np.ndarray:
    """(K, H, W) network-input maps -> (K, rows, cols) source maps, each scaled to [0, 1] (``Classifier.heatmap``)."""
    restored = undo_spatial_operations(stack.float(), getattr(processed, "applied_operations", None) or [])
    if tuple(restored.shape[1:]) != tuple(shape):
        restored = torch.nn.functional.interpolate(restored[None], size=tuple(shape), mode="bilinear",
                                                   align_corners=False)[0]
    return np.stack([scale_to_unit(m) for m in restored.numpy()])


def all_maps(classifier: Classifier, passes: LayerPasses, image: np.ndarray, meta: dict,
             names: list[str]) -> dict[str, np.ndarray]:
    """Every recipe in ``names`` for one image, in source pixels, each in [0, 1]."""
    from benchmarks.localisation import parse_recipe

    by_scale: dict[float, list[str]] = {}
    for name in names:
        by_scale.setdefault(float(parse_recipe(name)["heatmap_scale"]), []).append(name)
    out: dict[str, np.ndarray] = {}
    for scale, group in by_scale.items():
        apply_recipe(classifier, f"layercam@last,x{scale}")
        data = classifier._heatmap_preprocessing()({"image": channel_first(image, meta)})
        processed = data["image"] if isinstance(data, dict) else data
        inputs = torch.as_tensor(processed).as_subclass(torch.Tensor)[None]
        plain = passes(inputs)
        flipped = None
        if any(parse_recipe(n)["heatmap_flip"] for n in group):
            flipped = {k: torch.flip(v, (-1,)) for k, v in passes(torch.flip(inputs, (-1,))).items()}
        if "gradcampp@last" in group:
            plain["gradcampp@last"] = passes.gradcam_pp(inputs)
        fused = []
        for name in group:
            settings = parse_recipe(name)
            if settings["heatmap_method"] != "layercam":
                fused.append(plain[name.split(",")[0]][0])
                continue
            layers = list(settings["heatmap_layer"])
            value = _fuse(plain, layers, settings["heatmap_fusion"])
            if settings["heatmap_flip"]:
                value = (value + _fuse(flipped, layers, settings["heatmap_fusion"])) / 2
            fused.append(value[0])
        out.update(zip(group, to_source(torch.cat(fused), processed, image.shape)))
    apply_recipe(classifier, "default")
    return out


def self_check(classifier: Classifier, passes: LayerPasses, image: np.ndarray, meta: dict) -> dict[str, float]:
    """Largest difference between this module's maps and ``Classifier.heatmap`` per checked recipe.

    ``default`` compares the model's own recipe (``model_info.json`` ``heatmap``; ``SHIPPED``, the
    class default, when it has none) with the map ``Classifier.heatmap`` draws without being told one.
    """
    own = (classifier.info.heatmap or {}).get("recipe", SHIPPED)
    mine = all_maps(classifier, passes, image, meta, list(dict.fromkeys([*CHECKED, own])))
    apply_recipe(classifier, "default")
    differences = {"default": float(np.abs(classifier.heatmap(image, meta) - mine[own]).max())}
    for name in CHECKED:
        apply_recipe(classifier, name)
        differences[name] = float(np.abs(classifier.heatmap(image, meta) - mine[name]).max())
    apply_recipe(classifier, "default")
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--model", type=Path, default=Path("bundles/fracture_classification/models/fracatlas"),
                        help="the shipped model: its validation fold and its true positives define the images")
    parser.add_argument("--checkpoint", type=Path,
                        help="map the heatmaps of this benchmarks.fracatlas_cv checkpoint instead (same images)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/localisation_sweep"))
    parser.add_argument("--recipes", nargs="+", help="default: benchmarks.localisation_sweep.recipes()")
    parser.add_argument("--limit", type=int, help="stop after this many true positives")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    selector = Classifier(args.model, backend="fp32")
    classifier = checkpoint_classifier(args.checkpoint, args.model, args.out) if args.checkpoint else selector
    names = args.recipes or recipes()
    passes = LayerPasses(classifier, LAYERS)
    args.out.mkdir(parents=True, exist_ok=True)
    result_file = args.out / "sweep.json"
    done = json.loads(result_file.read_text()) if result_file.is_file() else {"images": []}
    seen = {row["path"] for row in done["images"]}
    rows, checked = done["images"], done.get("self_check")
    started = time.perf_counter()
    for entry, image, meta, probability, boxes in true_positives(selector, validation_frame(args.data, args.model),
                                                                 args.data, args.limit):
        if entry["path"] in seen:
            continue
        if checked is None:
            checked = self_check(classifier, passes, image, meta)
            logger.info("self-check against Classifier.heatmap: %s", checked)
            if max(checked.values()) > 1e-3:
                raise SystemExit(f"the sweep's maps differ from Classifier.heatmap: {checked}")
        tick = time.perf_counter()
        maps = all_maps(classifier, passes, image, meta, names)
        long_side = max(image.shape)
        row = {"path": entry["path"], "probability": round(probability, 4), "shape": list(image.shape),
               "boxes": [[round(v, 1) for v in b] for b in boxes], "seconds": round(time.perf_counter() - tick, 1),
               "box_area_fraction": round(energy_in_boxes(np.ones(image.shape, np.float32), boxes), 5)}
        if classifier is not selector:
            row["checkpoint_probability"] = round(float(classifier.score([(image, meta)])[0]), 4)
        for name, cam in maps.items():
            peak = peak_of(cam)
            row[name] = {"peak": list(peak), "outside": round(outside_distance(peak, boxes) / long_side, 4),
                         "energy": round(energy_in_boxes(cam, boxes), 4)}
        rows.append(row)
        done = {"model": selector.model_id, "checkpoint": str(args.checkpoint) if args.checkpoint else None,
                "threshold": selector.threshold, "self_check": checked, "recipes": names, "images": rows}
        result_file.write_text(json.dumps(done) + "\n")  # after every image: a killed run resumes
        logger.info("%d %s %.1fs shipped outside %.3f", len(rows), entry["path"], row["seconds"],
                    row[SHIPPED]["outside"] if SHIPPED in row else float("nan"))
    logger.info("%d images in %.0f s", len(rows), time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
