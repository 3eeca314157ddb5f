import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinml._validation import ConfigError
from twinml.cohort import build_labels
from twinml.features import TabularFeaturizer


@pytest.fixture(scope="module")
def index(events, task, splits):
    lab = build_labels(events, task=task, subject_splits=splits).labels
    first = lab.groupby("subject_id", sort=False).head(1)  # one prediction time per subject
    return first[["subject_id", "prediction_time"]].head(300).reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(events):
    return TabularFeaturizer(min_code_count=5, aggregates=("count", "last", "mean", "min", "max", "recency")).fit(
        events
    )


def _resort(df):
    df = df.sort_values(["subject_id", "time"], na_position="first", kind="stable").reset_index(drop=True)
    df["code"] = df["code"].astype(str).astype("category")
    return df


def _after_pt(events, index):
    pt = events["subject_id"].map(index.set_index("subject_id")["prediction_time"])
    return pt.notna() & events["time"].notna() & (events["time"] > pt)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shift_days=st.integers(1, 2000), scale=st.floats(0.1, 10), drop=st.floats(0, 1), seed=st.integers(0, 9))
def test_events_after_prediction_time_never_change_features(events, index, fitted, shift_days, scale, drop, seed):
    """The leakage rule: only events with time <= prediction_time may shape a feature."""
    before = fitted.transform(events, index)
    rng = np.random.default_rng(seed)
    ev = events.copy()
    later = _after_pt(ev, index)
    ev.loc[later, "time"] = ev.loc[later, "time"] + pd.Timedelta(days=shift_days)
    ev.loc[later, "numeric_value"] = ev.loc[later, "numeric_value"] * np.float32(scale)
    ev = ev[~(later & (rng.random(len(ev)) < drop))]
    # new events a microsecond after each prediction time, with codes from the vocabulary
    extra = index.assign(
        time=index["prediction_time"] + pd.Timedelta(microseconds=1),
        code=rng.choice(fitted.vocabulary_, len(index)),
        numeric_value=np.float32(1e4),
    )
    ev = _resort(pd.concat([ev, extra.drop(columns="prediction_time")], ignore_index=True))
    after = fitted.transform(ev, index)
    assert (before != after).nnz == 0


def test_an_event_at_the_prediction_time_counts(events, index, fitted):
    code = fitted.vocabulary_[0]
    extra = index.assign(time=index["prediction_time"], code=code, numeric_value=np.float32(np.nan))
    ev = _resort(pd.concat([events, extra.drop(columns="prediction_time")], ignore_index=True))
    col = list(fitted.feature_names_).index(f"{code}/30d/count")
    diff = fitted.transform(ev, index)[:, col].toarray() - fitted.transform(events, index)[:, col].toarray()
    assert (diff == 1).all()


def test_matches_a_plain_pandas_reference(events, index, fitted):
    X = fitted.transform(events, index)
    names = list(fitted.feature_names_)
    vocab = list(fitted.vocabulary_)
    dyn = events[events["time"].notna()]
    for i in range(0, len(index), 15):
        s, pt = index.loc[i, "subject_id"], index.loc[i, "prediction_time"]
        e = dyn[(dyn["subject_id"] == s) & (dyn["time"] <= pt)]
        for w, wname in [(30, "30d"), (365, "365d"), (None, "all")]:
            ew = e if w is None else e[e["time"] > pt - pd.Timedelta(days=w)]
            for code, g in ew.groupby("code", observed=True):
                if code not in vocab:
                    continue
                k = vocab.index(code)
                assert X[i, names.index(f"{code}/{wname}/count")] == len(g)
                if w is None:  # recency: 1 / (1 + years since the code's last record at or before pt)
                    years = (pt - g["time"].max()) / pd.Timedelta(days=365.25)
                    assert X[i, names.index(f"{code}/all/recency")] == pytest.approx(1 / (1 + years), rel=1e-5)
                if fitted.numeric_[k]:
                    v = g["numeric_value"].dropna()
                    for agg, val in [("mean", v.mean()), ("min", v.min()), ("max", v.max()), ("last", v.iloc[-1])]:
                        z = (val - fitted.value_mean_[k]) / fitted.value_std_[k]
                        assert X[i, names.index(f"{code}/{wname}/{agg}")] == pytest.approx(z, abs=1e-4)
        age = pt - events[(events["subject_id"] == s) & (events["code"] == "MEDS_BIRTH")]["time"].iloc[0]
        assert X[i, 0] == pytest.approx(age / pd.Timedelta(days=365.25), abs=1e-4)


def test_vocabulary_comes_from_training_events_only(events, index):
    held_out_only = events[events["subject_id"] == index.loc[0, "subject_id"]].copy()
    held_out_only["code"] = held_out_only["code"].cat.add_categories(["LOINC/RARE-1"])
    held_out_only.loc[held_out_only["time"].notna(), "code"] = "LOINC/RARE-1"
    train = events[events["subject_id"] != index.loc[0, "subject_id"]]
    f = TabularFeaturizer(min_code_count=1).fit(train)
    assert "LOINC/RARE-1" not in f.vocabulary_
    X = f.transform(_resort(pd.concat([train, held_out_only])), index)  # unseen codes are ignored
    assert X.shape == (len(index), f.feature_names_.size)


def test_bad_parameters_are_named(events):
    with pytest.raises(
        ConfigError,
        match=r"The 'windows_days' parameter of TabularFeaturizer must hold positive ints or null. Got -7 instead.",
    ):
        TabularFeaturizer(windows_days=(-7,)).fit(events)


def test_chunking_over_subjects_does_not_change_features(events, index, fitted, monkeypatch):
    import twinml.features._tabular as tab

    whole = fitted.transform(events, index)
    monkeypatch.setattr(tab, "_CHUNK", 97)
    assert (fitted.transform(events, index) != whole).nnz == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: TabularFeaturizer(min_code_count=5),
        lambda: __import__("twinml.features", fromlist=["SequenceFeaturizer"]).SequenceFeaturizer(min_code_count=5),
    ],
)
def test_prediction_index_errors_name_the_column(events, index, make):
    from twinml._validation import TwinmlInputError

    f = make().fit(events)
    bad = index.copy()
    bad.loc[3, "prediction_time"] = pd.NaT
    with pytest.raises(
        TwinmlInputError,
        match=r"prediction index: column 'prediction_time' must not be null \(example: row 3, subject_id=",
    ):
        f.transform(events, bad)
    with pytest.raises(TwinmlInputError, match="prediction index: column 'subject_id' is required"):
        f.transform(events, index.drop(columns="subject_id"))
