"""One binary classifier per label column, each trained where its label is known."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import ConfigError

__all__ = ["MaskedMultiLabelClassifier", "make_baseline", "BASELINES"]

BASELINES = ("logistic", "hist_gb")


def _to_dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def make_baseline(kind: str, *, random_state: int = 0, **params):
    """A baseline binary classifier by name.

    ``logistic``: max-abs scaling then L2 logistic regression (works on sparse input).
    ``hist_gb``: histogram gradient boosting (dense input; sparse is densified first).
    """
    if kind == "logistic":
        defaults = {"C": 0.5, "max_iter": 2000}
        return make_pipeline(MaxAbsScaler(), LogisticRegression(**{**defaults, **params}, random_state=random_state))
    if kind == "hist_gb":
        defaults = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 40,
                    "l2_regularization": 1.0, "early_stopping": False}
        return make_pipeline(FunctionTransformer(_to_dense, accept_sparse=True),
                             HistGradientBoostingClassifier(**{**defaults, **params}, random_state=random_state))
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

    def fit(self, X, y, *, sample_weight=None):
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float32, ensure_all_finite=True)
        Y = np.asarray(y, dtype=np.float64)
        self._single = Y.ndim == 1
        Y = Y.reshape(len(Y), -1)
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {Y.shape[0]}.")
        known_vals = Y[~np.isnan(Y)]
        if np.setdiff1d(known_vals, [0.0, 1.0]).size:
            raise ValueError(f"MaskedMultiLabelClassifier: labels must be 0, 1 or NaN; got {np.setdiff1d(known_vals, [0.0, 1.0])[:3]}")
        base = self.estimator if self.estimator is not None else make_baseline("logistic")
        self.estimators_, self.constant_ = [], np.zeros(Y.shape[1])
        for j in range(Y.shape[1]):
            known = ~np.isnan(Y[:, j])
            yj = Y[known, j].astype(int)
            self.constant_[j] = yj.mean() if yj.size else 0.0
            if np.unique(yj).size < 2:
                self.estimators_.append(None)
                continue
            kw = {}
            if sample_weight is not None:
                kw[_weight_key(base)] = np.asarray(sample_weight)[known]
            self.estimators_.append(clone(base).fit(X[known], yj, **kw))
        self.n_outputs_ = Y.shape[1]
        self.classes_ = np.array([0, 1])
        return self

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
        pred = (risk >= 0.5).astype(int)
        return pred[:, 0] if self._single else pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _weight_key(est):
    steps = getattr(est, "steps", None)
    return f"{steps[-1][0]}__sample_weight" if steps else "sample_weight"
