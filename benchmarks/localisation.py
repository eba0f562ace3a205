"""Does the heatmap point at the fracture? Pointing game and energy-in-box on FracAtlas validation.

    .venv/bin/python -m benchmarks.localisation --data ../shared/data/fracatlas \
        --model bundles/fracture_classification/models/fracatlas --out benchmarks/out/localisation

For every true positive of the shipped model's validation fold (the same StratifiedGroupKFold
fold the model was chosen on, see ``benchmarks.fracatlas``; images the reader rejects dropped as
there), the Grad-CAM of the fracture class is computed by ``Classifier.heatmap`` (what
``monai-fracture score`` writes) and compared with the FracAtlas YOLO boxes:

- hit: the heatmap maximum lies inside a box grown by ``--tolerance`` (a fraction of the image's
  long side; 0 = strictly inside);
- energy in box: the share of the heatmap's total value inside the union of boxes, beside the
  boxes' share of the image area (what a uniform map would score).

``--recipes`` compare heatmap recipes (``benchmarks.localisation.parse_recipe``; default: what
``score`` ships), one ``Classifier.heatmap`` call each; ``benchmarks.localisation_sweep`` runs many
recipes from shared passes. ``--checkpoint`` maps the heatmaps of a ``benchmarks.fracatlas_cv``
training checkpoint (copied first; EMA weights when kept) on the same true positives of ``--model``,
so box-guided training can be compared image by image. Writes ``localisation.json`` (summary with
bootstrap 95% intervals + per-image rows) and an overlay panel of the first images.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.fracatlas import Recipe, split_indices
from monai_fracture.io import ImageReadError, read_image
from monai_fracture.model.package import ModelInfo
from monai_fracture.model import Classifier
from monai_fracture.model.gradcam import energy_in_boxes, point_in_box

logger = logging.getLogger("benchmarks.localisation")


def parse_recipe(spec: str) -> dict:
    """``METHOD@LAYER[+LAYER...][,product][,flip][,xSCALE]`` -> Classifier heatmap settings.

    ``layercam@_blocks.4+last`` fuses two layers by their mean; ``last`` is the last convolution;
    ``default`` (alone) is the model's own recipe (``model_info.json`` ``heatmap``, else the class defaults).
    """
    if spec == "default":
        return {}
    head, *options = spec.split(",")
    method, _, layers = head.partition("@")
    settings = {"heatmap_method": method, "heatmap_layer": tuple(layers.split("+")) if layers else None,
                "heatmap_fusion": "mean", "heatmap_flip": False, "heatmap_scale": 1.0}
    for option in options:
        if option in ("mean", "product"):
            settings["heatmap_fusion"] = option
        elif option == "flip":
            settings["heatmap_flip"] = True
        elif option.startswith("x"):
            settings["heatmap_scale"] = float(option[1:])
        else:
            raise ValueError(f"unknown recipe option {option!r} in {spec!r}")
    return settings


def apply_recipe(classifier: Classifier, spec: str) -> None:
    """Set ``classifier``'s heatmap recipe (the model's own first, so options not named fall back to it)."""
    classifier.use_model_heatmap_recipe()
    for key, value in parse_recipe(spec).items():
        setattr(classifier, key, value)


def yolo_boxes(path: Path, rows: int, cols: int) -> list[tuple[float, float, float, float]]:
    """YOLO ``class cx cy w h`` (fractions) -> (row0, col0, row1, col1) in pixels of a ``rows`` x ``cols`` image."""
    boxes = []
    if not path.is_file():
        return boxes
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        cx, cy, w, h = (float(v) for v in parts[1:5])
        boxes.append(((cy - h / 2) * rows, (cx - w / 2) * cols, (cy + h / 2) * rows, (cx + w / 2) * cols))
    return boxes


def validation_frame(data_dir: Path, model: Path) -> pd.DataFrame:
    """The validation fold of the shipped model: same rows, order and split as ``benchmarks.fracatlas``."""
    info = ModelInfo.load(model / "model_info.json")
    recipe_values = (info.training_data or {}).get("recipe", {})
    recipe = Recipe(**{k: v for k, v in recipe_values.items() if k in Recipe.__dataclass_fields__})
    if recipe.fold < 0:
        raise SystemExit(f"{model} was trained on every development image (full fit): it has no validation fold. "
                         "Pass --model a fold's model (benchmarks.ship_fracatlas benchmarks/out/cv/NAME/fold0 --to ...)")
    labels = pd.read_csv(data_dir / "labels.csv")
    usable = labels[labels["decodes"].astype(str).str.lower() == "true"].reset_index(drop=True)
    _, val_idx = split_indices(usable, recipe)
    val = usable.iloc[val_idx].reset_index(drop=True)
    expected = (info.training_data or {}).get("val_images")
    if expected is not None and len(val) != int(expected):
        raise SystemExit(f"validation fold has {len(val)} images, the model card says {expected}: data differ")
    return val


def true_positives(selector: Classifier, val: pd.DataFrame, data_dir: Path, limit: int | None = None,
                   skip: int = 0) -> Iterator[tuple[pd.Series, np.ndarray, dict, float, list]]:
    """Fractured validation images ``selector`` calls positive, with their boxes: (row, image, meta, p, boxes).

    Images the reader turns (EXIF orientation: read shape differs from the stored ``height`` x
    ``width`` the YOLO boxes refer to) are dropped, as ``benchmarks.fracatlas_cv`` drops their boxes.
    """
    found = 0
    for _, entry in val[val["label"] == 1].iloc[skip:].iterrows():
        if limit is not None and found >= limit:
            return
        name = Path(entry["path"]).stem
        try:
            image, meta = read_image(data_dir / entry["path"])
        except ImageReadError as err:
            logger.warning("%s: %s", entry["path"], err)
            continue
        if "height" in entry and tuple(image.shape) != (int(entry["height"]), int(entry["width"])):
            logger.warning("%s: read as %s, boxes refer to %sx%s: skipped", entry["path"], image.shape,
                           entry["height"], entry["width"])
            continue
        probability = float(selector.score([(image, meta)])[0])
        if probability < selector.threshold:
            continue  # true positives only: a missed fracture has no evidence to point at
        boxes = yolo_boxes(data_dir / "annotations" / "yolo" / f"{name}.txt", *image.shape)
        if not boxes:
            continue
        found += 1
        yield entry, image, meta, probability, boxes


def checkpoint_classifier(checkpoint: Path, like_model: Path, work_dir: Path, ema: bool = True) -> Classifier:
    """A ``Classifier`` on the network of a ``benchmarks.fracatlas_cv`` checkpoint (its EMA weights when it keeps them).

    The checkpoint is copied first (the training job replaces it every few steps; it is never opened
    in place). Its recipe gives the network and input size; preprocessing is the runner's: the
    scoring preset at that size with ``tf`` normalisation (``fracatlas_cv.NORMALIZATION``). The
    threshold is ``like_model``'s: a checkpoint has none of its own.
    """
    import shutil

    from benchmarks.fracatlas_cv import NORMALIZATION
    from monai_fracture.model.package import MODEL_INFO, MODEL_WEIGHTS, safe_torch_load

    work_dir.mkdir(parents=True, exist_ok=True)
    copy = work_dir / "checkpoint_copy.pt"
    shutil.copyfile(checkpoint, copy)
    state = safe_torch_load(copy)
    recipe = json.loads(state["recipe"])
    weights = state["net"]
    if ema and state.get("ema"):
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}
    info = ModelInfo.load(like_model / MODEL_INFO)
    info.name, info.version = f"checkpoint_{checkpoint.parent.parent.name}_{checkpoint.parent.name}", \
        f"epoch{state['epoch']}_step{state['step']}"
    info.network = {**info.network, "name": recipe["network"]}
    info.preprocessing = {"modality": "xr", "size": int(recipe["size"]), "normalization": NORMALIZATION}
    info.exports, info.heatmap = {}, {}  # a checkpoint has no heatmap recipe of its own: the defaults
    folder = work_dir / "checkpoint_model"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(weights, folder / MODEL_WEIGHTS)
    info.save(folder / MODEL_INFO)
    logger.info("checkpoint %s: epoch %s step %s, %s weights", checkpoint, state["epoch"], state["step"],
                "EMA" if weights is not state["net"] else "network")
    return Classifier(folder, backend="fp32")


def evaluate(classifier: Classifier, val: pd.DataFrame, data_dir: Path, recipes: list[str],
             tolerance: float, limit: int | None, progress_file: Path | None = None, skip: int = 0,
             selector: Classifier | None = None) -> list[dict]:
    """Per-image records for the true positives (of ``selector``, default ``classifier``); ``progress_file``
    gets the rows so far after each image."""
    rows: list[dict] = []
    for entry, image, meta, probability, boxes in true_positives(selector or classifier, val, data_dir, limit, skip):
        name = Path(entry["path"]).stem
        record = {"path": entry["path"], "probability": round(probability, 4), "shape": list(image.shape),
                  "box_area_fraction": round(energy_in_boxes(np.ones(image.shape, np.float32), boxes), 4),
                  "boxes": [[round(v, 1) for v in b] for b in boxes]}
        if selector is not None and selector is not classifier:
            record["checkpoint_probability"] = round(float(classifier.score([(image, meta)])[0]), 4)
        slack = tolerance * max(image.shape)
        for key in recipes:
            apply_recipe(classifier, key)
            started = time.perf_counter()
            cam = classifier.heatmap(image, meta)
            seconds = time.perf_counter() - started
            peak = np.unravel_index(int(np.argmax(np.round(cam, 4))), cam.shape)  # as hot_region
            record[key] = {"hit": any(point_in_box(peak, b, slack) for b in boxes),
                           "energy": round(energy_in_boxes(cam, boxes), 4), "seconds": round(seconds, 3),
                           "peak": [int(peak[0]), int(peak[1])]}
        rows.append(record)
        if progress_file is not None:
            progress_file.write_text(json.dumps({"summary": summarise(rows), "images": rows}, indent=1) + "\n")
        logger.info("%s p=%.3f %s", name, probability,
                    " ".join(f"{k}:{int(v['hit'])}/{v['energy']:.2f}" for k, v in record.items() if isinstance(v, dict)))
    return rows


def bootstrap_ci(values, seed: int = 0, resamples: int = 10000) -> list[float]:
    """Percentile bootstrap 95% interval of the mean over images (``scipy.stats.bootstrap``)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.all(values == values[0]):
        return [round(float(values.mean()), 4)] * 2 if len(values) else [float("nan")] * 2
    result = bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile",
                       random_state=np.random.default_rng(seed))
    return [round(float(result.confidence_interval.low), 4), round(float(result.confidence_interval.high), 4)]


