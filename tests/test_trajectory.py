"""Trajectory forecasts: the targets' rule, the quantile head's contract, the oracle's readings."""

import numpy as np
import pandas as pd
import pytest

from twinml._validation import ConfigError
from twinml.features import readings_near_horizons
from twinml.models import RecordRiskModel
from twinml.simulate import simulate
from twinml.simulate._process import READING_NOISE_SD

from .conftest import split_rows

HBA1C, SBP = "LOINC/4548-4", "LOINC/8480-6"
SMALL = dict(d_model=16, max_epochs=2, batch_size=16, lr=3e-3, n_threads=1, random_state=1)


def _events(rows):
    df = pd.DataFrame(rows, columns=["subject_id", "time", "code", "numeric_value"])
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[us]")
    df["code"] = df["code"].astype("category")
    df["numeric_value"] = df["numeric_value"].astype("float32")
    return df.sort_values(["subject_id", "time"], kind="stable").reset_index(drop=True)


def test_target_is_the_reading_nearest_the_horizon_within_half_of_it_and_after_t():
    t = pd.Timestamp("2020-01-01")
    day = pd.Timedelta(days=1)
    ev = _events(
        [
            (1, t - 10 * day, HBA1C, 5.0),  # before t: never a target
            (1, t, HBA1C, 5.1),  # at t: not after it
            (1, t + 70 * day, HBA1C, 5.2),  # 90d: 20 days off
            (1, t + 95 * day, HBA1C, 5.3),  # 90d: 5 days off -> the target
            (1, t + 300 * day, HBA1C, 5.4),  # 365d: 65 days off, inside +/-182.5
            (1, t + 95 * day, SBP, 120.0),  # another code
            (2, t + 150 * day, HBA1C, 6.0),  # 90d window is [45, 135]: none; 180d: 30 days off; 365d: none
            (3, t + 30 * day, HBA1C, 7.0),  # subject 3 exists but has nothing in any window
        ]
    )
    index = pd.DataFrame({"subject_id": [1, 2, 3, 4], "prediction_time": [t] * 4}).astype(
        {"prediction_time": "datetime64[us]"}
    )
    values, times = readings_near_horizons(ev, index, [HBA1C, SBP], (90, 180, 365))
    np.testing.assert_allclose(values[0, 0], [5.3, 5.3, 5.4], rtol=1e-6)  # 180d: 95 (85 off) beats 300 (120 off)
    np.testing.assert_allclose(values[0, 1], [120.0, 120.0, np.nan], rtol=1e-6)  # 365d: 270 days off > 182.5
    np.testing.assert_allclose(values[1, 0], [np.nan, 6.0, np.nan], rtol=1e-6)  # 365d window starts at 182.5
    assert np.isnan(values[2]).all() and np.isnan(values[3]).all()
    assert times[0, 0, 0] == (t + 95 * day).value // 1000
    # nothing at or before t is ever a target, whatever the horizon
    early = readings_near_horizons(ev, index.assign(prediction_time=t + 300 * day), [HBA1C], (1, 30))[0]
    assert np.isnan(early[0]).all()


@pytest.fixture(scope="module")
def fitted(events, labels):
    train, tune = split_rows(labels, "train"), split_rows(labels, "tuning")
    with_head = RecordRiskModel(calibration="platt", trajectory_codes=[HBA1C, SBP], **SMALL)
    with_head.fit(events, train, tuning_labels=tune)
    return with_head, train, tune


