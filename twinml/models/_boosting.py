"""Gradient boosting on the sparse feature matrix: LightGBM, early-stopped, optionally swept with optuna.

LightGBM reads the CSR matrix as it is: sklearn's HistGradientBoosting densifies it first, which on
real-shaped records (thousands of codes) took a quarter of an hour. Binning the matrix is a good part
of a fit (on the Synthea dev features, 32,593 rows x 6,638 columns, about 3 s of a label's 10 s), so it
is done once (:class:`BinnedMatrix`) and every label, and every sweep trial, trains on row subsets of
that one binning.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import log_loss
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .._validation import DICT_OR_NONE, NON_NEGATIVE_INT, POSITIVE_INT, check_params

__all__ = ["LightGBMClassifier", "BinnedMatrix", "LIGHTGBM_DEFAULTS"]

# Chosen on the tuning split of ../shared/synthea-dev (nine tasks, mean log loss of the boosters,
# benchmarks/.cache features: 32,593 rows x 6,638 columns): learning rate 0.03 -> 0.02557 against 0.05 ->
# 0.02576; then, for speed at no loss, columns sampled per tree 0.3 -> 0.07 and no row bagging with a
# patience of 25 trees: 0.02533 in 44 s of boosting for the nine labels, against 0.02553 in 90 s
# (0.1: 0.02539, 0.04: 0.02536; a learning rate of 0.1 with patience 20: 0.02581 in 46 s). Trees cost
# in proportion to the columns they look at, so the column share sets the fit time. Early stopping
# picks the number of trees. Leaves 15 -> 4 (2026-12-06): on five subject folds of the Synthea dev
# train and tuning subjects (benchmarks/realdata.py --report cv) the five main tasks' mean AUROC went
# 0.866 -> 0.872 (7 leaves: 0.871), and the reference-model membership attack on the 20k simulated
# cohort (benchmarks/privacy.py --rmia 4) 0.593 [0.572, 0.619] -> 0.560 [0.532, 0.587] (7: 0.563) at
# a tuning AUROC of 0.761 against 0.758. Leaf size (50 -> 200, 800), L2 (30), row bagging and extra
# trees left that attack at 0.58-0.61. Leaf size and L2 stay untuned for discrimination.
LIGHTGBM_DEFAULTS = {
    "n_estimators": 2000,
    "learning_rate": 0.03,
    "num_leaves": 4,
    "min_child_samples": 50,
    "colsample_bytree": 0.07,
    "subsample": 1.0,
    "subsample_freq": 0,
    "reg_lambda": 1.0,
}


def _csr(X):
    """scipy's sparse arrays as the csr_matrix LightGBM reads (dense input unchanged)."""
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else X


def _space(trial) -> dict:
    """The sweep's search space (MEDS-Tab's XGBoost sweep covers the same kinds of knob)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 300, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.1, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
    }


# Parameters that shape the binning (set once per BinnedMatrix, never per trial). Pre-filtering is off:
# it drops features by the leaf size, which a sweep varies, and a shared binning must serve every trial.
_BIN_PARAMS = {"max_bin": 255, "feature_pre_filter": False, "verbose": -1}
_BIN_KEYS = ("max_bin", "min_data_in_bin", "bin_construct_sample_cnt")  # user params that shape the binning


def _bin_params(params) -> dict:
    return {**_BIN_PARAMS, **{k: v for k, v in (params or {}).items() if k in _BIN_KEYS}}


class BinnedMatrix:
    """A feature matrix (and optionally an evaluation matrix) binned once by LightGBM, for fits on row
    subsets of it with any labels (:meth:`rows`). The evaluation matrix is binned with the training
    matrix's bin boundaries, as LightGBM requires of validation data."""

    def __init__(self, X, X_eval=None, *, n_jobs=None, params=None):
        import lightgbm as lgb

        params = {**_bin_params(params), **({"num_threads": n_jobs} if n_jobs else {})}
        self.n_rows = X.shape[0]
        self.train = lgb.Dataset(_csr(X), label=np.zeros(X.shape[0]), params=params, free_raw_data=False).construct()
        self.eval = None
        if X_eval is not None:
            self.eval = lgb.Dataset(
                _csr(X_eval), label=np.zeros(X_eval.shape[0]), reference=self.train, params=params, free_raw_data=False
            ).construct()

    @staticmethod
    def _take(full, rows, y, weight=None):
        if rows is None:
            rows = np.arange(full.num_data())
        d = full.subset(np.asarray(rows, np.int32).tolist()).construct()
        d.set_label(np.asarray(y, np.float32))
        if weight is not None:
            d.set_weight(np.asarray(weight, np.float32))
        return d

    def rows(self, rows, y, *, weight=None, eval_rows=None, y_eval=None):
        """``(train, eval)`` Datasets: training rows ``rows`` (None: all) with labels ``y`` and weights,
        and evaluation rows ``eval_rows`` (None: all) with labels ``y_eval`` (no eval without ``y_eval``)."""
        train = self._take(self.train, rows, y, weight)
        ev = None if (self.eval is None or y_eval is None) else self._take(self.eval, eval_rows, y_eval)
        return train, ev


