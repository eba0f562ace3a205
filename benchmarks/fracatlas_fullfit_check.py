"""What can be checked of "the shipped full fit scores at least as well as the fold networks" on development data.

    .venv/bin/python -m benchmarks.fracatlas_fullfit_check lite0_320_box0.2 \
        [--model bundles/fracture_classification/models/fracatlas]

The full fit trained on every development image, so no development image can measure it. This
writes what can be compared instead, fold by fold (``benchmarks/results/fracatlas_cv/NAME/fullfit_check.json``):
its training loss per epoch against each fold network's (same recipe and budget, 25% more
images); its probabilities on each fold's held-out images against that fold network's OOF
probabilities (Spearman rank correlation, images called positive at the shipped threshold); and
its ROC-AUC there, a training-set figure that is reported only to show it is not one to quote.
The shipped model scores through the scoring code (reader, preprocessing, ``Classifier``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from benchmarks.fracatlas_oof import RESULTS_ROOT, fold_metas, load_oof
from monai_fracture.io import read_image
from monai_fracture.model import Classifier
from monai_fracture.training.metrics import finite_or_none, roc_auc

logger = logging.getLogger("benchmarks.fracatlas_fullfit_check")
SHIPPED = Path("bundles/fracture_classification/models/fracatlas")


def score_files(model: Classifier, data: Path, paths: pd.Series, batch: int = 32) -> np.ndarray:
    probs = []
    for start in range(0, len(paths), batch):
        probs.append(model.score([read_image(data / p) for p in paths.iloc[start:start + batch]], batch_size=batch))
        logger.info("scored %d of %d", min(start + batch, len(paths)), len(paths))
    return np.concatenate(probs)


def fold_comparison(oof: pd.DataFrame, full: np.ndarray, threshold: float) -> dict[int, dict]:
    """Per fold: how the full fit's probabilities on the fold's images relate to the fold network's OOF ones."""
    out = {}
    for fold, part in oof.groupby("fold"):
        mine, theirs, labels = full[part.index], part["probability"].to_numpy(), part["label"].to_numpy()
        out[int(fold)] = {
            "images": len(part), "fractured": int(labels.sum()),
            "spearman_full_fit_vs_fold_network": finite_or_none(spearmanr(mine, theirs).statistic),
            "called_positive_full_fit": int((mine >= threshold).sum()),
            "called_positive_fold_network": int((theirs >= threshold).sum()),
            "fold_network_roc_auc_out_of_fold": finite_or_none(roc_auc(theirs, labels)),
            "full_fit_roc_auc_training_images": finite_or_none(roc_auc(mine, labels)),
        }
    return out


def loss_comparison(full_history: list[dict], metas: list[dict]) -> dict:
    """Last-epoch training losses: the full fit against each fold network (same recipe, same epochs)."""
    def last(history: list[dict], key: str) -> float | None:
        value = history[-1].get(key) if history else None
        return None if value is None else float(value)

    return {"full_fit": {"epochs": len(full_history), "loss": last(full_history, "loss"),
                         "box_loss": last(full_history, "box_loss")},
            "folds": {int(m["fold"]): {"epochs": len(m["history"]), "loss": last(m["history"], "loss"),
                                       "box_loss": last(m["history"], "box_loss")} for m in metas}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="recipe name (folder under benchmarks/results/fracatlas_cv)")
    parser.add_argument("--model", type=Path, default=SHIPPED, help="the full-fit model folder")
    parser.add_argument("--results", type=Path, default=RESULTS_ROOT)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = args.results / args.name
    oof = load_oof(folder)
    metas = fold_metas(folder)
    model = Classifier(args.model)
    info = model.info
    shipped = {k: v for k, v in info.training_data.get("recipe", {}).items() if k != "fold"}
    for meta in metas:
        fold_recipe = {k: v for k, v in meta["recipe"].items() if k != "fold"}
        if fold_recipe != shipped:
            differ = sorted(k for k in set(shipped) | set(fold_recipe) if shipped.get(k) != fold_recipe.get(k))
            raise SystemExit(f"{args.model} was not trained with fold {meta['fold']}'s recipe (differs in {differ})")
    full = score_files(model, args.data, oof["path"])
    result = {
        "model": model.model_id, "recipe": args.name, "threshold": info.threshold,
        "folds_present": sorted(int(f) for f in oof["fold"].unique()),
        "note": "the full fit trained on every image here: its ROC-AUC is a training-set figure, not a result",
        "training_loss": loss_comparison(info.training_data.get("history", []), metas),
        "per_fold": fold_comparison(oof, full, info.threshold),
    }
    (folder / "fullfit_check.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
