"""Subsample and aggregate: disjoint subject shares, one classifier per share, log-odds averaged."""

import numpy as np
import pandas as pd
import pytest

from twinml._validation import ConfigError
from twinml.models import LogOddsMean, SubjectShareClassifier, TabularRiskModel, make_baseline, subject_shares

from .conftest import split_rows


def _logit(p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def test_shares_are_disjoint_whole_subjects_and_seeded():
    ids = np.repeat(np.arange(103) * 7, np.arange(103) % 5 + 1)  # subjects with 1-5 rows each
    shares = subject_shares(ids, 4, random_state=2)
    rows = np.concatenate(shares)
    assert np.sort(rows).tolist() == list(range(ids.size))  # every row in exactly one share
    subjects = [set(ids[r]) for r in shares]
    assert all(a.isdisjoint(b) for i, a in enumerate(subjects) for b in subjects[i + 1 :])
    assert sorted(len(s) for s in subjects) == [25, 26, 26, 26]  # near-equal in subjects
    again = subject_shares(ids, 4, random_state=2)
    assert all((a == b).all() for a, b in zip(shares, again))
    other = subject_shares(ids, 4, random_state=3)
    assert any(set(ids[a]) != set(ids[b]) for a, b in zip(shares, other))
    with pytest.raises(ConfigError, match="5 shares need at least 5 training subjects; got 3"):
        subject_shares([1, 1, 2, 3], 5)


def test_a_member_never_sees_another_shares_subjects():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(300), 4)
    X = rng.normal(size=(ids.size, 4)).astype(np.float32)
    Y = (X[:, :2] + rng.normal(size=(ids.size, 2)) > 0.8).astype(float)
    base = make_baseline("lightgbm", n_estimators=30)
    a = SubjectShareClassifier(base, n_shares=3, random_state=1).fit(X, Y, groups=ids)
    share = subject_shares(ids, 3, random_state=1)
    flipped = Y.copy()
    flipped[share[2]] = 1 - flipped[share[2]]  # rewrite the labels of the third share's subjects
    b = SubjectShareClassifier(base, n_shares=3, random_state=1).fit(X, flipped, groups=ids)
    for j in range(2):
        for k in range(3):
            same = np.allclose(a.members_[k].predict_risk(X)[:, j], b.members_[k].predict_risk(X)[:, j])
            assert same == (k != 2)  # only the third member moved
    assert a.share_subjects_ == [100, 100, 100]
    # the model's log-odds are its members' mean
    members = np.mean([_logit(m.predict_risk(X)) for m in a.members_], axis=0)
    np.testing.assert_allclose(_logit(a.predict_risk(X)), members, rtol=1e-9, atol=1e-9)


def test_a_share_without_positives_is_left_out_of_that_labels_mean():
    X = np.random.default_rng(0).normal(size=(400, 2))
    ids = np.repeat(np.arange(100), 4)
    share = subject_shares(ids, 2, random_state=0)
    Y = np.zeros((400, 1))
    Y[share[0][::3], 0] = 1.0  # positives in the first share only
    m = SubjectShareClassifier(make_baseline("logistic"), n_shares=2).fit(X, Y, groups=ids)
    assert m.members_[1].estimators_[0] is None and len(m.estimators_[0].members) == 1
    np.testing.assert_allclose(m.predict_risk(X)[:, 0], m.members_[0].predict_risk(X)[:, 0])
    Y = np.column_stack([Y[:, 0], np.full(400, np.nan)])  # a label never known: its base rate, 0
    m = SubjectShareClassifier(make_baseline("logistic"), n_shares=2).fit(X, Y, groups=ids)
    assert m.estimators_[1] is None and (m.predict_risk(X)[:, 1] == 0).all()
    assert m.constant_[0] == pytest.approx(Y[:, 0].mean())
    with pytest.raises(ValueError, match="LogOddsMean needs at least one fitted member"):
        LogOddsMean([]).fit()


