"""Two models on the same held-out FracAtlas images: the paired difference in ROC-AUC and sensitivity.

    .venv/bin/python -m benchmarks.fracatlas_paired benchmarks/results/fracatlas_cv/lite0_320_box0.2/fold0_oof.csv \
        --against /path/to/previous/model --out benchmarks/results/fracatlas_cv/lite0_320_box0.2/fold0_vs_0.1.0.json

The first model's probabilities come from an out-of-fold CSV (``benchmarks.fracatlas_cv``); the
``--against`` model folder scores the same files through the scoring code (reader, preprocessing,
``Classifier``). The 95% CI of each difference is a percentile bootstrap that resamples whole
near-duplicate groups, both models' probabilities moving together (paired). Only meaningful when
``--against`` also never trained on these images (the 0.1.0 model: fold 0's training part).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.metrics import sensitivity_at_specificity
from monai_fracture.io import read_image
from monai_fracture.model import Classifier
from monai_fracture.training.metrics import roc_auc

logger = logging.getLogger("benchmarks.fracatlas_paired")


def paired_bootstrap(labels: np.ndarray, a: np.ndarray, b: np.ndarray, groups: np.ndarray,
                     resamples: int = 2000, seed: int = 0) -> dict:
    """Point estimates and group-bootstrap CIs of a - b for ROC-AUC and sensitivity at specificity 0.80."""
    def figures(idx: np.ndarray) -> tuple[float, float]:
        y = labels[idx]
        return (roc_auc(a[idx], y) - roc_auc(b[idx], y),
                sensitivity_at_specificity(y, a[idx], 0.80) - sensitivity_at_specificity(y, b[idx], 0.80))

    unique = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in unique}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        idx = np.concatenate([members[g] for g in rng.choice(unique, size=len(unique), replace=True)])
        if labels[idx].min() != labels[idx].max():
            draws.append(figures(idx))
    draws = np.array(draws)
    auc, sens = figures(np.arange(len(labels)))
    return {"roc_auc_difference": auc, "roc_auc_difference_ci95": np.percentile(draws[:, 0], [2.5, 97.5]).tolist(),
            "sensitivity_at_specificity_0.80_difference": sens,
            "sensitivity_at_specificity_0.80_difference_ci95": np.percentile(draws[:, 1], [2.5, 97.5]).tolist(),
            "resamples": len(draws)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("oof", type=Path, help="an out-of-fold CSV (path, label, group, probability)")
    parser.add_argument("--against", type=Path, required=True, help="the model folder to compare with")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    oof = pd.read_csv(args.oof)
    other = Classifier(args.against)
    probs = []
    for start in range(0, len(oof), 32):
        probs.append(other.score([read_image(args.data / p) for p in oof["path"].iloc[start:start + 32]], batch_size=32))
    theirs = np.concatenate(probs)
    labels, ours = oof["label"].to_numpy(), oof["probability"].to_numpy()
    result = {"images": len(oof), "fractured": int(labels.sum()), "model": str(args.oof), "against": other.model_id,
              "roc_auc": roc_auc(ours, labels), "against_roc_auc": roc_auc(theirs, labels),
              "sensitivity_at_specificity_0.80": sensitivity_at_specificity(labels, ours, 0.80),
              "against_sensitivity_at_specificity_0.80": sensitivity_at_specificity(labels, theirs, 0.80),
              **paired_bootstrap(labels, ours, theirs, oof["group"].to_numpy(), args.resamples)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
