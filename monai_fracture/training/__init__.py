"""Training helpers the bundle configs call: metrics from probabilities, threshold choice,
evaluation outputs, checkpoint safety and ignite handlers (imported lazily by submodule)."""

from monai_fracture.training.metrics import (
    ThresholdChoice,
    ThresholdedMetrics,
    binary_scores,
    choose_threshold,
    expected_calibration_error,
)

__all__ = ["ThresholdChoice", "ThresholdedMetrics", "binary_scores", "choose_threshold", "expected_calibration_error"]
