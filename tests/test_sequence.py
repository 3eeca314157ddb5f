import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from twinml.features import SequenceFeaturizer
from twinml.models import SequenceRiskModel
from twinml.models._hazard import hazard_loss, risk_curve

from .conftest import split_rows

SMALL = dict(d_model=16, max_epochs=2, batch_size=64, max_len=64, n_threads=1, random_state=7, trajectory_codes=None)


@pytest.fixture(scope="module")
def index(labels):
    return (
        labels.groupby("subject_id", sort=False)
        .head(1)[["subject_id", "prediction_time"]]
        .head(200)
        .reset_index(drop=True)
    )


def _batch(events, index, featurizer):
    return featurizer.transform(events, index).batch(np.arange(len(index)))


def test_sequence_features_ignore_events_after_prediction_time(events, index):
    f = SequenceFeaturizer(max_len=32, min_code_count=5).fit(events)
    before = _batch(events, index, f)
    pt = events["subject_id"].map(index.set_index("subject_id")["prediction_time"])
    later = pt.notna() & events["time"].notna() & (events["time"] > pt)
    ev = events.copy()
    ev.loc[later, "numeric_value"] = ev.loc[later, "numeric_value"] * 7
    ev.loc[later, "time"] = ev.loc[later, "time"] + pd.Timedelta(days=3)
    extra = index.assign(
        time=index["prediction_time"] + pd.Timedelta(microseconds=1),
        code=f.vocabulary_[0],
        numeric_value=np.float32(99),
    ).drop(columns="prediction_time")
    ev = pd.concat([ev, extra]).sort_values(["subject_id", "time"], na_position="first", kind="stable")
    ev["code"] = ev["code"].astype(str).astype("category")
    after = _batch(ev.reset_index(drop=True), index, f)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


def test_storage_order_of_simultaneous_events_does_not_matter(events, index):
    """A Spark shuffle or another ETL may store same-time events in any order; the model sees one."""
    f = SequenceFeaturizer(max_len=32, min_code_count=5).fit(events)
    before = _batch(events, index, f)
    rng = np.random.default_rng(0)
    shuffled = events.assign(_r=rng.random(len(events))).sort_values(["subject_id", "time", "_r"], na_position="first")
    shuffled = shuffled.drop(columns="_r").reset_index(drop=True)
    tied = (shuffled["subject_id"].diff() == 0) & (shuffled["time"].diff() == pd.Timedelta(0))
    assert tied.sum() > 100 and not shuffled["code"].astype(str).equals(events["code"].astype(str))
    after = _batch(shuffled, index, f)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


def test_window_holds_the_most_recent_events(events, index):
    f = SequenceFeaturizer(max_len=8, min_code_count=5).fit(events)
    data = f.transform(events, index)
    assert data.lengths.max() <= 8
    dyn = events[events["time"].notna()]
    for i in range(0, len(index), 20):
        s, pt = index.loc[i, "subject_id"], index.loc[i, "prediction_time"]
        expected = dyn[(dyn["subject_id"] == s) & (dyn["time"] <= pt)]["time"].tail(8).to_numpy("datetime64[us]")
        got = data.time[data.lo[i] : data.hi[i]].astype("datetime64[us]")
        np.testing.assert_array_equal(got, expected)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, (5, 3, 4), elements=st.floats(-20, 20, width=32)))
def test_risk_curves_are_monotone_by_construction(logits):
    curve = risk_curve(torch.from_numpy(logits)).numpy()
    assert (np.diff(curve, axis=-1) >= -1e-7).all() and (curve >= 0).all() and (curve <= 1).all()


def test_censored_bins_do_not_touch_the_loss():
    y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]], [[0.0, float("nan"), float("nan"), float("nan")]]])
    logits = torch.zeros(2, 1, 4)
    base = hazard_loss(logits, y)
    moved = logits.clone()
    moved[0, 0, 2:] = 9.0  # bins after the event
    moved[1, 0, 1:] = -9.0  # bins after censoring
    assert torch.equal(hazard_loss(moved, y), base)


