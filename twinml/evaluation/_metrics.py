"""Discrimination and calibration metrics, with subject-level bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from .._arrays import ragged_arange

__all__ = [
    "expected_calibration_error",
    "calibration_slope_intercept",
    "bootstrap_ci",
    "binary_metrics",
    "evaluate_risks",
]

_EPS = 1e-6


def expected_calibration_error(y_true, y_prob, *, n_bins: int = 10) -> float:
    """ECE with equal-mass bins: ``sum_b (n_b / n) * |mean(y_b) - mean(p_b)|``.

    >>> round(expected_calibration_error([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0], n_bins=2), 6)
    0.0
    """
    y, p = np.asarray(y_true, float), np.asarray(y_prob, float)
    if y.size == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, min(n_bins, y.size))
    return float(sum(b.size / y.size * abs(y[b].mean() - p[b].mean()) for b in bins if b.size))


def calibration_slope_intercept(y_true, y_prob) -> tuple[float, float]:
    """Slope and intercept of an unpenalised logistic fit of ``y`` on ``logit(p)`` (ideal: 1, 0)."""
    y, p = np.asarray(y_true, int), np.clip(np.asarray(y_prob, float), _EPS, 1 - _EPS)
    if np.unique(y).size < 2:
        return float("nan"), float("nan")
    logit = np.log(p / (1 - p)).reshape(-1, 1)
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(logit, y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def bootstrap_ci(metric, y_true, y_prob, *, groups=None, n_boot=200, alpha=0.05, seed=0):
    """Percentile interval of ``metric(y, p)`` resampling groups (subjects) with replacement.

    Rows of one subject move together, so repeated prediction times do not narrow the interval.
    ``n_boot=0`` skips the bootstrap (NaN bounds).
    """
    if n_boot == 0:
        return float("nan"), float("nan")
    y, p = np.asarray(y_true), np.asarray(y_prob)
    g = np.arange(y.size) if groups is None else np.asarray(groups)
    order = np.argsort(g, kind="stable")
    y, p, g = y[order], p[order], g[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, g.size])
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(0, starts.size, starts.size)
        rows = ragged_arange(starts[pick], sizes[pick])
        if np.unique(y[rows]).size < 2:
            continue
        stats.append(metric(y[rows], p[rows]))
    if not stats or len(stats) < n_boot // 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def binary_metrics(y_true, y_prob, *, groups=None, n_boot=200, ece_bins=10, seed=0) -> dict:
    """All headline metrics for one label: counts, AUROC/AUPRC with CIs, Brier, ECE, slope, intercept."""
    y, p = np.asarray(y_true, int), np.asarray(y_prob, float)
    out: dict[str, float] = {"n": int(y.size), "positives": int(y.sum())}
    if y.size == 0 or np.unique(y).size < 2:
        return out | {
            k: float("nan")
            for k in (
                "auroc",
                "auroc_lo",
                "auroc_hi",
                "auprc",
                "auprc_lo",
                "auprc_hi",
                "brier",
                "ece",
                "calibration_in_the_large",
                "calibration_slope",
                "calibration_intercept",
            )
        }
    out["auroc"] = float(roc_auc_score(y, p))
    out["auroc_lo"], out["auroc_hi"] = bootstrap_ci(roc_auc_score, y, p, groups=groups, n_boot=n_boot, seed=seed)
    out["auprc"] = float(average_precision_score(y, p))
    out["auprc_lo"], out["auprc_hi"] = bootstrap_ci(
        average_precision_score, y, p, groups=groups, n_boot=n_boot, seed=seed
    )
    out["brier"] = float(brier_score_loss(y, p))
    out["ece"] = expected_calibration_error(y, p, n_bins=ece_bins)
    out["calibration_in_the_large"] = float(y.mean() - p.mean())
    out["calibration_slope"], out["calibration_intercept"] = calibration_slope_intercept(y, p)
    return out


def evaluate_risks(
    labels: pd.DataFrame,
    risks: pd.DataFrame,
    *,
    columns,
    truth: pd.DataFrame | None = None,
    n_boot=200,
    ece_bins=10,
    seed=0,
) -> pd.DataFrame:
    """Metrics per label column on rows where the label is known.

    ``labels`` and ``risks`` are aligned row by row (same ``subject_id``, ``prediction_time``).
    With ``truth`` (the simulator's ground truth, plan ``observed``), the oracle AUROC on the same
    rows is added, and ``auroc_vs_oracle`` = model AUROC / oracle AUROC.
    """
    if not (labels["subject_id"].to_numpy() == risks["subject_id"].to_numpy()).all():
        raise ValueError("evaluate_risks: labels and risks must be aligned row by row (subject_id differs).")
    oracle = oracle_risks(labels, truth, columns) if truth is not None else None
    rows = []
    for c in columns:
        y = labels[c]
        known = y.notna().to_numpy()
        yk = y[known].astype(bool).to_numpy()
        pk = risks[c].to_numpy()[known]
        g = labels["subject_id"].to_numpy()[known]
        rec = {"label": c} | binary_metrics(yk, pk, groups=g, n_boot=n_boot, ece_bins=ece_bins, seed=seed)
        if oracle is not None and c in oracle:
            o = oracle[c].to_numpy()[known]
            ok = ~np.isnan(o)
            rec["oracle_n"] = int(ok.sum())
            rec["oracle_auroc"] = float(roc_auc_score(yk[ok], o[ok])) if np.unique(yk[ok]).size == 2 else float("nan")
            rec["model_auroc_on_oracle_rows"] = (
                float(roc_auc_score(yk[ok], pk[ok])) if np.unique(yk[ok]).size == 2 else float("nan")
            )
            rec["auroc_vs_oracle"] = rec["model_auroc_on_oracle_rows"] / rec["oracle_auroc"]
        rows.append(rec)
    return pd.DataFrame(rows)


def oracle_risks(labels, truth, columns):
    """The simulator's true risk of each label for each row of ``labels`` (None when ``truth`` has none).

    Read under the observed plan when ``truth`` holds several plans; NaN where a row has no truth.
    """
    observed = truth[truth["plan"] == "observed"] if "plan" in truth else truth
    cols = [c for c in columns if c in observed.columns]
    if not cols:
        return None
    merged = labels[["subject_id", "prediction_time"]].merge(
        observed[["subject_id", "prediction_time", *cols]], on=["subject_id", "prediction_time"], how="left"
    )
    return merged[cols]
