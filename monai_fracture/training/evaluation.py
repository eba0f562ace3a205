"""Evaluation outputs: metrics.json, a per-image predictions CSV and ROC / confusion / calibration plots.

All metrics come from P(fracture); the hard ones use the threshold saved with the model, so the
numbers describe the model exactly as it will be deployed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monai_fracture.training.metrics import (
    binary_scores,
    bootstrap_roc_auc_ci,
    expected_calibration_error,
    finite_or_none,
    pr_auc,
    roc_auc,
)

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
ROC_PNG = "roc_curve.png"
CONFUSION_PNG = "confusion_matrix.png"
CALIBRATION_PNG = "calibration.png"


def evaluation_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_calibration_bins: int = 10,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """ROC-AUC with a bootstrap 95% CI, PR-AUC, ECE, and the scores at ``threshold`` (NaN -> None).

    ``groups`` (e.g. near-duplicate groups): the bootstrap resamples whole groups, so copies of one
    radiograph move together and the interval is not narrowed by them.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    groups = None if groups is None else np.asarray(groups)
    low, high = bootstrap_roc_auc_ci(probs, labels, n_resamples=n_bootstrap, seed=seed, groups=groups)
    scores = binary_scores(probs, labels, threshold)
    out: dict[str, Any] = {
        "n": int(labels.size),
        "n_positive": int(labels.sum()),
        "n_negative": int(labels.size - labels.sum()),
        "roc_auc": finite_or_none(roc_auc(probs, labels)),
        "roc_auc_ci95": [finite_or_none(low), finite_or_none(high)],
        "roc_auc_ci_method": (f"percentile bootstrap{' of whole groups' if groups is not None else ''}, "
                              f"{n_bootstrap} resamples, seed {seed}"),
        "pr_auc": finite_or_none(pr_auc(probs, labels)),
        "ece": finite_or_none(expected_calibration_error(probs, labels, n_calibration_bins)),
        "ece_bins": n_calibration_bins,
        "threshold": float(threshold),
    }
    for key, value in scores.items():
        out[key] = value if isinstance(value, int) else finite_or_none(value)
    return out


def write_predictions_csv(
    path: str | PathLike,
    filenames: Sequence[str | None],
    probs: Sequence[float],
    threshold: float,
    labels: Sequence[int] | None = None,
    skipped: Sequence[Mapping[str, str]] | None = None,
) -> Path:
    """One row per image: path, probability, prediction (0/1 at ``threshold``), threshold[, label].

    With ``skipped`` (``{"path", "status", "reason"}`` per file that was not scored) the table gets
    ``status`` and ``reason`` columns and one row per such file, so every input appears once, as in
    ``monai-fracture score``'s results.csv.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    frame = pd.DataFrame(
        {
            "path": list(filenames),
            "probability": probs,
            "prediction": (probs >= threshold).astype(int),
            "threshold": float(threshold),
        }
    )
    if labels is not None:
        frame["label"] = np.asarray(labels, dtype=np.int64).reshape(-1)
    if skipped is not None:
        frame["status"], frame["reason"] = "scored", ""
        rows = pd.DataFrame([{"path": r["path"], "threshold": float(threshold), "status": r["status"],
                              "reason": r["reason"]} for r in skipped], columns=list(frame.columns))
        frame = pd.concat([frame, rows], ignore_index=True) if len(rows) else frame
        frame["prediction"] = frame["prediction"].astype("Int64")
    frame.to_csv(path, index=False, float_format="%.6f")
    return path


def _plots(out_dir: Path, probs: np.ndarray, labels: np.ndarray, threshold: float, metrics: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    if metrics["roc_auc"] is not None:
        fpr, tpr, _ = roc_curve(labels, probs)
        lo, hi = metrics["roc_auc_ci95"]
        ax.plot(fpr, tpr, lw=2, label=f"ROC-AUC {metrics['roc_auc']:.3f} (95% CI {lo:.3f}-{hi:.3f})")
        if metrics["sensitivity"] is not None and metrics["specificity"] is not None:
            ax.plot(1 - metrics["specificity"], metrics["sensitivity"], "o", label=f"threshold {threshold:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / ROC_PNG, dpi=100)
    plt.close(fig)

    matrix = np.array([[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="black", fontsize=14)
    ax.set(
        xticks=[0, 1], yticks=[0, 1], xticklabels=["no fracture", "fracture"], yticklabels=["no fracture", "fracture"],
        xlabel="predicted", ylabel="true", title=f"Confusion matrix (threshold {threshold:.3f})",
    )
    fig.tight_layout()
    fig.savefig(out_dir / CONFUSION_PNG, dpi=100)
    plt.close(fig)

    bins = metrics["ece_bins"]
    index = np.minimum((probs * bins).astype(int), bins - 1)
    centers, observed, counts = [], [], []
    for b in range(bins):
        mask = index == b
        if mask.any():
            centers.append(probs[mask].mean())
            observed.append(labels[mask].mean())
            counts.append(int(mask.sum()))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot(centers, observed, "o-", label=f"model (ECE {metrics['ece'] or 0:.3f})")
    ax.set(xlabel="mean predicted P(fracture)", ylabel="observed fracture rate", title="Calibration", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / CALIBRATION_PNG, dpi=100)
    plt.close(fig)


def write_evaluation(
    out_dir: str | PathLike,
    probs: Sequence[float],
    labels: Sequence[int],
    filenames: Sequence[str | None],
    threshold: float,
    n_bootstrap: int = 1000,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Write metrics.json, predictions.csv and the three PNG plots under ``out_dir``; return the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    metrics = evaluation_metrics(probs, labels, threshold, n_bootstrap=n_bootstrap, seed=seed, groups=groups)
    if extra:
        metrics.update(extra)
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_predictions_csv(out_dir / PREDICTIONS_FILE, filenames, probs, threshold, labels)
    _plots(out_dir, probs, labels, threshold, metrics)
    logger.info(
        "evaluation of %d images: ROC-AUC %s, sensitivity %s, specificity %s at threshold %.4f -> %s",
        metrics["n"], metrics["roc_auc"], metrics["sensitivity"], metrics["specificity"], threshold, out_dir,
    )
    return metrics
