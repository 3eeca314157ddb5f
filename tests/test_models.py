import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from twinml._validation import ConfigError
from twinml.models import LightGBMClassifier, MaskedMultiLabelClassifier, TabularRiskModel, make_baseline

_WEIGHTS = (
    "the wrapped MaxAbsScaler ignores sample weights, so zero-weight rows still shape the scaling; "
    "the wrapper itself passes weights through"
)


@parametrize_with_checks(
    [MaskedMultiLabelClassifier(make_baseline("logistic")), LightGBMClassifier(params={"n_estimators": 20})],
    expected_failed_checks=lambda est: (
        {}
        if isinstance(est, LightGBMClassifier)
        else {
            "check_sample_weight_equivalence_on_dense_data": _WEIGHTS,
            "check_sample_weight_equivalence_on_sparse_data": _WEIGHTS,
        }
    ),
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def test_unknown_labels_are_left_out_not_negatives():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=2000) > 0).astype(float)
    Y = np.column_stack([y, y])
    Y[(X[:, 0] > 0.5) & (rng.random(2000) < 0.7), 1] = np.nan  # unknown for many likely positives
    ours = MaskedMultiLabelClassifier(make_baseline("logistic")).fit(X, Y)
    naive = MaskedMultiLabelClassifier(make_baseline("logistic")).fit(X, np.nan_to_num(Y, nan=0.0))
    assert ours.constant_[1] == pytest.approx(np.nanmean(Y[:, 1]))
    high = X[:, 0] > 1.0
    assert ours.predict_risk(X[high])[:, 1].mean() > 0.8  # unknown left out: still sees high risk
    assert naive.predict_risk(X[high])[:, 1].mean() < 0.6  # unknown read as negative: biased down


def test_single_class_label_predicts_its_base_rate():
    X = np.random.default_rng(0).normal(size=(50, 2))
    clf = MaskedMultiLabelClassifier().fit(X, np.column_stack([np.zeros(50), np.r_[np.ones(25), np.zeros(25)]]))
    assert clf.estimators_[0] is None and (clf.predict_risk(X)[:, 0] == 0).all()


def test_seeded_training_is_reproducible(events, labels):
    train = labels[labels["split"] == "train"].reset_index(drop=True)
    held = labels[labels["split"] == "held_out"].reset_index(drop=True)
    a = TabularRiskModel(kind="hist_gb", model_params={"max_iter": 30}, random_state=3).fit(events, train)
    b = TabularRiskModel(kind="hist_gb", model_params={"max_iter": 30}, random_state=3).fit(events, train)
    ra, rb = a.predict_risk(events, held), b.predict_risk(events, held)
    assert ra.equals(rb)
    assert list(ra.columns) == ["subject_id", "prediction_time", *a.label_columns_]


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic", "temperature"])
def test_calibrator_is_fitted_on_tuning_rows_and_travels_inside(events, labels, calibration):
    train = labels[labels["split"] == "train"].reset_index(drop=True)
    tune = labels[labels["split"] == "tuning"].reset_index(drop=True)
    m = TabularRiskModel(kind="logistic", calibration=calibration).fit(events, train, tuning_labels=tune)
    kinds = {type(c).__name__ for c in m.calibrators_.values()}
    assert kinds == {"CalibratedClassifierCV"} and len(m.calibrators_) == len(m.label_columns_)
    held = labels[labels["split"] == "held_out"].reset_index(drop=True)
    before, after = m.predict_risk(events, held, calibrated=False), m.predict_risk(events, held)
    plain = TabularRiskModel(kind="logistic").fit(events, train).predict_risk(events, held)
    pd.testing.assert_frame_equal(before, plain)  # the calibrators leave the classifiers untouched
    assert not np.allclose(before[m.label_columns_], after[m.label_columns_])


def test_unknown_model_kind_is_named():
    with pytest.raises(
        ConfigError,
        match=r"The 'kind' parameter of make_baseline must be one of \['logistic', 'hist_gb', 'lightgbm'\]. Got "
        r"'xgb' instead.",
    ):
        make_baseline("xgb")


def test_lightgbm_early_stops_on_each_labels_known_tuning_rows(events, labels):
    train = labels[labels["split"] == "train"].reset_index(drop=True)
    tune = labels[labels["split"] == "tuning"].reset_index(drop=True)
    one = {"kind": "lightgbm", "model_params": {"n_estimators": 400, "learning_rate": 0.2}, "subject_shares": 1}
    m = TabularRiskModel(**one, random_state=0).fit(events, train, tuning_labels=tune)
    fitted = [e for e in m.classifier_.estimators_ if e is not None]
    assert fitted and all(e.best_iteration_ < 400 for e in fitted)  # stopped early on the tuning rows
    again = TabularRiskModel(**one, random_state=0).fit(events, train, tuning_labels=tune)
    held = labels[labels["split"] == "held_out"].reset_index(drop=True)
    pd.testing.assert_frame_equal(m.predict_risk(events, held), again.predict_risk(events, held))
    # without tuning rows there is nothing to stop on: every tree is kept
    full = TabularRiskModel(kind="lightgbm", model_params={"n_estimators": 30}, subject_shares=1).fit(events, train)
    assert all(e.best_iteration_ == 30 for e in full.classifier_.estimators_ if e is not None)


