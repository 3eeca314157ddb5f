"""One binary classifier per label column, each trained where its label is known."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .._validation import ConfigError

__all__ = ["MaskedMultiLabelClassifier", "make_baseline", "BASELINES"]

BASELINES = ("logistic", "hist_gb", "lightgbm")


def _to_dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def make_baseline(kind: str, *, random_state: int = 0, **params):
    """A baseline binary classifier by name.

    ``logistic``: max-abs scaling then L2 logistic regression (works on sparse input).
    ``hist_gb``: histogram gradient boosting (dense input; sparse is densified first).
    ``lightgbm``: :class:`~twinml.models.LightGBMClassifier` on the sparse matrix as it is, early-stopped
    on an evaluation set when one is given; ``n_trials`` (with the other ``params``) runs an optuna sweep.
    """
    if kind == "logistic":
        defaults = {"C": 0.5, "max_iter": 2000}
        return make_pipeline(MaxAbsScaler(), LogisticRegression(**{**defaults, **params}, random_state=random_state))
    if kind == "hist_gb":
        defaults = {
            "max_iter": 200,
            "learning_rate": 0.05,
            "max_leaf_nodes": 15,
            "min_samples_leaf": 40,
            "l2_regularization": 1.0,
            "early_stopping": False,
        }
        return make_pipeline(
            FunctionTransformer(_to_dense, accept_sparse=True),
            HistGradientBoostingClassifier(**{**defaults, **params}, random_state=random_state),
        )
    if kind == "lightgbm":
        from ._boosting import LightGBMClassifier

        own = {k: params.pop(k) for k in ("n_trials", "early_stopping_rounds", "n_jobs") if k in params}
        return LightGBMClassifier(params=params or None, random_state=random_state, **own)
    raise ConfigError(f"The 'kind' parameter of make_baseline must be one of {list(BASELINES)}. Got {kind!r} instead.")


class MaskedMultiLabelClassifier(ClassifierMixin, BaseEstimator):
    """Fit a clone of ``estimator`` per column of ``Y``, on the rows where that column is known.

    Unknown labels (NaN) are censored or excluded rows: they are left out of that column's fit,
    never counted as negatives.

    Parameters
    ----------
    estimator : estimator
        A binary classifier with ``predict_proba``.

    Attributes
    ----------
    estimators_ : list
        One fitted clone per label column (``None`` where a column had a single class).
    constant_ : ndarray
        The base rate used for columns with a single class in training.
    n_outputs_ : int
    """

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y, *, sample_weight=None, eval_set=None):
        """Fit one clone per column; ``eval_set=(X_eval, Y_eval)`` goes, on each column's known rows, to
        estimators whose ``fit`` takes an ``eval_set`` (early stopping), and is ignored by the others."""
        if y is None:
            raise ValueError("MaskedMultiLabelClassifier requires y to be passed, but the target y is None.")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float32, ensure_all_finite=True)
        Y = self._encode_targets(y)
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {Y.shape[0]}.")
        weights = None if sample_weight is None else _check_sample_weight(sample_weight, X)
        base = self.estimator if self.estimator is not None else make_baseline("logistic")
        Xe, evals = self._eval_sets(base, eval_set, Y.shape[1])
        binned = self._binned(base, X, Xe)
        self.estimators_: list[Any] = []  # None where a label has one class (constant_ is used)
        self.constant_ = np.zeros(Y.shape[1])
        for j in range(Y.shape[1]):
            known = ~np.isnan(Y[:, j])
            yj = Y[known, j].astype(int)
            self.constant_[j] = yj.mean() if yj.size else 0.0
            if np.unique(yj).size < 2:
                self.estimators_.append(None)
                continue
            kw = {}
            if weights is not None:
                kw[_weight_key(base)] = weights[known]
            if evals[j] is not None:
                kw["eval_set"] = evals[j][:2]
            if binned is not None:  # LightGBM: every label trains on rows of one binning of X
                kw["binned"] = (binned, np.flatnonzero(known), None if evals[j] is None else evals[j][2])
            self.estimators_.append(clone(base).fit(X[known], yj, **kw))
        self.n_outputs_ = Y.shape[1]
        return self

    def _encode_targets(self, y) -> np.ndarray:
        """1-D: any two classes (the last sorted one is positive). 2-D: 0, 1 or NaN per column."""
        y = np.asarray(y)
        if y.ndim == 1:
            if y.dtype.kind == "f" and not np.isfinite(y).all():
                raise ValueError("Input y contains NaN or infinity; for unknown labels pass a 2-D y with NaN.")
            check_classification_targets(y)
            classes = np.unique(y)
            if classes.size > 2:
                raise ValueError(
                    f"Only binary classification is supported. MaskedMultiLabelClassifier got "
                    f"{classes.size} classes {classes[:5].tolist()}."
                )
            self.classes_, self._single = classes, True
            return (y == classes[-1]).astype(np.float64)[:, None]
        Y = y.astype(np.float64)
        if np.isinf(Y).any():
            raise ValueError("Input y contains infinity.")
        bad = np.setdiff1d(Y[~np.isnan(Y)], [0.0, 1.0])
        if bad.size:
            raise ValueError(
                f"MaskedMultiLabelClassifier: a 2-D y holds 0, 1 or NaN (unknown); got {bad[:3].tolist()}."
            )
        self.classes_, self._single = np.array([0, 1]), False
        return Y

    def _eval_sets(self, base, eval_set, n_outputs):
        """The validated evaluation matrix and, per label column, its known rows, their labels and indices
        (None, and None per column, where the estimator takes no evaluation set)."""
        if eval_set is None or "eval_set" not in inspect.signature(base.fit).parameters:
            return None, [None] * n_outputs
        Xe = validate_data(self, eval_set[0], accept_sparse="csr", dtype=np.float32, reset=False)
        Ye = np.asarray(eval_set[1])
        Ye = (Ye == self.classes_[-1]).astype(np.float64)[:, None] if self._single else Ye.astype(np.float64)
        if Ye.shape != (Xe.shape[0], n_outputs):
            raise ValueError(
                f"eval_set: X has {Xe.shape[0]} rows and y shape {Ye.shape}; expected ({Xe.shape[0]}, {n_outputs})."
            )
        known = ~np.isnan(Ye)
        return Xe, [
            (Xe[known[:, j]], Ye[known[:, j], j].astype(int), np.flatnonzero(known[:, j])) for j in range(n_outputs)
        ]

    def _binned(self, base, X, Xe):
        """One :class:`~twinml.models.BinnedMatrix` of ``X`` (and the evaluation matrix ``Xe``) for
        estimators whose ``fit`` reuses a binning (LightGBM), so it is binned once rather than once a label."""
        if "binned" not in inspect.signature(base.fit).parameters:
            return None
        from ._boosting import BinnedMatrix

        return BinnedMatrix(X, Xe, n_jobs=getattr(base, "n_jobs", None), params=getattr(base, "params", None))

    def predict_risk(self, X) -> np.ndarray:
        """Probability of each label being positive, shape (n_samples, n_outputs)."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float32, reset=False)
        out = np.empty((X.shape[0], self.n_outputs_))
        for j, est in enumerate(self.estimators_):
            out[:, j] = self.constant_[j] if est is None else est.predict_proba(X)[:, 1]
        return out

    def predict_proba(self, X):
        """(n, 2) for a single output, else a list of (n, 2) arrays (as MultiOutputClassifier)."""
        risk = self.predict_risk(X)
        probs = [np.column_stack([1 - risk[:, j], risk[:, j]]) for j in range(risk.shape[1])]
        return probs[0] if self._single else probs

    def predict(self, X):
        risk = self.predict_risk(X)
        if self._single:
            return self.classes_[np.minimum((risk[:, 0] >= 0.5).astype(int), self.classes_.size - 1)]
        return (risk >= 0.5).astype(int)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.classifier_tags.multi_class = False
        return tags


def _weight_key(est):
    steps = getattr(est, "steps", None)
    return f"{steps[-1][0]}__sample_weight" if steps else "sample_weight"
