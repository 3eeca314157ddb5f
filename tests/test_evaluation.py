import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from twinml.evaluation import bootstrap_ci, calibration_slope_intercept, evaluate_risks, expected_calibration_error


@pytest.fixture
def calibrated():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.5, 50_000)
    return (rng.random(p.size) < p).astype(int), p


def test_ece_is_small_when_calibrated_and_large_when_not(calibrated):
    y, p = calibrated
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, p / 2) == pytest.approx(p.mean() / 2, rel=0.1)


def test_calibration_slope_recovers_overconfidence():
    rng = np.random.default_rng(1)
    logit = rng.normal(-2, 1, 50_000)
    y = (rng.random(logit.size) < 1 / (1 + np.exp(-2 * logit))).astype(int)  # true slope 2
    slope, intercept = calibration_slope_intercept(y, 1 / (1 + np.exp(-logit)))
    assert slope == pytest.approx(2.0, abs=0.1) and intercept == pytest.approx(0.0, abs=0.15)


def test_subject_bootstrap_is_wider_than_row_bootstrap_on_repeated_rows(calibrated):
    y, p = calibrated[0][:400], calibrated[1][:400]
    y5, p5, g5 = np.repeat(y, 5), np.repeat(p, 5), np.repeat(np.arange(400), 5)
    lo_r, hi_r = bootstrap_ci(roc_auc_score, y5, p5, n_boot=200)
    lo_s, hi_s = bootstrap_ci(roc_auc_score, y5, p5, groups=g5, n_boot=200)
    auc = roc_auc_score(y, p)
    assert lo_s < auc < hi_s
    assert (hi_s - lo_s) > 1.8 * (hi_r - lo_r)


def test_no_bootstrap_gives_nan_bounds_and_the_point_estimate(calibrated):
    y, p = calibrated
    assert np.isnan(bootstrap_ci(roc_auc_score, y, p, n_boot=0)).all()
    res = evaluate_risks(
        pd.DataFrame({"subject_id": np.arange(y.size), "x_365d": y}),
        pd.DataFrame({"subject_id": np.arange(y.size), "x_365d": p}),
        columns=["x_365d"],
        n_boot=0,
    )
    assert res["auroc"].iloc[0] == pytest.approx(roc_auc_score(y, p)) and np.isnan(res["auroc_lo"].iloc[0])


def test_oracle_comes_from_the_ground_truth_rows(small_cohort, events, task, splits):
    from twinml.cohort import build_labels

    labels = build_labels(events, task=task, subject_splits=splits).labels
    truth = small_cohort.truth
    observed = truth[truth["plan"] == "observed"].set_index(["subject_id", "prediction_time"])
    risks = labels[["subject_id", "prediction_time"]].copy()
    rng = np.random.default_rng(0)
    true = observed.reindex(pd.MultiIndex.from_frame(risks))["mi_365d"].to_numpy()
    risks["mi_365d"] = np.clip(true + rng.normal(0, 0.02, true.size), 0, 1)  # a noisy copy of the truth
    res = evaluate_risks(labels, risks, columns=["mi_365d"], truth=truth, n_boot=20).iloc[0]
    known = labels["mi_365d"].notna().to_numpy()
    assert res["oracle_auroc"] == pytest.approx(roc_auc_score(labels["mi_365d"][known].astype(bool), true[known]))
    assert res["oracle_n"] == res["n"]
    assert res["auroc"] < res["oracle_auroc"]  # noise can only cost discrimination here


def test_a_display_keeps_its_figure_and_gives_the_same_png_each_time():
    from twinml._plotting import pyplot
    from twinml.evaluation import ReliabilityDisplay

    rng = np.random.default_rng(0)
    risk = rng.uniform(0, 0.4, 400)
    labels = pd.DataFrame({"a": rng.uniform(size=400) < risk, "b": np.zeros(400, bool)})
    display = ReliabilityDisplay(labels, {"a": risk, "b": risk}, ["a", "b"], title="t").plot()
    axes = display.figure_.axes
    assert axes[0].get_title() == "a" and axes[1].get_title() == "b: one class only"
    open_before = len(pyplot().get_fignums())
    display.plot()  # drawn again: the first figure is closed, not left open
    assert len(pyplot().get_fignums()) == open_before
    first = display.png()  # the drawn figure, then closed
    assert display.figure_ is None and len(pyplot().get_fignums()) == open_before - 1
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and display.png() == first  # redrawn: the same bytes