class LightGBMClassifier(ClassifierMixin, BaseEstimator):
    """A binary LightGBM classifier early-stopped on an evaluation set, with an optional optuna sweep.

    Parameters
    ----------
    params : dict, optional
        LightGBM parameters over :data:`LIGHTGBM_DEFAULTS` (``n_estimators`` is the most trees
        early stopping may keep).
    early_stopping_rounds : int
        Stop when the evaluation log loss has not improved for this many trees (needs ``eval_set``).
    n_trials : int
        With ``eval_set``, an optuna TPE sweep of this many trials over learning rate, leaves,
        minimum leaf size, column and row subsampling and L2 penalty, minimising the evaluation
        set's log loss; the best trial's model is kept. 0 fits ``params`` once.
    n_jobs : int or None
        LightGBM threads (None: LightGBM's default, every core).
    random_state : int
        Seeds LightGBM (run in its deterministic mode) and the sweep's sampler.

    Attributes
    ----------
    estimator_ : lightgbm.Booster
        The fitted booster (the best trial's when swept), predicting with its best iteration.
    best_params_ : dict
        The parameters of ``estimator_`` (defaults, ``params`` and the sweep's choices).
    best_iteration_ : int
        Trees kept by early stopping (all ``n_estimators`` without an evaluation set).
    trials_ : list of dict
        One record per sweep trial: number, params, evaluation log loss, trees, seconds.
    """

    def __init__(self, params=None, early_stopping_rounds=25, n_trials=0, n_jobs=None, random_state=0):
        self.params = params
        self.early_stopping_rounds = early_stopping_rounds
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _validate_params(self):
        check_params(
            self, {"early_stopping_rounds": POSITIVE_INT, "n_trials": NON_NEGATIVE_INT, "params": DICT_OR_NONE}
        )

    def fit(self, X, y, *, sample_weight=None, eval_set=None, binned=None):
        """Fit on ``(X, y)``; ``eval_set=(X_eval, y_eval)`` early-stops (and scores the sweep's trials).

        ``binned=(matrix, rows, eval_rows)``: ``X`` and ``eval_set[0]`` are those rows of a
        :class:`BinnedMatrix` and its evaluation matrix, whose binning is reused (no re-binning).
        """
        self._validate_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float32, ensure_all_finite=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if self.classes_.size != 2:
            raise ValueError(
                f"Only binary classification is supported. LightGBMClassifier got "
                f"{self.classes_.size} class(es) {self.classes_[:5].tolist()}."
            )
        y = (y == self.classes_[1]).astype(int)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
            if not sample_weight.any():
                raise ValueError("Sample weights must contain at least one non-zero weight.")
        y_eval = X_eval = None
        if eval_set is not None:
            X_eval, y_eval = eval_set
            y_eval = (np.asarray(y_eval) == self.classes_[1]).astype(int)
            if np.unique(y_eval).size < 2:
                y_eval = None  # log loss on one class cannot choose between trees
        if binned is None:
            binned = (BinnedMatrix(X, X_eval, n_jobs=self.n_jobs, params=self.params), None, None)
        matrix, rows, eval_rows = binned
        data = matrix.rows(rows, y, weight=sample_weight, eval_rows=eval_rows, y_eval=y_eval)
        base = {**LIGHTGBM_DEFAULTS, **(self.params or {})}
        self.trials_ = []
        if self.n_trials and data[1] is not None:
            self.best_params_, self.estimator_ = self._sweep(data, _csr(X_eval), y_eval, base)
        else:
            self.best_params_, self.estimator_ = base, self._fit_one(data, base)
        self.best_iteration_ = int(self.estimator_.best_iteration or self.estimator_.current_iteration())
        return self

    def _fit_one(self, data, params):
        import lightgbm as lgb

        params = dict(params)
        rounds = int(params.pop("n_estimators"))
        params = {
            "objective": "binary",
            "deterministic": True,
            "force_col_wise": True,
            **_bin_params(self.params),
            **params,
            "seed": self.random_state,
        }
        if self.n_jobs:
            params["num_threads"] = self.n_jobs
        train, ev = data
        kw: dict[str, Any] = {}
        if ev is not None:
            params["metric"] = "binary_logloss"
            kw = {
                "valid_sets": [ev],
                "valid_names": ["eval"],
                "callbacks": [lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            }
        booster = lgb.train(params, train, num_boost_round=rounds, **kw)
        return booster.free_dataset()

    def _sweep(self, data, X_eval, y_eval, base):
        """The best trial's parameters and fitted model (kept, not refitted: the fit is deterministic)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        best: dict[str, Any] = {}

        def objective(trial):
            t0 = time.perf_counter()
            params = {**base, **_space(trial)}
            booster = self._fit_one(data, params)
            p = booster.predict(X_eval, num_iteration=booster.best_iteration or None)
            loss = float(log_loss(y_eval, p, labels=[0, 1]))
            self.trials_.append(
                {
                    "number": trial.number,
                    "params": _space(trial),
                    "eval_log_loss": loss,
                    "trees": int(booster.best_iteration or booster.current_iteration()),
                    "seconds": time.perf_counter() - t0,
                }
            )
            if loss < best.get("loss", np.inf):
                best.update(loss=loss, params=params, est=booster)
            return loss

        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=self.random_state))
        study.optimize(objective, n_trials=int(self.n_trials))
        return best["params"], best["est"]

    def predict_proba(self, X):
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float32, reset=False)
        p = self.estimator_.predict(_csr(X), num_iteration=self.best_iteration_)
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        positive = self.predict_proba(X)[:, 1] >= 0.5
        return self.classes_[positive.astype(int)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_class = False
        return tags