def test_shares_in_the_risk_model_are_reproducible_calibrated_and_explained(events, labels):
    from twinml.evaluation import explain_model

    train, tune, held = (split_rows(labels, s) for s in ("train", "tuning", "held_out"))
    kw = {"kind": "lightgbm", "model_params": {"n_estimators": 60}, "subject_shares": 3, "calibration": "sigmoid"}
    m = TabularRiskModel(**kw, random_state=4).fit(events, train, tuning_labels=tune)
    again = TabularRiskModel(**kw, random_state=4).fit(events, train, tuning_labels=tune)
    pd.testing.assert_frame_equal(m.predict_risk(events, held), again.predict_risk(events, held))
    assert isinstance(m.classifier_, SubjectShareClassifier) and len(m.classifier_.members_) == 3
    assert sum(m.classifier_.share_subjects_) == train["subject_id"].nunique()
    # calibrated after the average: one sigmoid per label on the averaged classifier's log-odds
    assert len(m.calibrators_) == len(m.label_columns_)
    before, after = m.predict_risk(events, held, calibrated=False), m.predict_risk(events, held)
    assert not np.allclose(before[m.label_columns_], after[m.label_columns_])
    X = m.transform_features(events, held)
    members = np.mean([_logit(s.predict_risk(X)) for s in m.classifier_.members_], axis=0)
    np.testing.assert_allclose(_logit(before[m.label_columns_].to_numpy()), members, rtol=1e-6, atol=1e-6)
    # the members' mean SHAP values add up to the averaged log-odds
    rows = tune.head(30)
    a = explain_model(m, events, rows, label="mi_365d")
    assert "mean over the 3 subject-share classifiers" in a.method
    j = m.label_columns_.index("mi_365d")
    margin = m.classifier_.estimators_[j].decision_function(m.transform_features(events, rows))
    total = a.table.groupby("row")["attribution"].sum().reindex(range(len(rows)), fill_value=0.0).to_numpy()
    assert np.ptp(margin - total) < 1e-6


def test_lightgbm_fits_on_subject_shares_by_default_and_the_others_do_not():
    from twinml.models import LIGHTGBM_SUBJECT_SHARES

    assert LIGHTGBM_SUBJECT_SHARES == 4
    assert TabularRiskModel().n_shares() == 4 and TabularRiskModel(subject_shares=1).n_shares() == 1
    assert TabularRiskModel(kind="logistic").n_shares() == 1 and TabularRiskModel(kind="hist_gb").n_shares() == 1
    assert TabularRiskModel(kind="logistic", subject_shares=3).n_shares() == 3
    assert TabularRiskModel(n_trials=20).n_shares() == 1  # a sweep tunes one model on every training subject
    from twinml.audit._audit import _params  # the audit report and model card show the resolved count

    assert _params(TabularRiskModel())["subject_shares"] == "auto (4)"
    assert _params(TabularRiskModel(kind="logistic"))["subject_shares"] == "auto (1)"


def test_shares_cannot_be_combined_with_a_sweep(events, labels):
    with pytest.raises(ConfigError, match=r"a sweep .'n_trials' 3. and 2 subject shares .'subject_shares' 2."):
        TabularRiskModel(n_trials=3, subject_shares=2).fit(events, split_rows(labels, "train"))
    with pytest.raises(
        ConfigError, match="""'subject_shares' parameter of TabularRiskModel must be a positive int or "auto". Got 0"""
    ):
        TabularRiskModel(subject_shares=0).fit(events, split_rows(labels, "train"))


def test_shares_from_a_config_train_register_and_serve(tmp_path):
    from .conftest import train_and_serve

    res, run = train_and_serve(
        tmp_path, {"kind": "lightgbm", "calibration": "sigmoid", "params": {"subject_shares": 2, "n_estimators": 40}}
    )
    assert res.model.subject_shares == 2 and len(res.model.classifier_.members_) == 2
    assert run.data.tags["twinml.subject_shares"] == "2"
    assert "subject_shares" not in (res.model.model_params or {})
