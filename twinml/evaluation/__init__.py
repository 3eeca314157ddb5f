"""Evaluation: discrimination and calibration with intervals, and the oracle ceiling on simulated data."""

from ._display import reliability_figure
from ._metrics import (binary_metrics, bootstrap_ci, calibration_slope_intercept, evaluate_risks,
                       expected_calibration_error)

__all__ = ["binary_metrics", "bootstrap_ci", "calibration_slope_intercept", "evaluate_risks",
           "expected_calibration_error", "reliability_figure"]
