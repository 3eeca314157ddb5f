"""Does the model leak who was in its training set? A loss-threshold membership-inference attack on subjects.

A model that memorised its training subjects gives them a lower loss than subjects it never saw. The
attack scores each subject by minus its mean log loss (over its prediction times and known labels) and
tries to tell training subjects (members) from held-out ones (non-members) by that score alone. Its
AUROC is the audit's measure of leakage: 0.5 is no better than a coin. Reported with a bootstrap
interval over subjects and the true-positive rate at a false-positive rate of 1 % and 0.1 % (the
low-FPR regime is where membership inference matters: a confident claim about a few people).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from ._metrics import bootstrap_ci

__all__ = ["subject_losses", "membership_attack"]

_EPS = 1e-7


def subject_losses(labels: pd.DataFrame, risks: pd.DataFrame, columns) -> pd.Series:
    """Each subject's mean binary log loss over its rows and the ``columns`` whose label is known."""
    total = np.zeros(len(labels))
    count = np.zeros(len(labels))
    for c in columns:
        y = labels[c].to_numpy(dtype=float, na_value=np.nan)
        p = np.clip(risks[c].to_numpy(float), _EPS, 1 - _EPS)
        known = ~np.isnan(y)
        loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
        total += np.where(known, loss, 0.0)
        count += known
    frame = pd.DataFrame({"subject_id": labels["subject_id"].to_numpy(), "loss": total, "n": count})
    grouped = frame.groupby("subject_id", sort=True)[["loss", "n"]].sum()
    grouped = grouped[grouped["n"] > 0]
    return grouped["loss"] / grouped["n"]


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest true-positive rate at a false-positive rate of at most ``target``."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def membership_attack(member_losses: pd.Series, non_member_losses: pd.Series, *, n_boot: int = 200, seed: int = 0):
    """The loss-threshold attack's AUROC (with a 95 % bootstrap interval over subjects) and its TPR at
    FPR 1 % and 0.1 %, from per-subject losses of members and non-members."""
    y = np.r_[np.ones(member_losses.size), np.zeros(non_member_losses.size)]
    score = -np.r_[member_losses.to_numpy(), non_member_losses.to_numpy()]
    out = {"attack": "loss threshold", "members": int(member_losses.size), "non_members": int(non_member_losses.size)}
    if member_losses.empty or non_member_losses.empty:
        return out | {"auc": float("nan"), "auc_lo": float("nan"), "auc_hi": float("nan")}
    lo, hi = bootstrap_ci(roc_auc_score, y, score, n_boot=n_boot, seed=seed)
    fpr, tpr, _ = roc_curve(y, score)
    return out | {
        "auc": float(roc_auc_score(y, score)),
        "auc_lo": lo,
        "auc_hi": hi,
        "tpr_at_fpr_1pct": _tpr_at(fpr, tpr, 0.01),
        "tpr_at_fpr_0_1pct": _tpr_at(fpr, tpr, 0.001),
    }