def summarise(rows: list[dict], tolerances: tuple[float, ...] = (0.05, 0.1)) -> dict:
    """Hit rates (at the run's tolerance and at ``tolerances`` of the long side) and energy in box per variant."""
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, dict)})
    summary = {"true_positives": len(rows),
               "mean_box_area_fraction": round(float(np.mean([r["box_area_fraction"] for r in rows])), 4) if rows else None}
    for key in keys:
        scored = [r for r in rows if key in r]
        hits = [r[key]["hit"] for r in scored]
        energy = [r[key]["energy"] for r in scored]
        summary[key] = {"hit_rate": round(float(np.mean(hits)), 4), "hit_rate_ci95": bootstrap_ci(hits),
                        "hits": int(np.sum(hits)), "n": len(hits),
                        "seconds_median": round(float(np.median([r[key]["seconds"] for r in scored])), 3),
                        "energy_in_box_mean": round(float(np.mean(energy)), 4),
                        "energy_in_box_median": round(float(np.median(energy)), 4)}
        for tolerance in tolerances:
            grown = [any(point_in_box(tuple(r[key]["peak"]), tuple(b), tolerance * max(r["shape"])) for b in r["boxes"])
                     for r in scored]
            summary[key][f"hit_rate_tolerance_{tolerance}"] = round(float(np.mean(grown)), 4)
            summary[key][f"hit_rate_tolerance_{tolerance}_ci95"] = bootstrap_ci(grown)
    return summary


