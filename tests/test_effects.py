"""Scoring treatment effects against the simulator's counterfactual truth (twinml.whatif._effects),
on cases small enough to work out by hand."""

import numpy as np
import pandas as pd
import pytest

from twinml.whatif import effect_scores, policy_value, true_plan_risks

T0, T1 = pd.Timestamp("2012-01-01"), pd.Timestamp("2013-01-01")


def _truth():
    rows = [
        (1, T0, "none", 0.30),
        (1, T0, "statin", 0.20),
        (1, T1, "none", 0.40),  # no statin row at T1: unknown
        (2, T0, "none", 0.10),
        (2, T0, "statin", 0.12),
        (2, T0, "observed", 0.11),  # not an asked plan
    ]
    return pd.DataFrame(rows, columns=["subject_id", "prediction_time", "plan", "mi_365d"])


def test_true_plan_risks_follows_the_index_and_leaves_unknowns_nan():
    index = pd.DataFrame({"subject_id": [2, 1, 1, 3], "prediction_time": [T0, T0, T1, T0]})
    got = true_plan_risks(_truth(), index, ["none", "statin"], "mi_365d")
    want = np.array([[0.10, 0.12], [0.30, 0.20], [0.40, np.nan], [np.nan, np.nan]])
    np.testing.assert_allclose(got, want)
    # a plan the truth never names is a column of NaN, not an error
    assert np.isnan(true_plan_risks(_truth(), index, ["none", "metformin"], "mi_365d")[:, 1]).all()


def test_effect_scores_use_only_supported_rows_with_known_truth():
    effect = np.array([-0.10, 0.00, 0.50, -0.20])
    true_effect = np.array([-0.05, 0.04, 0.00, np.nan])
    support = np.array([True, True, False, True])  # row 2 out of support, row 3 truth unknown
    lo, hi = effect - 0.06, effect + 0.06
    got = effect_scores(effect, true_effect, support, lo, hi)
    assert got["n"] == 2
    assert got["pehe"] == pytest.approx(np.sqrt((0.05**2 + 0.04**2) / 2))
    assert got["ate_true"] == pytest.approx(-0.005) and got["ate_est"] == pytest.approx(-0.05)
    assert got["ate_error"] == pytest.approx(0.045)
    assert got["coverage"] == pytest.approx(1.0)  # both inside +-0.06
    assert np.isnan(effect_scores(effect, true_effect, support)["coverage"])  # no band given


def test_policy_value_against_the_oracle():
    # plans: reference, A, B; true risks per row
    true_risk = np.array([[0.30, 0.20, 0.25], [0.10, 0.15, 0.05], [0.20, 0.10, np.nan]])
    est_effect = np.array([[0.0, -0.05, -0.10], [0.0, -0.01, 0.02], [0.0, -0.10, -0.20]])
    support = np.array([[True, True, True], [True, True, False], [True, True, True]])
    got = policy_value(est_effect, true_risk, support)
    # row 2 has an unknown true risk: dropped. Row 0 picks B (-0.10): gain 0.05, oracle A: 0.10.
    # Row 1 may not choose B: picks A (-0.01), gain -0.05; the oracle among {ref, A} keeps the reference: 0.
    assert got["rows"] == 2
    assert got["reduction"] == pytest.approx((0.05 - 0.05) / 2)
    assert got["oracle_reduction"] == pytest.approx(0.05)
    assert got["oracle_any_plan"] == pytest.approx((0.10 + 0.05) / 2)
    assert got["share_of_oracle"] == pytest.approx(0.0)
    assert got["treated_share"] == pytest.approx(1.0)
