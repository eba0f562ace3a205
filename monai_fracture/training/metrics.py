"""Binary fracture metrics computed from probabilities, and the rule that picks the threshold.

Everything here works on P(fracture) = softmax(logits)[:, 1] and 0/1 labels. A case is called
positive when ``probability >= threshold`` (scikit-learn's ROC convention), so a threshold
read off the ROC curve reproduces that curve's operating point exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

YOUDEN = "youden"
TARGET_SENSITIVITY = "target_sensitivity"
FIXED = "fixed"


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold on P(fracture) and a sentence that says how it was chosen."""

    threshold: float
    rule: str


def as_probability_and_label(y_pred: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """P(fracture) and 0/1 labels from engine outputs: logits/probabilities (N, 2), (N,), one-hot or index labels."""
    pred = _stack(y_pred)
    label = _stack(y)
    if pred.ndim >= 2 and pred.shape[-1] == 2:
        prob = pred[..., 1]
    else:
        prob = pred
    prob = prob.reshape(-1)
    if label.ndim >= 2 and label.shape[-1] == 2:
        label = label.argmax(axis=-1)
    label = label.reshape(-1)
    if prob.shape[0] != label.shape[0]:
        raise ValueError(f"{prob.shape[0]} predictions but {label.shape[0]} labels")
    return prob.astype(np.float64), label.astype(np.int64)


def _stack(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, (list, tuple)):
        if not values:
            return np.zeros((0,), dtype=np.float64)
        parts = [_stack(v) for v in values]
        return np.stack([p.reshape(parts[0].shape) for p in parts])
    return np.asarray(values, dtype=np.float64)


def _has_both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve, NaN when only one class is present."""
    return float(roc_auc_score(labels, probs)) if _has_both_classes(labels) else float("nan")


def pr_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve), NaN when only one class is present."""
    return float(average_precision_score(labels, probs)) if _has_both_classes(labels) else float("nan")


def choose_threshold(
    probs: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    rule: str = YOUDEN,
    target_sensitivity: float = 0.9,
    fixed_threshold: float = 0.5,
) -> ThresholdChoice:
    """Pick the decision threshold on validation probabilities.

    - ``"youden"``: maximise Youden's J = sensitivity + specificity - 1 over the ROC operating
      points; ties go to the higher threshold (fewer false alarms for the same J).
    - ``"target_sensitivity"``: the highest threshold whose sensitivity is >= ``target_sensitivity``.
    - ``"fixed"``: ``fixed_threshold``.
    With a single class in validation no curve exists and ``fixed_threshold`` is used.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if rule == FIXED:
        return ThresholdChoice(float(fixed_threshold), f"fixed {fixed_threshold:g}")
    if rule not in (YOUDEN, TARGET_SENSITIVITY):
        raise ValueError(f"unknown threshold rule {rule!r} (expected {YOUDEN!r}, {TARGET_SENSITIVITY!r}, {FIXED!r})")
    if not _has_both_classes(labels):
        return ThresholdChoice(float(fixed_threshold), f"fixed {fixed_threshold:g} (validation holds one class only)")
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    finite = np.isfinite(thresholds) & (thresholds <= 1.0)  # the first point (inf / max+1) is "call nothing"
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if rule == YOUDEN:
        j = tpr - fpr
        best = int(np.argmax(j))  # thresholds decrease along the curve: the first maximum is the highest threshold
        return ThresholdChoice(
            _between_scores(thresholds, best),
            f"maximise Youden's J on validation (J={j[best]:.4f}; ties -> higher threshold)",
        )
    meets = np.flatnonzero(tpr >= target_sensitivity)
    best = int(meets[0])
    return ThresholdChoice(
        _between_scores(thresholds, best),
        f"highest threshold with validation sensitivity >= {target_sensitivity:g} (got {tpr[best]:.4f})",
    )


def _between_scores(thresholds: np.ndarray, index: int) -> float:
    """The midpoint between the chosen operating point's score and the next lower validation score.

    ROC thresholds are the validation scores themselves, so the chosen one sits exactly on an
    image: any 1e-7 change (another backend, another machine) would flip that image's decision.
    The midpoint makes the same decision for every validation image and keeps a margin.
    """
    upper = float(thresholds[index])
    lower = float(thresholds[index + 1]) if index + 1 < len(thresholds) else 0.0
    return (upper + lower) / 2.0


def finite_or_none(value: float | None) -> float | None:
    """An undefined score (NaN, inf) as None: JSON null, since NaN is not JSON and strict parsers reject it."""
    return None if value is None or not np.isfinite(value) else float(value)


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def binary_scores(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, NPV, F1 and the confusion counts at ``threshold``."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    pred = probs >= threshold
    positive = labels == 1
    tp = int(np.sum(pred & positive))
    fp = int(np.sum(pred & ~positive))
    tn = int(np.sum(~pred & ~positive))
    fn = int(np.sum(~pred & positive))
    sensitivity = _safe_div(tp, tp + fn)
    precision = _safe_div(tp, tp + fp)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    return {
        "accuracy": _safe_div(tp + tn, labels.size),
        "sensitivity": sensitivity,
        "specificity": _safe_div(tn, tn + fp),
        "precision": precision,
        "npv": _safe_div(tn, tn + fn),
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE of P(fracture): sample-weighted |observed fracture rate - mean probability| over equal-width bins."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if probs.size == 0:
        return float("nan")
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(labels[mask].mean() - probs[mask].mean())
    return float(ece)


def bootstrap_roc_auc_ci(
    probs: np.ndarray,
    labels: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ROC-AUC (resamples with one class are skipped).

    With ``groups`` (patient or near-duplicate ids) whole groups are resampled, so copies of one
    radiograph move together and the interval is not narrowed by them.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not _has_both_classes(labels):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(labels.size)]
    else:
        _, inverse = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    aucs = []
    for _ in range(n_resamples):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        if _has_both_classes(labels[idx]):
            aucs.append(roc_auc_score(labels[idx], probs[idx]))
    if not aucs:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(aucs, [alpha, 1.0 - alpha])
    return float(low), float(high)


def threshold_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    rule: str = YOUDEN,
    target_sensitivity: float = 0.9,
    fixed_threshold: float = 0.5,
    prefix: str = "",
) -> dict[str, Any]:
    """Threshold chosen by ``rule`` plus the scores at it, keys prefixed (e.g. ``val_``)."""
    choice = choose_threshold(probs, labels, rule, target_sensitivity, fixed_threshold)
    scores = binary_scores(probs, labels, choice.threshold)
    out: dict[str, Any] = {f"{prefix}{k}": v for k, v in scores.items() if k in ("accuracy", "sensitivity", "specificity", "f1")}
    out[f"{prefix}threshold"] = choice.threshold
    out[f"{prefix}threshold_rule"] = choice.rule
    return out


class ThresholdedMetrics(Metric):
    """Ignite metric: choose the threshold on this epoch's probabilities and report the scores there.

    Results are flattened into ``engine.state.metrics`` as ``{prefix}threshold``,
    ``{prefix}accuracy``, ``{prefix}sensitivity``, ``{prefix}specificity``, ``{prefix}f1``
    (the rule text goes to ``engine.state.threshold_rule``), so MONAI's StatsHandler and
    TensorBoardStatsHandler log them beside ROC-AUC. Use
    ``output_transform=monai.handlers.from_engine(["pred", "label"])``.
    """

    def __init__(
        self,
        output_transform: Any = lambda x: x,
        rule: str = YOUDEN,
        target_sensitivity: float = 0.9,
        fixed_threshold: float = 0.5,
        prefix: str = "val_",
        device: str | torch.device = "cpu",
    ) -> None:
        self.rule = rule
        self.target_sensitivity = target_sensitivity
        self.fixed_threshold = fixed_threshold
        self.prefix = prefix
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self.last_rule = ""
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)
        self._metrics_result_mode = "flatten"

    def reset(self) -> None:
        self._probs = []
        self._labels = []

    def update(self, output: Any) -> None:
        y_pred, y = output
        prob, label = as_probability_and_label(y_pred, y)
        self._probs.append(prob)
        self._labels.append(label)

    def compute(self) -> dict[str, float]:
        probs = np.concatenate(self._probs) if self._probs else np.zeros(0)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.int64)
        out = threshold_metrics(probs, labels, self.rule, self.target_sensitivity, self.fixed_threshold, self.prefix)
        self.last_rule = out.pop(f"{self.prefix}threshold_rule")
        return {k: (0.0 if math.isnan(v) else float(v)) for k, v in out.items()}

    def completed(self, engine: Any, name: str) -> None:
        """Also leave the rule text on ``engine.state.threshold_rule`` (metrics stay scalar for the loggers)."""
        super().completed(engine, name)
        engine.state.threshold_rule = self.last_rule