def test_predict_trajectory_is_long_ordered_and_its_intervals_cover_the_tuning_rows(events, labels, fitted):
    model, _, tune = fitted
    index = tune[["subject_id", "prediction_time"]]
    tr = model.predict_trajectory(events, index)
    assert list(tr.columns) == [
        "subject_id",
        "prediction_time",
        "code",
        "horizon_days",
        "forecast",
        "lower_80",
        "upper_80",
    ]
    assert len(tr) == len(index) * 2 * 3
    assert (tr["lower_80"] <= tr["forecast"]).all() and (tr["forecast"] <= tr["upper_80"]).all()
    assert (tr["upper_80"] > tr["lower_80"]).mean() > 0.99
    # conformal calibration: on the rows it was set on, every code and horizon covers at least 80 %
    y, _ = readings_near_horizons(events, index, [HBA1C, SBP], (90, 180, 365))
    shape = (len(index), 2, 3)
    lo, hi = (tr[c].to_numpy().reshape(shape) for c in ("lower_80", "upper_80"))
    seen = ~np.isnan(y)
    cover = ((lo <= y) & (y <= hi) & seen).sum(axis=0) / seen.sum(axis=0)
    assert (cover >= 0.8).all(), cover
    assert (cover <= 0.9).all(), cover  # and not by being needlessly wide
    # forecasts are in the code's units: HbA1c around 5-7 %, systolic BP around 110-150 mm Hg
    med = tr.groupby("code")["forecast"].median()
    assert 4.5 < med[HBA1C] < 8 and 100 < med[SBP] < 160
    # one pass for both outputs (batch scoring) gives exactly what the two calls give
    risk, both = model.predict_risk_and_trajectory(events, index)
    pd.testing.assert_frame_equal(both, tr)
    pd.testing.assert_frame_equal(risk, model.predict_risk(events, index))
    # a selection of codes and horizons is the same numbers
    sub = model.predict_trajectory(events, index.iloc[:5], codes=[SBP], horizons_days=[180])
    full = tr[(tr["code"] == SBP) & (tr["horizon_days"] == 180)].iloc[:5]
    np.testing.assert_allclose(sub["forecast"].to_numpy(), full["forecast"].to_numpy(), rtol=1e-6)


def test_the_trajectory_head_leaves_the_risk_scores_and_the_torch_stream_as_they_were(events, labels, fitted):
    import torch

    model, train, tune = fitted
    plain = RecordRiskModel(calibration="platt", trajectory_codes=None, **SMALL).fit(events, train, tuning_labels=tune)
    after_plain = torch.random.get_rng_state()
    RecordRiskModel(calibration="platt", trajectory_codes=[HBA1C], **SMALL).fit(events, train, tuning_labels=tune)
    assert torch.equal(torch.random.get_rng_state(), after_plain)
    index = split_rows(labels, "held_out")[["subject_id", "prediction_time"]]
    a, b = model.predict_risk(events, index), plain.predict_risk(events, index)
    np.testing.assert_array_equal(a[model.label_columns_].to_numpy(), b[plain.label_columns_].to_numpy())
    with pytest.raises(ConfigError, match="no trajectory forecasts"):
        plain.predict_trajectory(events, index)
    assert plain.trajectory_codes_ == []


def test_trajectory_requests_and_codes_are_checked(events, labels, fitted):
    model, train, tune = fitted
    index = tune[["subject_id", "prediction_time"]].iloc[:3]
    with pytest.raises(ConfigError, match=r"code 'LOINC/0000-0' is not forecast by this model; it forecasts"):
        model.predict_trajectory(events, index, codes=["LOINC/0000-0"])
    with pytest.raises(ConfigError, match="horizon 730 is not forecast"):
        model.predict_trajectory(events, index, horizons_days=[730])
    with pytest.raises(ConfigError, match="'MEDS_BIRTH' is not a numeric code"):
        RecordRiskModel(trajectory_codes=["MEDS_BIRTH"], **SMALL).fit(events, train, tuning_labels=tune)
    with pytest.raises(ConfigError, match="must be non-empty"):
        model.predict_trajectory(events, index, codes=[])
    with pytest.raises(ConfigError, match="distinct code strings"):
        RecordRiskModel(trajectory_codes=[HBA1C, HBA1C], **SMALL).fit(events, train, tuning_labels=tune)
    with pytest.raises(ConfigError, match="trajectory_horizons_days"):
        RecordRiskModel(trajectory_horizons_days=[90, 90], **SMALL).fit(events, train, tuning_labels=tune)


