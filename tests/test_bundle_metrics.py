"""Metrics from probabilities, the threshold rule, evaluation outputs and the ignite metric."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import roc_auc_score

from monai_fracture.training.evaluation import (
    CALIBRATION_PNG,
    CONFUSION_PNG,
    METRICS_FILE,
    PREDICTIONS_FILE,
    ROC_PNG,
    evaluation_metrics,
    write_evaluation,
)
from monai_fracture.training.metrics import (
    ThresholdChoice,
    ThresholdedMetrics,
    as_probability_and_label,
    binary_scores,
    bootstrap_roc_auc_ci,
    choose_threshold,
    expected_calibration_error,
    threshold_metrics,
)


def test_youden_picks_the_best_operating_point():
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    choice = choose_threshold(probs, labels)
    # at 0.7: sensitivity 3/4, specificity 4/4 -> J = 0.75; at 0.4: 4/4 and 3/4 -> J = 0.75 too
    # ties go to the higher operating point (0.7); the threshold sits midway to the next lower
    # score (0.6), so no validation image lies on it and a 1e-7 change cannot flip a decision
    assert choice.threshold == pytest.approx(0.65), "ties must go to the higher threshold"
    assert not np.any(np.isclose(probs, choice.threshold))
    assert np.array_equal(probs >= choice.threshold, probs >= 0.7)
    assert "Youden" in choice.rule
    scores = binary_scores(probs, labels, choice.threshold)
    assert scores["sensitivity"] == pytest.approx(0.75)
    assert scores["specificity"] == pytest.approx(1.0)


def test_target_sensitivity_rule_and_degenerate_validation():
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    choice = choose_threshold(probs, labels, rule="target_sensitivity", target_sensitivity=1.0)
    assert choice.threshold == pytest.approx(0.35)  # midway between 0.4 and the next lower score 0.3
    assert binary_scores(probs, labels, choice.threshold)["sensitivity"] == 1.0
    single = choose_threshold([0.2, 0.9], [1, 1])
    assert single.threshold == 0.5 and "one class" in single.rule
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(probs, labels, rule="accuracy")


def test_binary_scores_counts():
    scores = binary_scores(np.array([0.9, 0.8, 0.2, 0.6, 0.1]), np.array([1, 0, 1, 0, 0]), 0.5)
    assert (scores["tp"], scores["fp"], scores["tn"], scores["fn"]) == (1, 2, 1, 1)
    assert scores["accuracy"] == pytest.approx(2 / 5)
    assert scores["f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))


def test_calibration_and_bootstrap():
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=4000)
    calibrated = (rng.uniform(size=probs.size) < probs).astype(int)
    assert expected_calibration_error(probs, calibrated) < 0.03
    overconfident = np.where(probs > 0.5, 1.0, 0.0)
    assert expected_calibration_error(overconfident, calibrated) > 0.2
    labels = rng.integers(0, 2, 300)
    scores = labels * 0.8 + rng.normal(0, 0.5, 300)
    low, high = bootstrap_roc_auc_ci(scores, labels, n_resamples=300)
    auc = roc_auc_score(labels, scores)
    assert low < auc < high and high - low < 0.2


def test_probability_and_label_from_engine_outputs():
    preds = [torch.tensor([0.3, 0.7]), torch.tensor([0.9, 0.1])]
    onehot = [torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])]
    prob, label = as_probability_and_label(preds, onehot)
    np.testing.assert_allclose(prob, [0.7, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(label, [1, 0])
    prob, label = as_probability_and_label(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]))
    np.testing.assert_array_equal(label, [0, 1])


def test_thresholded_metrics_on_an_engine():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 64)
    p1 = np.clip(labels * 0.4 + rng.uniform(0, 0.6, 64), 0, 1)
    batches = [(p1[i:i + 16], labels[i:i + 16]) for i in range(0, 64, 16)]

    def step(engine, batch):
        p, y = batch
        pred = [torch.tensor([1 - v, v]) for v in p]
        lab = [torch.nn.functional.one_hot(torch.tensor(int(v)), 2).float() for v in y]
        return [{"pred": a, "label": b} for a, b in zip(pred, lab)]

    from monai.handlers import from_engine

    engine = Engine(step)
    ThresholdedMetrics(output_transform=from_engine(["pred", "label"]), prefix="val_").attach(engine, "thr")
    engine.run(batches, max_epochs=1)
    metrics = engine.state.metrics
    expected = choose_threshold(p1, labels)
    assert metrics["val_threshold"] == pytest.approx(expected.threshold)
    assert metrics["val_sensitivity"] == pytest.approx(binary_scores(p1, labels, expected.threshold)["sensitivity"])
    assert "Youden" in engine.state.threshold_rule
    assert all(isinstance(v, float) for v in metrics.values())


def test_write_evaluation_outputs(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 80)
    probs = np.clip(labels * 0.5 + rng.uniform(0, 0.5, 80), 0, 1)
    names = [f"/data/img_{i}.dcm" for i in range(80)]
    metrics = write_evaluation(tmp_path, probs, labels, names, threshold=0.5, n_bootstrap=200, extra={"split": "test"})
    saved = json.loads((tmp_path / METRICS_FILE).read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["roc_auc"] == pytest.approx(roc_auc_score(labels, probs))
    lo, hi = saved["roc_auc_ci95"]
    assert lo <= saved["roc_auc"] <= hi
    assert saved["tp"] + saved["fp"] + saved["tn"] + saved["fn"] == 80
    for key in ("pr_auc", "accuracy", "sensitivity", "specificity", "f1", "ece"):
        assert 0.0 <= saved[key] <= 1.0, key
    assert saved["split"] == "test"
    with open(tmp_path / PREDICTIONS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 80 and rows[3]["path"] == names[3]
    assert {"path", "probability", "prediction", "threshold", "label"} <= set(rows[0])
    assert int(rows[0]["prediction"]) == int(float(rows[0]["probability"]) >= 0.5)
    for png in (ROC_PNG, CONFUSION_PNG, CALIBRATION_PNG):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png


def test_scores_at_the_threshold_count_as_positive_and_empty_ratios_are_nan():
    scores = binary_scores(np.array([0.5, 0.49, 0.7, 0.1]), np.array([1, 1, 0, 0]), 0.5)
    assert scores == {"accuracy": 0.5, "sensitivity": 0.5, "specificity": 0.5, "precision": 0.5, "npv": 0.5,
                      "f1": 0.5, "tp": 1, "fp": 1, "tn": 1, "fn": 1}
    none_called = binary_scores(np.array([[0.1], [0.2]]), np.array([[0], [1]]), 0.5)  # column vectors too
    assert (none_called["tp"], none_called["fp"], none_called["tn"], none_called["fn"]) == (0, 0, 1, 1)
    assert np.isnan(none_called["precision"]) and none_called["npv"] == 0.5 and none_called["f1"] == 0.0
    no_positives = binary_scores(np.array([0.1, 0.9]), np.array([0, 0]), 0.5)
    assert np.isnan(no_positives["sensitivity"]) and no_positives["specificity"] == 0.5


def test_fixed_and_single_class_rules():
    probs, labels = np.array([0.1, 0.9]), np.array([0, 1])
    assert choose_threshold(probs, labels, rule="fixed", fixed_threshold=0.3) == ThresholdChoice(0.3, "fixed 0.3")
    single = choose_threshold([0.2, 0.9], [0, 0], fixed_threshold=0.42)
    assert single == ThresholdChoice(0.42, "fixed 0.42 (validation holds one class only)")
    assert choose_threshold([], []).threshold == 0.5


def test_rule_texts_carry_the_achieved_values():
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert choose_threshold(probs, labels).rule == "maximise Youden's J on validation (J=0.7500; ties -> higher threshold)"
    target = choose_threshold(probs, labels, rule="target_sensitivity", target_sensitivity=0.7)
    assert target.rule == "highest threshold with validation sensitivity >= 0.7 (got 0.7500)"
    assert target.threshold == pytest.approx(0.65)


def test_a_probability_of_exactly_one_is_an_operating_point_and_the_lowest_one_halves_to_zero():
    # 1.0 is a real score: the point "call only the 1.0 image" must stay on the curve
    assert choose_threshold([1.0, 0.2], [1, 0]).threshold == pytest.approx(0.6)
    # the lowest positive is the lowest score: the threshold goes midway to zero
    lowest = choose_threshold([0.2, 0.5, 0.9], [1, 0, 1], rule="target_sensitivity", target_sensitivity=1.0)
    assert lowest.threshold == pytest.approx(0.1)


def test_threshold_metrics_prefixes_the_scores_at_the_chosen_threshold():
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = threshold_metrics(probs, labels, prefix="val_")
    assert out == {"val_accuracy": pytest.approx(7 / 8), "val_sensitivity": 0.75, "val_specificity": 1.0,
                   "val_f1": pytest.approx(6 / 7), "val_threshold": pytest.approx(0.65),
                   "val_threshold_rule": "maximise Youden's J on validation (J=0.7500; ties -> higher threshold)"}
    fixed = threshold_metrics(probs, labels, rule="fixed", fixed_threshold=0.35)
    assert fixed["threshold"] == 0.35 and fixed["sensitivity"] == 1.0 and fixed["specificity"] == 0.75


def test_the_evaluation_interval_resamples_whole_groups_when_given():
    """Near-duplicate copies must move together, or they narrow the interval (the docs' plots use the groups)."""
    rng = np.random.default_rng(5)
    labels = np.repeat((rng.random(60) < 0.3).astype(int), 4)  # 60 radiographs, 4 copies each
    probs = np.clip(labels * 0.25 + np.repeat(rng.random(60), 4) * 0.75, 0, 1)
    groups = np.repeat(np.arange(60), 4)
    grouped = evaluation_metrics(probs, labels, 0.5, n_bootstrap=300, groups=groups)
    plain = evaluation_metrics(probs, labels, 0.5, n_bootstrap=300)
    assert grouped["roc_auc_ci95"] == pytest.approx(list(bootstrap_roc_auc_ci(probs, labels, 300, groups=groups)))
    assert "whole groups" in grouped["roc_auc_ci_method"] and "groups" not in plain["roc_auc_ci_method"]
    width = lambda m: m["roc_auc_ci95"][1] - m["roc_auc_ci95"][0]  # noqa: E731
    assert width(grouped) > 1.3 * width(plain)  # copies counted as independent images understate the uncertainty
