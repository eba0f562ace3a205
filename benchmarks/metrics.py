"""Probability-based binary metrics for benchmark reports: ROC-AUC with a bootstrap CI, PR-AUC, ECE."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (ties: the higher threshold)."""
    fpr, tpr, thresholds = roc_curve(labels, probs)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    return float(np.clip(thresholds[best].max(), 0.0, 1.0))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(labels[mask].mean() - probs[mask].mean())
    return float(ece)


def bootstrap_auc_ci(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None, n: int = 1000,
                     seed: int = 0) -> tuple[float, float]:
    """95% percentile CI, resampling whole groups (near-duplicates move together) when given."""
    rng = np.random.default_rng(seed)
    units = np.unique(groups) if groups is not None else np.arange(len(labels))
    members = {g: np.flatnonzero(groups == g) for g in units} if groups is not None else None
    aucs = []
    for _ in range(n):
        picked = rng.choice(units, size=len(units), replace=True)
        index = np.concatenate([members[g] for g in picked]) if members is not None else picked
        if labels[index].min() != labels[index].max():
            aucs.append(roc_auc_score(labels[index], probs[index]))
    return float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))


def binary_report(labels: np.ndarray, probs: np.ndarray, threshold: float | None = None,
                  groups: np.ndarray | None = None, bootstrap: int = 1000) -> dict:
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    both = labels.min() != labels.max() if len(labels) else False
    chosen = youden_threshold(labels, probs) if threshold is None else float(threshold)
    pred = probs >= chosen
    tp, fn = int((pred & (labels == 1)).sum()), int((~pred & (labels == 1)).sum())
    tn, fp = int((~pred & (labels == 0)).sum()), int((pred & (labels == 0)).sum())
    out = {
        "n": int(len(labels)), "positives": int(labels.sum()),
        "roc_auc": float(roc_auc_score(labels, probs)) if both else None,
        "pr_auc": float(average_precision_score(labels, probs)) if both else None,
        "threshold": chosen,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "accuracy": (tp + tn) / len(labels) if len(labels) else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "ece": expected_calibration_error(labels, probs) if len(labels) else None,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }
    if both and bootstrap:
        out["roc_auc_ci95"] = bootstrap_auc_ci(labels, probs, groups, n=bootstrap)
    if both:
        fpr, tpr, thr = roc_curve(labels, probs)
        ok = (1 - fpr) >= 0.80
        out["sensitivity_at_specificity_0.80"] = float(tpr[ok].max()) if ok.any() else None
    return out
