"""Evaluation: discrimination, calibration, subgroup fairness and explanations, and the oracle ceiling on
simulated data."""

from ._calibration import calibration_summary, reliability_table
from ._display import ReliabilityDisplay, reliability_figure
from ._explain import Attributions, code_importance, explain_model, patient_drivers, window_importance
from ._fairness import (
    DEFAULT_ATTRIBUTES,
    MIN_CELL,
    SUPPRESSED,
    FairnessResult,
    poisson_interval,
    subgroup_metrics,
    subject_attributes,
)
from ._faithfulness import faithfulness
from ._membership import membership_attack, membership_audit, reference_attack, subject_losses
from ._metrics import (
    binary_metrics,
    bootstrap_ci,
    calibration_slope_intercept,
    evaluate_risks,
    expected_calibration_error,
    oracle_risks,
)
from ._mitigation import RiskColumnClassifier, threshold_tradeoff
from ._predictions import PREDICTION_SCHEMA, meds_predictions, write_meds_predictions

__all__ = [
    "binary_metrics",
    "membership_attack",
    "reference_attack",
    "membership_audit",
    "subject_losses",
    "bootstrap_ci",
    "poisson_interval",
    "calibration_slope_intercept",
    "evaluate_risks",
    "expected_calibration_error",
    "oracle_risks",
    "reliability_figure",
    "ReliabilityDisplay",
    "reliability_table",
    "calibration_summary",
    "subject_attributes",
    "subgroup_metrics",
    "FairnessResult",
    "SUPPRESSED",
    "DEFAULT_ATTRIBUTES",
    "MIN_CELL",
    "threshold_tradeoff",
    "RiskColumnClassifier",
    "explain_model",
    "Attributions",
    "code_importance",
    "window_importance",
    "patient_drivers",
    "faithfulness",
    "meds_predictions",
    "write_meds_predictions",
    "PREDICTION_SCHEMA",
]


def __getattr__(name):
    # the effect scores moved to twinml.whatif; imports from here keep working
    if name in ("true_plan_risks", "effect_scores", "policy_value"):
        from .. import whatif

        return getattr(whatif, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