def panel(rows: list[dict], data_dir: Path, classifier: Classifier, out_file: Path, count: int = 8,
          recipe: str = "default") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    picked = rows[:count]
    fig, axes = plt.subplots(2, max(1, (len(picked) + 1) // 2), figsize=(3.2 * max(1, (len(picked) + 1) // 2), 7))
    for ax, row in zip(np.ravel(axes), picked):
        image, meta = read_image(data_dir / row["path"])
        apply_recipe(classifier, recipe)
        cam = classifier.heatmap(image, meta)
        ax.imshow(image, cmap="gray")
        ax.imshow(cam, cmap="jet", alpha=0.35)
        for r0, c0, r1, c1 in yolo_boxes(data_dir / "annotations" / "yolo" / f"{Path(row['path']).stem}.txt", *image.shape):
            ax.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, edgecolor="white", linewidth=1.2))
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        ax.plot([peak[1]], [peak[0]], marker="+", color="white", markersize=12)
        ax.set_title(f"{Path(row['path']).name} p={row['probability']:.2f}", fontsize=8)
        ax.axis("off")
    for ax in np.ravel(axes)[len(picked):]:
        ax.axis("off")
    fig.suptitle(f"Heatmap {recipe} (fracture class) on validation true positives; white: FracAtlas boxes, +: peak")
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--model", type=Path, default=Path("bundles/fracture_classification/models/fracatlas"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/localisation"))
    parser.add_argument("--recipes", nargs="+", default=["default"],
                        help="heatmap recipes, e.g. gradcam@last layercam@_blocks.4+last,flip (see parse_recipe)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="box growth as a fraction of the long side")
    parser.add_argument("--limit", type=int, help="stop after this many true positives")
    parser.add_argument("--skip", type=int, default=0, help="skip this many fractured validation images first")
    parser.add_argument("--panel", type=Path, help="also write an overlay panel PNG here")
    parser.add_argument("--checkpoint", type=Path,
                        help="map this benchmarks.fracatlas_cv checkpoint's heatmaps on --model's true positives "
                             "(copied into --out first; EMA weights when it keeps them)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    selector = Classifier(args.model, backend="fp32")
    classifier = checkpoint_classifier(args.checkpoint, args.model, args.out) if args.checkpoint else selector
    val = validation_frame(args.data, args.model)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = evaluate(classifier, val, args.data, args.recipes, args.tolerance, args.limit,
                    progress_file=args.out / "localisation.partial.json", skip=args.skip, selector=selector)
    summary = summarise(rows)
    summary.update({"model": classifier.model_id, "true_positives_of": selector.model_id,
                    "threshold": selector.threshold, "tolerance": args.tolerance,
                    "validation_images": len(val), "validation_fractured": int((val["label"] == 1).sum()),
                    "wall_seconds": round(time.perf_counter() - started, 1)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "localisation.json").write_text(json.dumps({"summary": summary, "images": rows}, indent=2) + "\n")
    if args.panel is not None:
        panel(rows, args.data, classifier, args.panel, recipe=args.recipes[0])
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