def test_seeded_training_is_reproducible_to_the_last_digit(events, labels):
    train, tune = split_rows(labels, "train"), split_rows(labels, "tuning")
    a = SequenceRiskModel(**SMALL).fit(events, train, tuning_labels=tune)
    b = SequenceRiskModel(**SMALL).fit(events, train, tuning_labels=tune)
    assert [h["tuning_loss"] for h in a.history_] == [h["tuning_loss"] for h in b.history_]
    held = split_rows(labels, "held_out")
    pd.testing.assert_frame_equal(a.predict_risk(events, held), b.predict_risk(events, held))


@pytest.mark.parametrize(
    "kind,calibration", [("gru", "platt"), ("transformer", "platt"), ("gru", "temperature"), ("gru", "isotonic")]
)
def test_calibrated_curves_stay_monotone(events, labels, kind, calibration):
    m = SequenceRiskModel(kind=kind, calibration=calibration, **SMALL).fit(
        events, split_rows(labels, "train"), tuning_labels=split_rows(labels, "tuning")
    )
    held = split_rows(labels, "held_out")
    curve = m.predict_risk_curve(events, held)
    assert curve.shape[1:] == (len(m.outcomes_), len(m.horizons_))
    assert (np.diff(curve, axis=-1) >= 0).all()
    raw = m.predict_risk_curve(events, held, calibrated=False)
    assert (np.diff(raw, axis=-1) >= 0).all() and not np.allclose(raw, curve)
    if calibration == "temperature":  # a scale only: the shift stays at zero
        assert (m.calibrator_.shift == 0).all() and not (m.calibrator_.scale == 1).all()


def test_gru_trains_through_the_pipeline_and_serves_as_pyfunc(tmp_path):
    from .conftest import train_and_serve

    res, run = train_and_serve(
        tmp_path,
        {
            "kind": "gru",
            "calibration": "platt",
            "params": {"d_model": 8, "max_epochs": 1, "n_threads": 1, "trajectory_codes": None},
        },
        n_subjects=500,
    )
    assert "tuning/loss" in run.data.metrics and run.data.params["model.kind"] == "gru"


def test_calibration_must_fit_the_model_kind():
    from twinml._validation import ConfigError
    from twinml.config import load_config

    from .conftest import TASK

    with pytest.raises(
        ConfigError,
        match="calibration 'sigmoid' does not apply to kind 'gru'; use 'platt' or 'temperature' or 'isotonic' or null",
    ):
        load_config(
            {"name": "x", "data": {"path": "p"}, "task": TASK, "model": {"kind": "gru", "calibration": "sigmoid"}}
        )
    with pytest.raises(
        ConfigError,
        match="calibration 'platt' does not apply to kind 'logistic'; use 'sigmoid' or 'isotonic' or 'temperature' "
        "or null",
    ):
        load_config(
            {"name": "x", "data": {"path": "p"}, "task": TASK, "model": {"kind": "logistic", "calibration": "platt"}}
        )


