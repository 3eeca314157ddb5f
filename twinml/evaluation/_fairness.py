"""Subgroup performance with fairlearn's MetricFrame, small-cell suppression and disparity summaries.

Groups come from the subjects' static codes (``GENDER//F`` -> sex ``F``) and their age at the
prediction time. A group with fewer than ``min_cell`` subjects, events or non-events is
*suppressed*: it keeps its name, and every number about it is replaced by the string
``"suppressed"``. When one group of a partition is suppressed, the next smallest is suppressed
too (secondary suppression), so its counts cannot be recovered from the total.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, false_positive_rate, true_positive_rate
from scipy.stats import chi2
from sklearn.metrics import precision_score, roc_auc_score

from .._validation import ConfigError
from ._metrics import bootstrap_ci, expected_calibration_error

MIN_CELL = 11  # default smallest count shown as a number (subjects, events, non-events)

__all__ = [
    "SUPPRESSED",
    "DEFAULT_ATTRIBUTES",
    "subject_attributes",
    "subgroup_metrics",
    "FairnessResult",
    "poisson_interval",
]

SUPPRESSED = "suppressed"
DEFAULT_ATTRIBUTES = {"sex": "GENDER//", "race": "RACE//", "ethnicity": "ETHNICITY//"}
COUNT_COLUMNS = ("n_rows", "n_subjects", "events")
METRIC_COLUMNS = (
    "auroc",
    "auroc_lo",
    "auroc_hi",
    "tpr",
    "fpr",
    "ppv",
    "calibration_in_the_large",
    "ece",
    "observed_expected",
    "observed_expected_lo",
    "observed_expected_hi",
    "mean_risk",
    "mean_true_risk",
    "true_risk_ratio",
)


def subject_attributes(
    events: pd.DataFrame, index: pd.DataFrame, *, attributes=None, age_bands=(18, 45, 65)
) -> pd.DataFrame:
    """Sensitive attributes of each row of ``index`` (``subject_id``, ``prediction_time``).

    Parameters
    ----------
    attributes : dict, optional
        Attribute name -> static code prefix; the group is the rest of the code (``RACE//Black`` ->
        ``Black``). Default :data:`DEFAULT_ATTRIBUTES`. Attributes no subject has are left out;
        subjects without one get ``unknown``.
    age_bands : sequence of int
        Lower edges of age bands at the prediction time (``age_band`` column, e.g. ``45-64``).
    """
    attributes = DEFAULT_ATTRIBUTES if attributes is None else attributes
    out = pd.DataFrame(index=range(len(index)))
    subjects = index["subject_id"].to_numpy()
    static = events[events["time"].isna()]
    codes = static["code"].astype(str)
    for name, prefix in attributes.items():
        hit = static[codes.str.startswith(prefix).to_numpy()]
        if hit.empty:
            continue
        first = (
            hit.assign(group=hit["code"].astype(str).str[len(prefix) :])
            .sort_values(["subject_id", "group"])
            .drop_duplicates("subject_id")
            .set_index("subject_id")["group"]
        )
        out[name] = pd.Series(subjects).map(first).fillna("unknown").to_numpy(object)
    if age_bands:
        out["age_band"] = _age_bands(events, index, age_bands)
    return out


def _age_bands(events, index, edges):
    birth = (
        events[events["code"].astype(str) == "MEDS_BIRTH"].drop_duplicates("subject_id").set_index("subject_id")["time"]
    )
    b = pd.Series(index["subject_id"].to_numpy()).map(birth).to_numpy("datetime64[us]")
    age = (index["prediction_time"].to_numpy("datetime64[us]") - b) / np.timedelta64(1, "D") / 365.25
    edges = sorted(edges)
    names = [f"<{edges[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
    pos = np.searchsorted(edges, np.nan_to_num(age, nan=-1.0), side="right")
    return np.where(np.isnan(age), "unknown", np.array(names, object)[pos])


def _safe(metric, y_true, y_pred):
    if np.unique(y_true).size < 2:
        return float("nan")
    return float(metric(y_true, y_pred))


def _n_subjects(y_true, y_pred, subject_id):
    return float(np.unique(subject_id).size)


def _mean_true(y_true, y_pred, true_risk):
    ok = ~np.isnan(true_risk)
    return float(true_risk[ok].mean()) if ok.any() else float("nan")


@dataclass
class FairnessResult:
    """Per-group metrics of one label (suppressed cells are the string ``"suppressed"``) and disparities.

    ``by_group`` has one row per (attribute, group), attribute ``overall`` first; intersections are
    named ``sex × race`` with groups ``F × Black``. ``disparities`` has, per attribute and metric,
    the best and worst unsuppressed groups, their difference and ratio (worst / best).

    ``unsuppressed`` holds the same table with every number, for decisions made inside the
    process (policy gates); it must never be written out or logged.
    """

    label: str
    threshold: float
    by_group: pd.DataFrame
    disparities: pd.DataFrame
    unsuppressed: pd.DataFrame


def subgroup_metrics(
    y_true,
    y_prob,
    attributes: pd.DataFrame,
    *,
    subject_id,
    label: str,
    threshold: float,
    true_risk=None,
    intersections=(),
    min_cell: int = MIN_CELL,
    n_boot: int = 100,
    seed: int = 0,
) -> FairnessResult:
    """AUROC (with bootstrap interval), TPR, FPR, PPV at ``threshold``, calibration per group.

    Parameters
    ----------
    y_true, y_prob : array-like
        Known labels and predicted risks of one label column.
    attributes : DataFrame
        From :func:`subject_attributes`, aligned with ``y_true``.
    subject_id : array-like
        Subject of each row (groups are counted in subjects, too).
    threshold : float
        Operating threshold: risk at or above it is a positive prediction.
    Each group also gets its observed / expected events (O/E: events over the sum of predicted
    risks) with an exact Poisson interval on the observed count.
    true_risk : array-like, optional
        Ground-truth probabilities (simulated data): adds mean true risk and the ratio of mean
        predicted to mean true risk per group.
    intersections : sequence of (str, str)
        Attribute pairs evaluated jointly.
    min_cell : int
        Smallest number of subjects, events and non-events a group may have and be shown.
    n_boot : int
        Bootstrap resamples of each group's AUROC interval; 0 skips it. Subjects are resampled (all
        of a subject's prediction times together), which MetricFrame's row bootstrap would not do.
    """
    y = np.asarray(y_true, int)
    p = np.asarray(y_prob, float)
    sid = np.asarray(subject_id)
    truth = np.full(y.size, np.nan) if true_risk is None else np.asarray(true_risk, float)
    pred = (p >= threshold).astype(int)
    frames = [_overall(y, p, pred, sid, truth)]
    partitions = [[c] for c in attributes.columns] + [list(pair) for pair in intersections]
    for cols in partitions:
        missing = [c for c in cols if c not in attributes.columns]
        if missing:
            raise ConfigError(
                f"fairness: intersection names attribute {missing[0]!r}, which the data do not have "
                f"(attributes: {list(attributes.columns)})."
            )
        frames.append(_partition(y, p, pred, sid, truth, attributes[cols], min_cell=min_cell, n_boot=n_boot, seed=seed))
    raw = pd.concat(frames, ignore_index=True)
    by_group = _suppress(raw)
    return FairnessResult(label, float(threshold), by_group, _disparities(by_group), raw)


def _metric_frame(y, p, pred, sid, truth, sensitive):
    scores = {
        "auroc": partial(_safe, roc_auc_score),
        "mean_risk": lambda t, s: float(np.mean(s)),
        "n_rows": lambda t, s: float(t.size),
        "events": lambda t, s: float(np.sum(t)),
        "ece": lambda t, s: expected_calibration_error(t, s),
        "calibration_in_the_large": lambda t, s: float(np.mean(t) - np.mean(s)),
        "n_subjects": _n_subjects,
        "mean_true_risk": _mean_true,
    }
    params = {"n_subjects": {"subject_id": sid}, "mean_true_risk": {"true_risk": truth}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fairlearn/sklearn warn on groups with one class; those give NaN
        point = MetricFrame(metrics=scores, y_true=y, y_pred=p, sensitive_features=sensitive, sample_params=params)
        rates = MetricFrame(
            metrics={
                "tpr": true_positive_rate,
                "fpr": false_positive_rate,
                "ppv": partial(precision_score, zero_division=np.nan),
            },
            y_true=y,
            y_pred=pred,
            sensitive_features=sensitive,
        )
    return point, rates


def _overall(y, p, pred, sid, truth):
    point, rates = _metric_frame(y, p, pred, sid, truth, np.zeros(y.size))
    row = {
        "attribute": "overall",
        "group": "all",
        **point.overall.to_dict(),
        **rates.overall.to_dict(),
        "suppressed": False,
    }
    row["auroc_lo"] = row["auroc_hi"] = float("nan")
    return _finish(pd.DataFrame([row]))


def _partition(y, p, pred, sid, truth, sensitive, *, min_cell, n_boot, seed):
    point, rates = _metric_frame(y, p, pred, sid, truth, sensitive)
    table = point.by_group.join(rates.by_group)
    table["auroc_lo"], table["auroc_hi"] = _group_auroc_ci(y, p, sid, sensitive, table.index, n_boot, seed)
    table = table[table["n_rows"].notna()].reset_index()  # MetricFrame lists empty intersections too
    names = list(sensitive.columns)
    table.insert(0, "group", table[names].astype(str).agg(" × ".join, axis=1))
    table.insert(0, "attribute", " × ".join(names))
    table = table.drop(columns=names)
    small = (
        (
            (table["n_subjects"] < min_cell)
            | (table["events"] < min_cell)
            | (table["n_rows"] - table["events"] < min_cell)
        )
        .to_numpy()
        .copy()
    )
    if small.sum() == 1 and len(table) > 1:  # secondary suppression: the total would reveal the one cell
        small[np.argsort(np.where(small, np.inf, table["n_rows"].to_numpy()))[0]] = True
    table["suppressed"] = small
    return _finish(table)


def _group_auroc_ci(y, p, sid, sensitive, groups, n_boot, seed):
    """Subject-level bootstrap interval of each group's AUROC (NaN where it cannot be computed)."""
    lo, hi = np.full(len(groups), np.nan), np.full(len(groups), np.nan)
    if not n_boot:
        return lo, hi
    keys = sensitive.astype(str).agg(" × ".join, axis=1).to_numpy()
    for i, g in enumerate(groups):
        rows = keys == " × ".join(map(str, g if isinstance(g, tuple) else (g,)))
        if np.unique(y[rows]).size == 2:
            lo[i], hi[i] = bootstrap_ci(roc_auc_score, y[rows], p[rows], groups=sid[rows], n_boot=n_boot, seed=seed)
    return lo, hi


