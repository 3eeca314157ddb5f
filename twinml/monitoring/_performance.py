"""Performance over calendar time: earlier scores of a panel against the outcomes that have since arrived.

Each scores file was written at an as-of time; its subjects are labelled at that time by the model's
own task (the same eligibility, prior-outcome and censoring rules as training: a subject not followed
through the horizon is left out, never counted as a negative). Rows are pooled by calendar period
(quarter or month of the as-of time) and, per period and label, the report gives AUROC with a
bootstrap interval over subjects, observed / expected events (O/E) with an exact Poisson interval,
and the calibration slope with a Wald interval. A period with fewer than ``min_cell`` events or
non-events shows no numbers.

From the latest reported period of each label it recommends: **retrain** when discrimination has
credibly dropped by more than ``max_auroc_drop`` since the first period (the lower end of the 95 %
interval of the first period's AUROC minus the latest's is above it; both periods' uncertainty counts),
else **recalibrate** when O/E is credibly outside ``[min_oe, max_oe]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from .._validation import ConfigError

__all__ = ["performance_over_time", "recommendations", "label_scores", "auroc_drop_lower"]

_EPS = 1e-6
PERIODS = {"quarter": "Q", "month": "M"}


def label_scores(scores_files, events: pd.DataFrame, task, *, attrition: list | None = None) -> pd.DataFrame:
    """Every scored subject of every file with its label at the file's as-of time, long format:
    ``subject_id``, ``as_of``, ``label``, ``risk``, ``outcome`` (censored and prior-outcome rows dropped).

    ``attrition`` (a list) receives one dict per file: subjects scored, of them absent from ``events``,
    eligible under the task's rules at the as-of time, and labelled per label column.
    """
    from ..cohort import SplitDefinition, build_labels
    from ..scoring import SCORED, read_score_metadata

    if task.labels is not None:
        raise ConfigError(
            "monitor: performance over time needs a task that defines its outcomes by codes, not label files"
        )
    task = task.model_copy(update={"split": SplitDefinition(strategy="random")})
    present = events["subject_id"].unique()
    rows = []
    for path in scores_files:
        as_of = pd.Timestamp(read_score_metadata(path)["as_of"])
        scores = pd.read_parquet(path)
        columns = [c for c in task.label_columns if c in scores.columns]
        if not columns:
            raise ConfigError(
                f"monitor: {path} has none of the task's label columns {list(task.label_columns)} "
                "(is it scored by this model?)"
            )
        scores = scores[scores["status"] == SCORED]
        at = pd.DataFrame({"subject_id": scores["subject_id"].to_numpy(np.int64), "prediction_time": as_of})
        known = at["subject_id"].isin(present)
        labels = build_labels(events, task=task, at=at[known]).labels
        merged = labels.merge(scores[["subject_id", *columns]], on="subject_id", suffixes=("", "_risk"))
        counts = {"file": str(path), "as_of": str(as_of), "scored": len(at), "not_in_outcomes": int((~known).sum())}
        counts["eligible"] = len(labels)
        for c in columns:
            y = merged[c]
            keep = y.notna().to_numpy()
            counts[f"labelled {c}"] = int(keep.sum())
            rows.append(
                pd.DataFrame(
                    {
                        "subject_id": merged["subject_id"].to_numpy()[keep],
                        "as_of": as_of,
                        "label": c,
                        "risk": merged[f"{c}_risk"].to_numpy(float)[keep],
                        "outcome": y.to_numpy()[keep].astype(int),
                    }
                )
            )
        if attrition is not None:
            attrition.append(counts)
    long = pd.concat(rows, ignore_index=True)
    if long.empty:
        raise ConfigError("monitor: no scored subject of the history files could be labelled (all censored?)")
    return long


def _slope(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    """Calibration slope (logistic fit of y on logit p) with its 95% Wald interval."""
    z = np.log(np.clip(p, _EPS, 1 - _EPS) / np.clip(1 - p, _EPS, 1))
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(z.reshape(-1, 1), y)
    x = np.column_stack([np.ones_like(z), z])
    q = fit.predict_proba(z.reshape(-1, 1))[:, 1]
    info = x.T @ (x * (q * (1 - q))[:, None])
    se = float(np.sqrt(np.linalg.inv(info)[1, 1]))
    b = float(fit.coef_[0, 0])
    return b, b - 1.96 * se, b + 1.96 * se


def _cell(y, p, sid, *, n_boot, seed) -> dict:
    from ..evaluation import bootstrap_ci, poisson_interval

    observed, expected = float(y.sum()), float(p.sum())
    lo, hi = poisson_interval(np.array([observed]))
    auroc_lo, auroc_hi = bootstrap_ci(roc_auc_score, y, p, groups=sid, n_boot=n_boot, seed=seed)
    slope, slope_lo, slope_hi = _slope(y, p)
    return {
        "auroc": float(roc_auc_score(y, p)),
        "auroc_lo": auroc_lo,
        "auroc_hi": auroc_hi,
        "observed_expected": observed / expected,
        "oe_lo": float(lo[0]) / expected,
        "oe_hi": float(hi[0]) / expected,
        "calibration_slope": slope,
        "slope_lo": slope_lo,
        "slope_hi": slope_hi,
        "mean_risk": float(p.mean()),
        "event_rate": float(y.mean()),
    }


def performance_over_time(
    long: pd.DataFrame, *, period: str = "quarter", n_boot: int = 200, min_cell: int, seed: int = 0
):
    """Per calendar period and label: counts and, where no cell is small, the metrics of :func:`_cell`."""
    if period not in PERIODS:
        raise ConfigError(f"monitor: period must be one of {list(PERIODS)}; got {period!r}")
    long = long.assign(period=long["as_of"].dt.to_period(PERIODS[period]).astype(str))
    out = []
    for (label, when), g in long.groupby(["label", "period"], sort=True):
        y, p = g["outcome"].to_numpy(), g["risk"].to_numpy()
        row = {"label": label, "period": when, "as_of_times": int(g["as_of"].nunique()), "n": int(y.size)}
        events, non_events = int(y.sum()), int(y.size - y.sum())
        if min(events, non_events) < min_cell:
            out.append(row | {"n": None, "events": None, "suppressed": True})
            continue
        cell = _cell(y, p, g["subject_id"].to_numpy(), n_boot=n_boot, seed=seed)
        out.append(row | {"events": events, "suppressed": False} | cell)
    return out


def auroc_drop_lower(first: dict, last: dict, z: float = 1.96) -> float:
    """The lower end of the 95 % interval of ``first`` AUROC minus ``last`` AUROC, each period's standard
    error read off its bootstrap interval (normal approximation; the periods taken as independent, which
    overstates the error when they share subjects, so the test errs towards "no drop"); NaN without
    intervals."""
    se = [(r["auroc_hi"] - r["auroc_lo"]) / (2 * z) for r in (first, last)]
    return float(first["auroc"] - last["auroc"] - z * np.hypot(*se))


def recommendations(rows: list[dict], *, min_oe: float, max_oe: float, max_auroc_drop: float) -> list[dict]:
    """For each label, from its latest reported period: recalibrate, retrain, or nothing (with why)."""
    out = []
    for label in dict.fromkeys(r["label"] for r in rows):
        shown = [r for r in rows if r["label"] == label and not r["suppressed"]]
        if not shown:
            out.append({"label": label, "action": "none", "why": "no period with enough events to judge"})
            continue
        first, last = shown[0], shown[-1]
        drop, drop_lo = first["auroc"] - last["auroc"], auroc_drop_lower(first, last)
        held = np.isnan(drop_lo) or drop_lo <= max_auroc_drop
        off = last["oe_lo"] > max_oe or last["oe_hi"] < min_oe
        if not held:
            action = "retrain"
            why = (
                f"AUROC {last['auroc']:.3f} in {last['period']} against {first['auroc']:.3f} in {first['period']}: "
                f"a drop of {drop:.3f}, credibly more than {max_auroc_drop} (95% interval from {drop_lo:.3f})"
            )
        elif off:
            action = "recalibrate"
            why = (
                f"O/E {last['observed_expected']:.2f} [{last['oe_lo']:.2f}, {last['oe_hi']:.2f}] in {last['period']} "
                f"is outside [{min_oe}, {max_oe}] while AUROC holds ({last['auroc']:.3f})"
            )
        else:
            action, why = "none", f"calibration and discrimination hold in {last['period']}"
        out.append({"label": label, "action": action, "why": why, "period": last["period"]})
    return out
