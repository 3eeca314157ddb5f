"""What group-specific thresholds would buy: fairlearn's ThresholdOptimizer as a trade-off table.

Nothing here changes a model. The optimizer is fitted on one set of rows (the tuning split)
and judged on another (the audited split), next to the single threshold in use, so a reader
sees what each fairness constraint would cost in overall TPR, PPV and balanced accuracy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import balanced_accuracy_score, precision_score

__all__ = ["threshold_tradeoff", "RiskColumnClassifier"]


class RiskColumnClassifier(ClassifierMixin, BaseEstimator):
    """A fitted model's risk, read from column 0 of ``X``: lets ThresholdOptimizer post-process scores."""

    def fit(self, X, y=None):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = np.asarray(X, float)[:, 0]
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def _summary(name, y, pred, groups, shown):
    keep = np.isin(groups, shown)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = MetricFrame(
            metrics={"tpr": true_positive_rate, "fpr": false_positive_rate},
            y_true=y[keep],
            y_pred=pred[keep],
            sensitive_features=groups[keep],
        )
        ppv = precision_score(y, pred, zero_division=np.nan)
    diff = mf.difference()
    return {
        "policy": name,
        "tpr": float(true_positive_rate(y, pred)),
        "fpr": float(false_positive_rate(y, pred)),
        "ppv": float(ppv),
        "selection_rate": float(selection_rate(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "tpr_difference": float(diff["tpr"]),
        "fpr_difference": float(diff["fpr"]),
    }


def threshold_tradeoff(
    y_fit,
    p_fit,
    groups_fit,
    y_eval,
    p_eval,
    groups_eval,
    *,
    threshold: float,
    shown_groups,
    constraints=("true_positive_rate_parity", "equalized_odds"),
    seed: int = 0,
) -> pd.DataFrame:
    """One row per policy: the current single threshold, then ThresholdOptimizer under each constraint.

    Parameters
    ----------
    y_fit, p_fit, groups_fit : the rows the optimizer is fitted on (labels, risks, group of each row).
    y_eval, p_eval, groups_eval : the rows every policy is judged on.
    threshold : the operating threshold in use.
    shown_groups : groups large enough to be shown; TPR / FPR differences are taken among them only.
    constraints : fairlearn constraint names; the objective is balanced accuracy.

    Columns: overall ``tpr``, ``fpr``, ``ppv``, ``selection_rate``, ``balanced_accuracy``, and the
    largest between-group ``tpr_difference`` and ``fpr_difference``.
    """
    y_fit, y_eval = np.asarray(y_fit, int), np.asarray(y_eval, int)
    g_fit, g_eval = np.asarray(groups_fit, object), np.asarray(groups_eval, object)
    p_eval = np.asarray(p_eval, float)
    rows = [
        _summary(
            f"single threshold {threshold:.4f} (in use)",
            y_eval,
            (p_eval >= threshold).astype(int),
            g_eval,
            shown_groups,
        )
    ]
    score = RiskColumnClassifier().fit(None)
    for c in constraints:
        opt = ThresholdOptimizer(
            estimator=score,
            constraints=c,
            objective="balanced_accuracy_score",
            prefit=True,
            predict_method="predict_proba",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.fit(np.asarray(p_fit, float)[:, None], y_fit, sensitive_features=g_fit)
            pred = opt.predict(p_eval[:, None], sensitive_features=g_eval, random_state=seed)
        rows.append(_summary(f"ThresholdOptimizer({c})", y_eval, np.asarray(pred, int), g_eval, shown_groups))
    return pd.DataFrame(rows)