def _finish(table):
    table["true_risk_ratio"] = table["mean_risk"] / table["mean_true_risk"]
    expected = table["mean_risk"] * table["n_rows"]
    lo, hi = poisson_interval(table["events"].to_numpy(float))
    table["observed_expected"] = table["events"] / expected
    table["observed_expected_lo"], table["observed_expected_hi"] = lo / expected, hi / expected
    for c in COUNT_COLUMNS:
        table[c] = table[c].astype(int)
    return table[["attribute", "group", *COUNT_COLUMNS, *METRIC_COLUMNS, "suppressed"]]


def _suppress(table):
    out = table.astype({c: object for c in (*COUNT_COLUMNS, *METRIC_COLUMNS)})
    out.loc[out["suppressed"], list(COUNT_COLUMNS) + list(METRIC_COLUMNS)] = SUPPRESSED
    return out


def poisson_interval(k, confidence=0.95):
    """Exact (Garwood) interval of a Poisson count ``k``: the observed events of an O/E ratio."""
    a = (1 - confidence) / 2
    lo = np.where(k > 0, chi2.ppf(a, 2 * k) / 2, 0.0)
    return lo, chi2.ppf(1 - a, 2 * k + 2) / 2


def _disparities(by_group: pd.DataFrame) -> pd.DataFrame:
    rows = []
    shown = by_group[(by_group["attribute"] != "overall") & ~by_group["suppressed"]]
    for attribute, part in shown.groupby("attribute", sort=False):
        for metric in (
            "auroc",
            "tpr",
            "fpr",
            "ppv",
            "calibration_in_the_large",
            "ece",
            "observed_expected",
            "true_risk_ratio",
        ):
            v = pd.to_numeric(part[metric], errors="coerce")
            ok = v.notna()
            if ok.sum() < 2:
                continue
            v, groups = v[ok], part["group"][ok]
            # "best" is the highest value, except for error-like metrics where it is the lowest
            # calibration-in-the-large: best is nearest 0; no ratio for a signed metric
            key = v.abs() if metric == "calibration_in_the_large" else v
            low_is_good = metric in ("fpr", "ece", "calibration_in_the_large")
            best, worst = (key.idxmin(), key.idxmax()) if low_is_good else (key.idxmax(), key.idxmin())
            hi = max(v[best], v[worst])
            signed = metric == "calibration_in_the_large"
            rows.append(
                {
                    "attribute": attribute,
                    "metric": metric,
                    "best_group": groups[best],
                    "best": float(v[best]),
                    "worst_group": groups[worst],
                    "worst": float(v[worst]),
                    "difference": float(abs(v[best] - v[worst])),
                    "ratio": float(min(v[best], v[worst]) / hi) if hi > 0 and not signed else float("nan"),
                }
            )
    return pd.DataFrame(
        rows, columns=["attribute", "metric", "best_group", "best", "worst_group", "worst", "difference", "ratio"]
    )
