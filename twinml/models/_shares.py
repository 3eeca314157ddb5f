"""Subsample and aggregate: one multi-label classifier per disjoint share of the training subjects, their
log-odds averaged.

No subject shapes more than one member, so what a member learnt of a subject's own rows is averaged
with K - 1 members that never saw them. This is an empirical defence, not a guarantee: the mean of
log-odds is not bounded, so a member that memorises its share (no regularisation, no early stopping)
still leaks; DP training is the guarantee. With LightGBM's defaults, on the 20k simulated cohort, it is
what brought the reference-model membership attack under 0.55 where no single-model setting did (leaf
count, leaf size, L2, row or subject bagging, coarser bins: see ``benchmarks/privacy.py`` and the
README's privacy section).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_array, check_is_fitted

from .._validation import ConfigError
from ._multilabel import MaskedMultiLabelClassifier

__all__ = ["LogOddsMean", "SubjectShareClassifier", "subject_shares"]

_EPS = 1e-12


def _logit(p):
    return logit(np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS))


def subject_shares(subject_ids, n_shares: int, random_state: int = 0) -> list[np.ndarray]:
    """Row indices of ``n_shares`` disjoint shares of the subjects (a seeded shuffle of the sorted ids,
    cut into near-equal parts): every row of a subject falls in the same share."""
    ids = np.asarray(subject_ids)
    subjects = np.unique(ids)
    if subjects.size < n_shares:
        raise ConfigError(
            f"subject_shares: {n_shares} shares need at least {n_shares} training subjects; got {subjects.size}."
        )
    order = np.random.default_rng(random_state).permutation(subjects.size)
    share_of = np.empty(subjects.size, np.int64)
    for k, part in enumerate(np.array_split(order, n_shares)):
        share_of[part] = k
    row_share = share_of[np.searchsorted(subjects, ids)]
    return [np.flatnonzero(row_share == k) for k in range(n_shares)]


class LogOddsMean(ClassifierMixin, BaseEstimator):
    """A binary classifier whose log-odds are the mean of its members' (fitted binary classifiers with
    ``predict_proba``). :meth:`fit` only checks that there are members: they come fitted."""

    def __init__(self, members=()):
        self.members = members

    def fit(self, X=None, y=None):
        if len(self.members) == 0 or any(m is None for m in self.members):
            raise ValueError(f"LogOddsMean needs at least one fitted member; got {list(self.members)!r}.")
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X) -> np.ndarray:
        """The members' mean log-odds of the positive class."""
        check_is_fitted(self)
        X = check_array(X, accept_sparse="csr", dtype=np.float32)  # what the members saw in fit
        return np.mean([_logit(est.predict_proba(X)[:, 1]) for est in self.members], axis=0)

    def predict_proba(self, X) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return (self.decision_function(X) >= 0).astype(int)


class SubjectShareClassifier(BaseEstimator):
    """``n_shares`` :class:`MaskedMultiLabelClassifier` members, each fitted on its own disjoint share of
    the subjects (``groups``), with the same evaluation set for early stopping. Per label, ``estimators_``
    holds a :class:`LogOddsMean` of the members' classifiers, so code that reads a multi-label classifier's
    per-label estimators (calibration, explanations) reads the averaged one.

    Attributes
    ----------
    members_ : list of MaskedMultiLabelClassifier
    share_subjects_ : list of int
        Subjects per share (the shares' sizes; no ids are kept).
    estimators_ : list of LogOddsMean or None
        Per label, the mean over the members that saw both classes of it (a share with no positive of a
        rare label has no classifier for it, and its base rate of 0 is left out rather than averaged in);
        ``None`` where no member did.
    constant_ : ndarray
        Base rate of each label over all training rows.
    n_outputs_ : int
    """

    def __init__(self, estimator, n_shares: int = 4, random_state: int = 0):
        self.estimator = estimator
        self.n_shares = n_shares
        self.random_state = random_state

    def fit(self, X, Y, *, groups, eval_set=None, progress=None):
        say = progress or (lambda msg: None)
        Y = np.asarray(Y, np.float64)
        shares = subject_shares(groups, self.n_shares, self.random_state)
        self.share_subjects_ = [int(np.unique(np.asarray(groups)[rows]).size) for rows in shares]
        self.members_ = []
        for k, rows in enumerate(shares):
            self.members_.append(MaskedMultiLabelClassifier(self.estimator).fit(X[rows], Y[rows], eval_set=eval_set))
            say(f"  share {k + 1}/{len(shares)}: {self.share_subjects_[k]:,} subjects, {rows.size:,} rows")
        self.n_outputs_ = Y.shape[1]
        known = ~np.isnan(Y)  # a label never known anywhere has base rate 0, as in MaskedMultiLabelClassifier
        n_known = known.sum(axis=0)
        self.constant_ = np.where(known, Y, 0.0).sum(axis=0) / np.maximum(n_known, 1)
        self.estimators_ = []
        for j in range(self.n_outputs_):
            ests = [m.estimators_[j] for m in self.members_ if m.estimators_[j] is not None]
            self.estimators_.append(LogOddsMean(ests).fit() if ests else None)
        return self

    def predict_risk(self, X) -> np.ndarray:
        """Probability of each label being positive, shape (n_samples, n_outputs)."""
        check_is_fitted(self, "estimators_")
        out = np.empty((X.shape[0], self.n_outputs_))
        for j, est in enumerate(self.estimators_):
            out[:, j] = self.constant_[j] if est is None else est.predict_proba(X)[:, 1]
        return out