def test_the_simulators_reading_truth_is_each_reading_without_its_noise():
    c = simulate(n_subjects=400, seed=5)
    ev = c.events.to_pandas()
    numeric = ev[ev["time"].notna() & ev["numeric_value"].notna()]
    assert len(c.readings) == len(numeric)  # one truth row per dynamic reading, none missing
    m = numeric.merge(
        c.readings.assign(code=c.readings["code"].astype(str)),
        on=["subject_id", "time", "code"],
        how="left",
        validate="one_to_one",
    )
    assert m["expected_value"].notna().all()
    from twinml.simulate._codes import MEASUREMENTS

    resid = (m["numeric_value"] - m["expected_value"]).groupby(m["code"]).std()
    for name, (code, _, _) in MEASUREMENTS.items():
        assert abs(resid[code] / READING_NOISE_SD[name] - 1) < 0.1, (name, resid[code])


def test_reading_history_matches_a_direct_computation():
    from types import SimpleNamespace

    from twinml.models._trajectory import _YEAR_US

    rng = np.random.default_rng(0)
    n_ev = 400
    code = rng.integers(2, 5, n_ev).astype(np.int32)
    has = (rng.random(n_ev) < 0.8).astype(np.float32)
    value = rng.standard_normal(n_ev).astype(np.float32)
    subj_start = np.array([0, 120, 250, 251, 330, 400])  # five subjects' events (one with one event)
    time = np.concatenate([np.sort(rng.integers(0, 40, b - a)) for a, b in zip(subj_start[:-1], subj_start[1:])])
    time = (time * _YEAR_US / 4).astype(np.int64)
    with_rows = [0, 1, 2, 4]  # subject 3 has no prediction row: its readings join no other subject's
    rows_hi = np.concatenate([np.linspace(subj_start[i], subj_start[i + 1], 5).astype(int) for i in with_rows])
    rows_end = np.repeat(subj_start[np.array(with_rows) + 1], 5)
    whole = np.repeat(subj_start[with_rows], 5)
    # whole-record rows start at the subject's first event; the last-max_len-events models' rows
    # start later, overlapping each other: a row's value must not depend on the other rows
    for rows_lo in (whole, np.maximum(whole, rows_hi - 40)):
        for pick in (np.arange(rows_hi.size), np.arange(rows_hi.size)[::3]):
            data = SimpleNamespace(
                lo=rows_lo[pick],
                hi=rows_hi[pick],
                end=rows_end[pick],
                code=code,
                has_value=has,
                value=value,
                time=time,
                prediction_time=time[np.maximum(rows_hi[pick] - 1, 0)] + 86_400_000_000,
            )
            _check_history(data, code, has, value, time)
            _check_recency(data, code, time)


def _check_recency(data, code, time):
    """The head's context: each code's presence, days since its last occurrence and count in the window."""
    from twinml.models._trajectory import code_recency

    codes = np.array([2, 3, 9], np.int32)  # 9 never occurs
    got = code_recency(data, codes)
    for r in range(data.lo.size):
        for k, c in enumerate(codes):
            e = np.arange(data.lo[r], data.hi[r])
            e = e[code[e] == c]
            want = np.zeros(3)
            if e.size:
                want = [1.0, np.log1p((data.prediction_time[r] - time[e[-1]]) / 86_400e6) / 10, np.log1p(e.size) / 3]
            np.testing.assert_allclose(got[r, 3 * k : 3 * k + 3], want, rtol=1e-5, atol=1e-6)


def _check_history(data, code, has, value, time):
    from twinml.models._trajectory import _DECAYS_YEARS, _YEAR_US, reading_history

    rows_lo, rows_hi = data.lo, data.hi
    codes = np.array([2, 4], np.int32)
    got = reading_history(data, codes)
    for r in range(rows_lo.size):
        for k, c in enumerate(codes):
            e = np.arange(rows_lo[r], rows_hi[r])
            e = e[(code[e] == c) & (has[e] > 0)]
            want = np.zeros(4)
            want[1] = np.log1p(e.size) / 3
            if e.size:
                want[0] = value[e].mean()
                for j, tau in enumerate(_DECAYS_YEARS):
                    w = np.exp(-(time[e[-1]] - time[e]) / _YEAR_US / tau)
                    want[2 + j] = (w * value[e]).sum() / w.sum()
            np.testing.assert_allclose(got[r, 4 * k : 4 * k + 4], want, rtol=1e-5, atol=1e-6)
