"""MEDS events in, risks out: featurizer + one classifier per label + optional calibrators."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from .._validation import NON_NEGATIVE_INT, POSITIVE_INT, ConfigError, Rule, check_params, one_of
from ..features import TabularFeaturizer
from ._bands import RiskBands
from ._multilabel import MaskedMultiLabelClassifier, make_baseline
from ._shares import SubjectShareClassifier

__all__ = ["TabularRiskModel", "label_columns_of", "label_matrix", "LIGHTGBM_SUBJECT_SHARES"]

_KEYS = ("subject_id", "prediction_time", "split")
# Chosen 2026-12-06: four LightGBMs on disjoint subject quarters, log-odds averaged. On the 20k simulated
# cohort the reference-model membership attack (benchmarks/privacy.py --rmia 4) fell from 0.595
# [0.567, 0.616] to 0.544 [0.519, 0.572] on the draw it was chosen on (--seed 1; 2 shares: 0.575) at the
# same tuning AUROC (0.782), where no single-model setting went under 0.577; on the five subject folds
# of the Synthea dev train and tuning subjects (benchmarks/realdata.py --report cv) the five main
# tasks' mean AUROC was 0.870 against 0.872, all nine 0.853 against 0.849, fit 51 s a fold against 47.
LIGHTGBM_SUBJECT_SHARES = 4
CALIBRATIONS = (None, "sigmoid", "isotonic", "temperature")
_SHARES = Rule('a positive int or "auto"', lambda v: v == "auto" or POSITIVE_INT.ok(v))


def label_columns_of(labels: pd.DataFrame) -> list[str]:
    return [c for c in labels.columns if c not in _KEYS]


def label_matrix(labels: pd.DataFrame, columns) -> np.ndarray:
    """Label columns as float (1.0, 0.0, NaN for unknown)."""
    return np.column_stack([labels[c].astype("Float64").to_numpy(np.float64, na_value=np.nan) for c in columns])


class TabularRiskModel(BaseEstimator):
    """A baseline risk model over MEDS events.

    Parameters
    ----------
    kind : {"lightgbm", "logistic", "hist_gb"}
        ``lightgbm`` (the default) boosts on the sparse matrix and early-stops on the tuning rows given
        to ``fit``; ``hist_gb`` densifies the matrix first (slow on thousands of columns).
    model_params : dict, optional
        Passed to the classifier (e.g. ``{"num_leaves": 31}``, ``{"C": 0.1}`` or ``{"max_iter": 300}``).
    n_trials : int
        ``lightgbm`` only: an optuna sweep of this many trials per label on the tuning rows' log loss
        (0: no sweep). Each trial is kept in ``search_trials_``.
    windows_days, aggregates, min_code_count, min_text_subjects :
        Passed to :class:`~twinml.features.TabularFeaturizer` (``min_text_subjects``: text answers of at
        least this many training subjects read as codes; 0, the default, ignores text).
    calibration : {None, "sigmoid", "isotonic", "temperature"}
        A calibrator per label (scikit-learn's ``CalibratedClassifierCV`` on the frozen classifier)
        fitted on the tuning rows given to ``fit``.
    subject_shares : int or "auto"
        Subsample and aggregate: above 1, the training subjects are cut into this many disjoint shares
        (seeded by ``random_state``), one classifier per label is fitted on each share (each early-stopped
        on all the tuning rows) and their log-odds are averaged, before any calibration
        (:class:`~twinml.models.SubjectShareClassifier`). No subject shapes more than one member, so
        what one member learnt of a subject is averaged with members that never saw it (an empirical
        defence against membership inference, not a guarantee). 1: one classifier per label on every
        training subject. ``"auto"`` (the default): 4 for ``lightgbm`` (:data:`LIGHTGBM_SUBJECT_SHARES`)
        without a sweep, else 1. A sweep (``n_trials``) and several shares cannot be combined.
    random_state : int

    Attributes
    ----------
    featurizer_ : TabularFeaturizer
        Vocabulary and value statistics from the training subjects' events only.
    classifier_ : MaskedMultiLabelClassifier or SubjectShareClassifier
    calibrators_ : dict
        Label index -> calibrator fitted on the tuning rows (empty without calibration).
    label_columns_ : list of str
    search_trials_ : dict
        Label -> the sweep's trials (params, tuning log loss, trees, seconds); empty without a sweep.
    """

    min_text_subjects = 0  # models pickled before this parameter read as fitted without text codes
    subject_shares = 1  # ... and before this one, as fitted on one share

    def __init__(
        self,
        kind="lightgbm",
        model_params=None,
        n_trials=0,
        windows_days=(30, 365, None),
        aggregates=("count", "last", "mean", "min", "max", "recency"),
        min_code_count=10,
        min_text_subjects=0,
        calibration=None,
        subject_shares="auto",
        random_state=0,
    ):
        self.kind = kind
        self.model_params = model_params
        self.n_trials = n_trials
        self.windows_days = windows_days
        self.aggregates = aggregates
        self.min_code_count = min_code_count
        self.min_text_subjects = min_text_subjects
        self.calibration = calibration
        self.subject_shares = subject_shares
        self.random_state = random_state

    def fit(
        self, events: pd.DataFrame, labels: pd.DataFrame, *, tuning_labels: pd.DataFrame | None = None, progress=None
    ):
        """Fit on the training rows ``labels``; calibrate on ``tuning_labels`` if asked."""
        check_params(
            self,
            {
                "calibration": one_of(CALIBRATIONS),
                "min_text_subjects": NON_NEGATIVE_INT,
                "subject_shares": _SHARES,
            },
        )
        shares = self.n_shares()
        base = self._base(shares)  # before featurizing: a bad sweep setting fails fast
        say = progress or (lambda msg: None)
        self.label_columns_ = label_columns_of(labels)
        train_events = events[events["subject_id"].isin(labels["subject_id"].unique())]
        self.featurizer_ = TabularFeaturizer(
            self.windows_days,
            self.aggregates,
            self.min_code_count,
            min_text_subjects=self.min_text_subjects,
        ).fit(train_events)
        X = self.featurizer_.transform(events, labels)
        say(f"features: {X.shape[0]:,} rows x {X.shape[1]:,} columns")
        self.feature_means_ = np.asarray(X.mean(axis=0), np.float64).ravel()  # the explainer's background
        tuning = None
        if tuning_labels is not None and len(tuning_labels):
            tuning = (
                self.featurizer_.transform(events, tuning_labels),
                label_matrix(tuning_labels, self.label_columns_),
            )
        t0 = time.perf_counter()
        Y = label_matrix(labels, self.label_columns_)
        if shares > 1:
            self.classifier_ = SubjectShareClassifier(base, shares, self.random_state).fit(
                X, Y, groups=labels["subject_id"].to_numpy(), eval_set=tuning, progress=say
            )
        else:
            self.classifier_ = MaskedMultiLabelClassifier(base).fit(X, Y, eval_set=tuning)
        self.search_trials_ = {
            c: est.trials_
            for c, est in zip(self.label_columns_, self.classifier_.estimators_)
            if getattr(est, "trials_", None)
        }
        say(
            f"fitted {self.kind} for {len(self.label_columns_)} labels"
            + (f" on each of {shares} subject shares" if shares > 1 else "")
            + f" ({time.perf_counter() - t0:.1f}s"
            + (f", {self.n_trials} sweep trials each" if self.search_trials_ else "")
            + ")"
        )
        self.calibrators_: dict[int, CalibratedClassifierCV] = {}  # label index -> its calibrator
        if self.calibration is not None and tuning is not None:
            self._calibrate(*tuning)
        self.risk_bands_ = (
            None
            if tuning is None
            else RiskBands.fit(self._risk_frame(tuning_labels, tuning[0]), tuning_labels, self.label_columns_)
        )
        return self

    def _base(self, shares: int):
        """The unfitted per-label classifier (the sweep's, with ``n_trials``)."""
        params = dict(self.model_params or {})
        if self.n_trials:
            if self.kind != "lightgbm":
                raise ConfigError(
                    f"The 'n_trials' parameter of TabularRiskModel applies to kind 'lightgbm' only. "
                    f"Got {self.n_trials!r} with kind {self.kind!r}."
                )
            if shares > 1:
                raise ConfigError(
                    f"TabularRiskModel: a sweep ('n_trials' {self.n_trials}) and {shares} subject shares "
                    f"('subject_shares' {self.subject_shares!r}) cannot be combined (each share would run its "
                    f"own sweep); sweep with subject_shares 1 and pass the chosen 'model_params'."
                )
            params["n_trials"] = self.n_trials
        return make_baseline(self.kind, random_state=self.random_state, **params)

    def n_shares(self) -> int:
        """The number of subject shares ``subject_shares`` asks for (``"auto"`` resolved by ``kind``)."""
        if self.subject_shares == "auto":
            return LIGHTGBM_SUBJECT_SHARES if self.kind == "lightgbm" and not self.n_trials else 1
        return int(self.subject_shares)

    def _calibrate(self, X, Y):
        for j, est in enumerate(self.classifier_.estimators_):
            known = ~np.isnan(Y[:, j])
            if est is None or np.unique(Y[known, j]).size < 2:
                continue
            cal = CalibratedClassifierCV(FrozenEstimator(est), method=self.calibration)
            with warnings.catch_warnings():  # a frozen classifier is not refitted, so its folds do not matter
                warnings.filterwarnings("ignore", message="The least populated class in y has only")
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
        return self._risk_frame(index, self.featurizer_.transform(events, index), calibrated=calibrated)

    def _risk_frame(self, index, X, *, calibrated=True):
        risk = self.classifier_.predict_risk(X)
        if calibrated:
            for j, cal in getattr(self, "calibrators_", {}).items():
                risk[:, j] = cal.predict_proba(X)[:, 1]
        out = index[["subject_id", "prediction_time"]].reset_index(drop=True).copy()
        for j, c in enumerate(self.label_columns_):
            out[c] = risk[:, j]
        return out
