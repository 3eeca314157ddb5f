import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from twinml._validation import ConfigError
from twinml.cohort import build_labels
from twinml.models import MaskedMultiLabelClassifier, TabularRiskModel, make_baseline


_WEIGHTS = ("the wrapped MaxAbsScaler ignores sample weights, so zero-weight rows still shape the scaling; "
            "the wrapper itself passes weights through")


@parametrize_with_checks(
    [MaskedMultiLabelClassifier(make_baseline("logistic"))],
    expected_failed_checks=lambda est: {"check_sample_weight_equivalence_on_dense_data": _WEIGHTS,
                                        "check_sample_weight_equivalence_on_sparse_data": _WEIGHTS},
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


@pytest.fixture(scope="module")
def labels(events, task, splits):
    return build_labels(events, task=task, subject_splits=splits).labels


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
    with pytest.raises(ConfigError, match=r"The 'kind' parameter of make_baseline must be one of \['logistic', 'hist_gb'\]. Got 'xgb' instead."):
        make_baseline("xgb")
