"""Calibration per outcome and horizon: summary numbers and reliability curves with confidence bands."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from ._metrics import calibration_slope_intercept, expected_calibration_error

__all__ = ["reliability_table", "calibration_summary"]


def reliability_table(y_true, y_prob, *, n_bins: int = 10, confidence: float = 0.95) -> pd.DataFrame:
    """Equal-mass bins of predicted risk: mean prediction, observed rate and its Wilson interval.

    Parameters
    ----------
    y_true, y_prob : array-like
        Binary outcomes and predicted probabilities of the rows where the label is known.
    n_bins : int
        Bins of (about) equal size, by predicted risk.
    confidence : float
        Level of the observed rate's Wilson score interval.

    Returns
    -------
    DataFrame with ``bin``, ``n``, ``events``, ``mean_predicted``, ``observed``, ``observed_lo``, ``observed_hi``.

    >>> reliability_table([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], n_bins=2)[["n", "events", "observed"]]
       n  events  observed
    0  2       0       0.0
    1  2       2       1.0
    """
    y, p = np.asarray(y_true, int), np.asarray(y_prob, float)
    rows = []
    if y.size:
        order = np.argsort(p, kind="stable")
        for i, b in enumerate(np.array_split(order, min(n_bins, y.size))):
            k, n = int(y[b].sum()), int(b.size)
            ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
            rows.append(
                {
                    "bin": i,
                    "n": n,
                    "events": k,
                    "mean_predicted": float(p[b].mean()),
                    "observed": k / n,
                    "observed_lo": float(ci.low),
                    "observed_hi": float(ci.high),
                }
            )
    return pd.DataFrame(
        rows, columns=["bin", "n", "events", "mean_predicted", "observed", "observed_lo", "observed_hi"]
    )


def calibration_summary(y_true, y_prob, *, n_bins: int = 10) -> dict:
    """Brier score, ECE (equal-mass bins), calibration-in-the-large, slope and intercept of one label.

    Calibration-in-the-large is observed rate minus mean prediction (negative: over-prediction).
    """
    y, p = np.asarray(y_true, int), np.asarray(y_prob, float)
    if y.size == 0:
        return {
            k: float("nan")
            for k in ("brier", "ece", "calibration_in_the_large", "calibration_slope", "calibration_intercept")
        } | {"n": 0, "events": 0}
    slope, intercept = calibration_slope_intercept(y, p)
    return {
        "n": int(y.size),
        "events": int(y.sum()),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p, n_bins=n_bins),
        "calibration_in_the_large": float(y.mean() - p.mean()),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }
