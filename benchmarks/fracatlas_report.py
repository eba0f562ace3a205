"""Figures for docs/validation.md from a finished ``benchmarks.fracatlas`` run or cross-validated recipe.

    .venv/bin/python -m benchmarks.fracatlas_report benchmarks/out/fracatlas/lite0_224 \
        --model bundles/fracture_classification/models/fracatlas --out docs/validation
    .venv/bin/python -m benchmarks.fracatlas_report benchmarks/results/fracatlas_cv/lite0_320_box0.2 \
        --model benchmarks/out/ship/lite0_320_box0.2_fold0 --out docs/validation

Writes ROC, calibration and confusion-matrix plots of the held-out probabilities (a run's
validation fold, or a recipe's pooled out-of-fold files ``fold*_oof.csv``; the probabilities
``monai-fracture score`` computes) at ``--model``'s threshold (for out-of-fold files: the pooled
threshold of ``summary.json``, the one shipped), and a heatmap panel of the most
confident false negatives and false positives, read and preprocessed by the scoring code. For
out-of-fold files the panel draws only images ``--model`` held out (a fold's model: its own
fold), so no heatmap comes from a network that trained on the image. ``--no-panel`` writes the
plots only and keeps the committed panel, for when that fold network is not at hand (its run
folder is ignored); a test fails once its images are no longer the errors the threshold selects.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from monai_fracture.io import read_image  # noqa: E402
from monai_fracture.model.package import ModelInfo  # noqa: E402
from monai_fracture.model import Classifier  # noqa: E402
from monai_fracture.training.evaluation import write_evaluation  # noqa: E402


def panel_errors(val: pd.DataFrame, threshold: float, per_kind: int = 4) -> list[tuple[str, pd.Series]]:
    """The most confident errors at ``threshold``: the lowest-scored fractures, the highest-scored others."""
    fn = val[(val["label"] == 1) & (val["probability"] < threshold)].nsmallest(per_kind, "probability")
    fp = val[(val["label"] == 0) & (val["probability"] >= threshold)].nlargest(per_kind, "probability")
    return [("missed fracture", row) for _, row in fn.iterrows()] + [("false alarm", row) for _, row in fp.iterrows()]


def gradcam_panel(val: pd.DataFrame, data_dir: Path, model: Path, out_file: Path, per_kind: int = 4,
                  threshold: float | None = None) -> list[dict]:
    classifier = Classifier(model, threshold=threshold)
    threshold = classifier.threshold
    picked = panel_errors(val, threshold, per_kind)
    fig, axes = plt.subplots(2, per_kind, figsize=(3.2 * per_kind, 7))
    listed = []
    for ax, (kind, row) in zip(axes.ravel(), picked):
        image, meta = read_image(data_dir / row["path"])
        cam = classifier.heatmap(image, meta)
        ax.imshow(image, cmap="gray")
        ax.imshow(cam, cmap="jet", alpha=0.35)
        ax.set_title(f"{kind}\n{Path(row['path']).name} ({row['region']}) p={row['probability']:.2f}", fontsize=8)
        ax.axis("off")
        listed.append({"kind": kind, "path": row["path"], "region": row["region"], "hardware": int(row["hardware"]),
                       "probability": round(float(row["probability"]), 4)})
    for ax in axes.ravel()[len(picked):]:
        ax.axis("off")
    fig.suptitle(f"Heatmap ({classifier.heatmap_method}, fracture class) on held-out errors at threshold {threshold:.3f}")
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)
    return listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", type=Path, default=Path("bundles/fracture_classification/models/fracatlas"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--out", type=Path, default=Path("docs/validation"))
    parser.add_argument("--no-panel", action="store_true",
                        help="plots only, keeping the committed heatmap panel: for when the fold network that drew it "
                             "is not at hand (tests check that its images are still the errors at the new threshold)")
    args = parser.parse_args(argv)
    info = ModelInfo.load(args.model / "model_info.json")
    threshold = info.threshold
    if (args.run_dir / "val_predictions.csv").is_file():
        val = pd.read_csv(args.run_dir / "val_predictions.csv")
        held_out, fold = val, None
    else:
        from benchmarks.fracatlas_oof import fold_metas, load_oof

        val = load_oof(args.run_dir)
        model_recipe = dict((info.training_data or {}).get("recipe", {}))
        fold = model_recipe.pop("fold", None)
        if not args.no_panel and (fold is None or fold < 0):
            parser.error(f"--model {args.model} is not a fold's model: its heatmaps would show images it trained on")
        metas = fold_metas(args.run_dir)
        if not args.no_panel and (not metas or any(
                {k: v for k, v in m["recipe"].items() if k != "fold"} != model_recipe for m in metas)):
            parser.error(f"--model {args.model} was trained with another recipe than {args.run_dir}'s folds")
        held_out = val[val["fold"] == fold]
        # the plots and the panel at the shipped threshold: the one chosen on these pooled OOF probabilities
        summary = json.loads((args.run_dir / "summary.json").read_text())
        if summary["folds_present"] != sorted(int(f) for f in val["fold"].unique()):
            parser.error(f"{args.run_dir / 'summary.json'} pools other folds: rerun benchmarks.fracatlas_oof first")
        threshold = float(summary["pooled"]["threshold"])
    write_evaluation(args.out, val["probability"], val["label"], val["path"], threshold,
                     groups=val["group"] if "group" in val else None)  # the interval of the tables: whole groups
    (args.out / "predictions.csv").unlink(missing_ok=True)  # per-image list stays with the run, not the docs
    if args.no_panel:
        return 0
    errors = gradcam_panel(held_out, args.data, args.model, args.out / "gradcam_errors.png", threshold=threshold)
    panel = {"model": f"{info.name}@{info.version}", "held_out_fold": fold, "drawn_at_threshold": round(threshold, 4),
             "errors": errors}
    (args.out / "gradcam_errors.json").write_text(json.dumps(panel, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
