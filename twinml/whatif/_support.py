"""The what-if model's overlap rule: where the data can say what a plan would do.

A plan is *outside support* for a row when the estimated propensity is below the ``support_quantile``
of the propensities of the training rows that received it (and below ``min_propensity`` in any
case), when fewer than ``min_recipients`` training rows received the plan, when the patient is
already on its treatment, or (for effects) when the reference plan itself is outside support.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["support_thresholds", "support_flags"]


def support_thresholds(
    prop: np.ndarray, plan: np.ndarray, *, min_recipients: int, min_propensity: float, quantile: float
) -> np.ndarray:
    """Per plan, the propensity below which it is outside support (inf: too few recipients for anyone)."""
    out = np.empty(prop.shape[1])
    for i in range(prop.shape[1]):
        got = prop[plan == i, i]
        if got.size < min_recipients:
            out[i] = np.inf  # too few recipients: not estimable for anyone
        else:
            out[i] = max(min_propensity, float(np.quantile(got, quantile)))
    return out


def support_flags(
    prop: np.ndarray, already: pd.DataFrame, thresholds: np.ndarray, plan_names, *, min_recipients: int
) -> tuple[np.ndarray, np.ndarray]:
    """(in_support, reason) per (row, plan); ``already`` holds ``already_on/<plan>`` columns
    (:func:`twinml.cohort.factual_plans`); the reason is "" in support."""
    n, p = prop.shape
    reason = np.full((n, p), "", dtype=object)
    low = prop < thresholds[None, :]
    reason[low] = "propensity below the support threshold"
    for i, name in enumerate(plan_names):
        if not np.isfinite(thresholds[i]):
            reason[:, i] = f"fewer than {min_recipients} training patients received it"
        on = already[f"already_on/{name}"].to_numpy()
        reason[on, i] = "already on this treatment"
    # an effect compares two arms: without the reference in support no effect is estimable
    no_ref = (reason[:, 0] != "")[:, None] & (reason[:, 1:] == "")
    reason[:, 1:][no_ref] = "the reference plan is outside support"
    return reason == "", reason