def test_future_readings_are_the_next_reading_within_the_horizon_of_the_same_subject():
    """The auxiliary targets: first reading of each code after the prediction time, not after the horizon,
    never another subject's, never one at or before the prediction time."""
    day = pd.Timedelta(days=1)
    t0 = pd.Timestamp("2020-01-01")
    rows = [  # subject, time, code, value
        (1, t0, "LAB//A", 1.0),
        (1, t0, "DX//X", np.nan),
        (1, t0 + 10 * day, "LAB//A", 3.0),
        (1, t0 + 20 * day, "LAB//A", 5.0),
        (1, t0 + 400 * day, "LAB//B", 7.0),
        (2, t0, "LAB//B", 2.0),
        (2, t0 + 5 * day, "DX//X", np.nan),
        (3, t0, "LAB//A", 4.0),
        (3, t0 + 30 * day, "LAB//B", 6.0),
    ]
    ev = pd.DataFrame(rows, columns=["subject_id", "time", "code", "numeric_value"])
    ev = pd.concat([ev] * 4, ignore_index=True).sort_values(
        ["subject_id", "time"], kind="stable"
    )  # codes pass min count
    ev["time"] = ev["time"].astype("datetime64[us]")
    ev["code"] = ev["code"].astype("category")
    f = SequenceFeaturizer(min_code_count=1).fit(ev)
    codes = f.forecast_codes()
    assert [f.vocabulary_[c - 2] for c in codes] == ["LAB//A", "LAB//B"]  # the diagnosis carries no value
    assert [f.vocabulary_[c - 2] for c in f.forecast_codes(max_codes=1)] == ["LAB//A"]  # the more frequent one
    index = pd.DataFrame({"subject_id": [1, 1, 2, 3], "prediction_time": [t0, t0 + 10 * day, t0, t0]})
    index["prediction_time"] = index["prediction_time"].astype("datetime64[us]")
    data = f.transform(ev.reset_index(drop=True), index)
    values, observed = SequenceFeaturizer.future_readings(data, codes, horizon_days=365.0)

    def z(code, v):
        j = list(f.vocabulary_).index(code)
        return np.float32((v - f.value_mean_[j]) / f.value_std_[j])

    np.testing.assert_array_equal(observed, [[1, 0], [1, 0], [0, 0], [0, 1]])  # B of subject 1 is past 365 days
    assert values[0, 0] == z("LAB//A", 3.0) and values[1, 0] == z("LAB//A", 5.0)
    assert values[3, 1] == z("LAB//B", 6.0) and values[2].tolist() == [0, 0]


def test_auxiliary_forecast_learns_the_next_readings_and_stays_out_of_predictions(events, labels):
    """With ``forecast_weight`` the encoder also forecasts each lab's next reading: on held-out rows the
    head must explain a good part of the variance of the next BMI (a precise, slowly moving reading), which
    it cannot if its targets were misaligned with the rows (as the shuffled control shows). The targets
    are not kept after fit."""
    from twinml.models._sequence_model import _tensors

    train, tune, held = (split_rows(labels, s) for s in ("train", "tuning", "held_out"))
    m = SequenceRiskModel(forecast_weight=0.5, **{**SMALL, "max_epochs": 3}).fit(events, train, tuning_labels=tune)
    assert m._forecast is None and m.net_.forecast is not None
    codes = m.featurizer_.forecast_codes()
    data = m.featurizer_.transform(events, held)
    target, seen = SequenceFeaturizer.future_readings(data, codes)
    with torch.inference_mode():
        pred = m.net_.forecast(m.net_.represent(**_tensors(data.batch(np.arange(len(data)))))).numpy()
    j = [m.featurizer_.vocabulary_[c - 2] for c in codes].index("LOINC/39156-5")  # BMI
    ok = seen[:, j] > 0
    y, p = target[ok, j], pred[ok, j]
    r2 = 1 - np.mean((p - y) ** 2) / np.var(y)
    shuffled = 1 - np.mean((p - np.random.default_rng(0).permutation(y)) ** 2) / np.var(y)
    assert ok.sum() > 500 and r2 > 0.3 and shuffled < 0.0, (ok.sum(), r2, shuffled)
    plain = SequenceRiskModel(forecast_weight=0.0, **{**SMALL, "max_epochs": 3}).fit(events, train, tuning_labels=tune)
    assert plain.net_.forecast is None
    assert not np.allclose(plain.predict_risk_curve(events, held), m.predict_risk_curve(events, held))


@pytest.mark.parametrize("name,value", [("forecast_weight", -0.1), ("forecast_days", 0), ("forecast_weight", True)])
def test_forecast_parameters_are_checked(events, labels, name, value):
    from twinml._validation import ConfigError

    with pytest.raises(ConfigError, match=f"The '{name}' parameter of SequenceRiskModel must be"):
        SequenceRiskModel(**{**SMALL, name: value}).fit(events, split_rows(labels, "train"))