def test_lightgbm_sweep_keeps_its_best_trial_by_tuning_log_loss():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=3000) > 1.0).astype(int)
    est = LightGBMClassifier(n_trials=4, params={"n_estimators": 200}, random_state=1)
    est.fit(X[:2000], y[:2000], eval_set=(X[2000:], y[2000:]))
    losses = [t["eval_log_loss"] for t in est.trials_]
    assert len(losses) == 4
    best = est.trials_[int(np.argmin(losses))]
    assert {k: est.best_params_[k] for k in best["params"]} == best["params"]
    from sklearn.metrics import log_loss

    assert log_loss(y[2000:], est.predict_proba(X[2000:])[:, 1]) == pytest.approx(min(losses))
    again = LightGBMClassifier(n_trials=4, params={"n_estimators": 200}, random_state=1)
    again.fit(X[:2000], y[:2000], eval_set=(X[2000:], y[2000:]))
    assert [t["params"] for t in again.trials_] == [t["params"] for t in est.trials_]  # seeded sweep


def test_a_sweep_on_a_model_that_cannot_early_stop_is_refused(events, labels):
    train = labels[labels["split"] == "train"].reset_index(drop=True)
    with pytest.raises(
        ConfigError, match="The 'n_trials' parameter of TabularRiskModel applies to kind 'lightgbm' only"
    ):
        TabularRiskModel(kind="logistic", n_trials=3).fit(events, train)


def test_lightgbm_explanations_add_up_to_the_boosters_log_odds(events, labels):
    from twinml.evaluation import explain_model

    train = labels[labels["split"] == "train"].reset_index(drop=True)
    tune = labels[labels["split"] == "tuning"].reset_index(drop=True)
    m = TabularRiskModel(kind="lightgbm", model_params={"n_estimators": 60}, subject_shares=1)
    m.fit(events, train, tuning_labels=tune)
    rows = tune.head(40)
    a = explain_model(m, events, rows, label="mi_365d")
    j = m.label_columns_.index("mi_365d")
    margin = m.classifier_.estimators_[j].estimator_.predict(m.transform_features(events, rows), raw_score=True)
    total = a.table.groupby("row")["attribution"].sum().reindex(range(len(rows)), fill_value=0.0).to_numpy()
    base = margin - total  # shap's expected value: the same for every row when attributions add up
    assert np.ptp(base) < 1e-6


def test_lightgbm_labels_share_one_binning_and_match_a_fit_of_their_own():
    """The multi-label wrapper bins X once and fits each label on row subsets of that binning: a label
    known on every row gets exactly the model a standalone fit gives; a label known on some rows is
    trained on those rows only (its evaluation rows too)."""
    import scipy.sparse as sp

    from twinml.models import LightGBMClassifier

    rng = np.random.default_rng(0)
    X = sp.random(600, 40, density=0.2, format="csr", random_state=0, dtype=np.float32)
    y_all = (X[:, 0].toarray().ravel() + rng.normal(0, 0.1, 600) > 0.05).astype(float)
    y_some = y_all.copy()
    y_some[::3] = np.nan
    Y = np.column_stack([y_all, y_some])
    Xe, Ye = X[:200], Y[:200]
    est = LightGBMClassifier(params={"n_estimators": 30, "min_child_samples": 5}, n_jobs=1)
    multi = MaskedMultiLabelClassifier(est).fit(X, Y, eval_set=(Xe, Ye))
    alone = LightGBMClassifier(params={"n_estimators": 30, "min_child_samples": 5}, n_jobs=1).fit(
        X, y_all.astype(int), eval_set=(Xe, Ye[:, 0].astype(int))
    )
    np.testing.assert_array_equal(multi.estimators_[0].predict_proba(X), alone.predict_proba(X))
    assert multi.estimators_[0].best_iteration_ == alone.best_iteration_
    assert multi.estimators_[1].estimator_.num_trees() >= 1
    assert not np.allclose(multi.estimators_[1].predict_proba(X), alone.predict_proba(X))


def test_lightgbm_binning_parameters_reach_the_shared_binning():
    import scipy.sparse as sp

    from twinml.models import LightGBMClassifier

    X = sp.random(400, 10, density=0.5, format="csr", random_state=1, dtype=np.float32)
    y = (X[:, 0].toarray().ravel() > 0.5).astype(float)
    Y = np.column_stack([y, y])
    coarse = MaskedMultiLabelClassifier(
        LightGBMClassifier(params={"n_estimators": 20, "min_child_samples": 5, "max_bin": 3}, n_jobs=1)
    ).fit(X, Y)
    fine = MaskedMultiLabelClassifier(
        LightGBMClassifier(params={"n_estimators": 20, "min_child_samples": 5}, n_jobs=1)
    ).fit(X, Y)
    thresholds = lambda m: {  # noqa: E731
        n["threshold"]
        for t in m.estimators_[0].estimator_.dump_model()["tree_info"]
        for n in _nodes(t["tree_structure"])
    }
    assert len(thresholds(coarse)) < len(thresholds(fine))


def _nodes(node):
    if "threshold" in node:
        yield node
        yield from _nodes(node["left_child"])
        yield from _nodes(node["right_child"])
