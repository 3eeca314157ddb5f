"""MEDS events in, risks out: featurizer + one classifier per label + optional calibrators."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from .._validation import ConfigError
from ..features import TabularFeaturizer
from ._multilabel import MaskedMultiLabelClassifier, make_baseline

__all__ = ["TabularRiskModel", "label_columns_of", "label_matrix"]

_KEYS = ("subject_id", "prediction_time", "split")
CALIBRATIONS = (None, "sigmoid", "isotonic", "temperature")


def label_columns_of(labels: pd.DataFrame) -> list[str]:
    return [c for c in labels.columns if c not in _KEYS]


def label_matrix(labels: pd.DataFrame, columns) -> np.ndarray:
    """Label columns as float (1.0, 0.0, NaN for unknown)."""
    return np.column_stack([labels[c].astype("Float64").to_numpy(np.float64, na_value=np.nan) for c in columns])


class TabularRiskModel(BaseEstimator):
    """A baseline risk model over MEDS events.

    Parameters
    ----------
    kind : {"logistic", "hist_gb"}
    model_params : dict, optional
        Passed to the classifier (e.g. ``{"C": 0.1}`` or ``{"max_iter": 300}``).
    windows_days, aggregates, min_code_count :
        Passed to :class:`~twinml.features.TabularFeaturizer`.
    calibration : {None, "sigmoid", "isotonic", "temperature"}
        A calibrator per label (scikit-learn's ``CalibratedClassifierCV`` on the frozen classifier)
        fitted on the tuning rows given to ``fit``.
    random_state : int

    Attributes
    ----------
    featurizer_ : TabularFeaturizer
        Vocabulary and value statistics from the training subjects' events only.
    classifier_ : MaskedMultiLabelClassifier
    calibrators_ : dict
        Label index -> calibrator fitted on the tuning rows (empty without calibration).
    label_columns_ : list of str
    """

    def __init__(self, kind="hist_gb", model_params=None, windows_days=(30, 365, None),
                 aggregates=("count", "last", "mean", "min", "max"), min_code_count=10, calibration=None,
                 random_state=0):
        self.kind = kind
        self.model_params = model_params
        self.windows_days = windows_days
        self.aggregates = aggregates
        self.min_code_count = min_code_count
        self.calibration = calibration
        self.random_state = random_state

    def fit(self, events: pd.DataFrame, labels: pd.DataFrame, *, tuning_labels: pd.DataFrame | None = None,
            progress=None):
        """Fit on the training rows ``labels``; calibrate on ``tuning_labels`` if asked."""
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"The 'calibration' parameter of TabularRiskModel must be one of {list(CALIBRATIONS)}. Got {self.calibration!r} instead.")
        say = progress or (lambda msg: None)
        self.label_columns_ = label_columns_of(labels)
        train_events = events[events["subject_id"].isin(labels["subject_id"].unique())]
        self.featurizer_ = TabularFeaturizer(self.windows_days, self.aggregates, self.min_code_count).fit(train_events)
        X = self.featurizer_.transform(events, labels)
        say(f"features: {X.shape[0]:,} rows x {X.shape[1]:,} columns")
        base = make_baseline(self.kind, random_state=self.random_state, **(self.model_params or {}))
        self.classifier_ = MaskedMultiLabelClassifier(base).fit(X, label_matrix(labels, self.label_columns_))
        say(f"fitted {self.kind} for {len(self.label_columns_)} labels")
        self.calibrators_ = {}
        if self.calibration is not None and tuning_labels is not None and len(tuning_labels):
            self._calibrate(events, tuning_labels)
        return self

    def _calibrate(self, events, tuning_labels):
        X = self.featurizer_.transform(events, tuning_labels)
        Y = label_matrix(tuning_labels, self.label_columns_)
        for j, est in enumerate(self.classifier_.estimators_):
            known = ~np.isnan(Y[:, j])
            if est is None or np.unique(Y[known, j]).size < 2:
                continue
            cal = CalibratedClassifierCV(FrozenEstimator(est), method=self.calibration)
            self.calibrators_[j] = cal.fit(X[known], Y[known, j].astype(int))

    @property
    def feature_names_(self):
        return self.featurizer_.feature_names_

    def transform_features(self, events, index):
        check_is_fitted(self, "classifier_")
        return self.featurizer_.transform(events, index)

    def predict_risk(self, events: pd.DataFrame, index: pd.DataFrame, *, calibrated: bool = True) -> pd.DataFrame:
        """Risk of each label for each row of ``index`` (``subject_id``, ``prediction_time``).

        ``calibrated=False`` gives the classifiers' risks before the tuning-split calibrators.
        """
        check_is_fitted(self, "classifier_")
        X = self.featurizer_.transform(events, index)
        risk = self.classifier_.predict_risk(X)
        if calibrated:
            for j, cal in getattr(self, "calibrators_", {}).items():
                risk[:, j] = cal.predict_proba(X)[:, 1]
        out = index[["subject_id", "prediction_time"]].reset_index(drop=True).copy()
        for j, c in enumerate(self.label_columns_):
            out[c] = risk[:, j]
        return out
