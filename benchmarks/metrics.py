"""One dict of probability-based metrics for benchmark reports, built from ``monai_fracture.training.metrics``."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from monai_fracture.training.metrics import (
    binary_scores,
    bootstrap_roc_auc_ci,
    choose_threshold,
    expected_calibration_error,
    finite_or_none,
    pr_auc,
    roc_auc,
)


def binary_report(labels: np.ndarray, probs: np.ndarray, threshold: float | None = None,
                  groups: np.ndarray | None = None, bootstrap: int = 1000) -> dict:
    """ROC-AUC (group-bootstrap CI), PR-AUC, ECE, and threshold scores (Youden's J unless given)."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    both = len(labels) > 0 and labels.min() != labels.max()
    chosen = choose_threshold(probs, labels).threshold if threshold is None else float(threshold)
    scores = binary_scores(probs, labels, chosen)
    out = {
        "n": int(len(labels)), "positives": int(labels.sum()),
        "roc_auc": roc_auc(probs, labels) if both else None,
        "pr_auc": pr_auc(probs, labels) if both else None,
        "threshold": chosen,
        **{k: finite_or_none(scores[k]) for k in ("sensitivity", "specificity", "accuracy", "f1")},
        "ece": expected_calibration_error(probs, labels) if len(labels) else None,
        "confusion": {k: scores[k] for k in ("tp", "fp", "tn", "fn")},
    }
    if both and bootstrap:
        out["roc_auc_ci95"] = bootstrap_roc_auc_ci(probs, labels, n_resamples=bootstrap, groups=groups)
    if both:
        for specificity in (0.80, 0.90):
            out[f"sensitivity_at_specificity_{specificity:.2f}"] = sensitivity_at_specificity(labels, probs, specificity)
    return out


def sensitivity_at_specificity(labels: np.ndarray, probs: np.ndarray, specificity: float) -> float | None:
    """The best sensitivity among ROC operating points whose specificity is at least ``specificity``."""
    fpr, tpr, _ = roc_curve(labels, probs)
    ok = (1 - fpr) >= specificity
    return float(tpr[ok].max()) if ok.any() else None
