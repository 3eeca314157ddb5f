"""Gradient boosting on the sparse feature matrix: LightGBM, early-stopped, optionally swept with optuna.

LightGBM reads the CSR matrix as it is: sklearn's HistGradientBoosting densifies it first, which on
real-shaped records (thousands of codes) took a quarter of an hour.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import log_loss
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .._validation import ConfigError

__all__ = ["LightGBMClassifier", "LIGHTGBM_DEFAULTS"]

# The learning rate was chosen on the tuning split of ../shared/synthea-dev (nine tasks, mean log loss):
# 0.03 -> 0.02557 against 0.05 -> 0.02576 (and, before the recency features, 0.03 -> 0.02631 against
# 0.1 -> 0.02687); early stopping then picks the number of trees. The other values were not tuned.
LIGHTGBM_DEFAULTS = {"n_estimators": 2000, "learning_rate": 0.03, "num_leaves": 15, "min_child_samples": 50,
                     "colsample_bytree": 0.3, "subsample": 0.8, "subsample_freq": 1, "reg_lambda": 1.0}


def _csr(X):
    """scipy's sparse arrays as the csr_matrix LightGBM reads (dense input unchanged)."""
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else X


def _space(trial) -> dict:
    """The sweep's search space (MEDS-Tab's XGBoost sweep covers the same kinds of knob)."""
    return {"learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 300, log=True),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.1, 1.0),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True)}


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
    estimator_ : lightgbm.LGBMClassifier
        The fitted booster (the best trial's when swept).
    best_params_ : dict
        The parameters of ``estimator_`` (defaults, ``params`` and the sweep's choices).
    best_iteration_ : int
        Trees kept by early stopping (all ``n_estimators`` without an evaluation set).
    trials_ : list of dict
        One record per sweep trial: number, params, evaluation log loss, trees, seconds.
    """

    def __init__(self, params=None, early_stopping_rounds=50, n_trials=0, n_jobs=None, random_state=0):
        self.params = params
        self.early_stopping_rounds = early_stopping_rounds
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _validate_params(self):
        for name in ("early_stopping_rounds", "n_trials"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (1 if name == "early_stopping_rounds" else 0):
                rule = "a positive int" if name == "early_stopping_rounds" else "a non-negative int"
                raise ConfigError(f"The {name!r} parameter of LightGBMClassifier must be {rule}. Got {v!r} instead.")
        if self.params is not None and not isinstance(self.params, dict):
            raise ConfigError(f"The 'params' parameter of LightGBMClassifier must be a dict or None. "
                              f"Got {self.params!r} instead.")

    def fit(self, X, y, *, sample_weight=None, eval_set=None):
        """Fit on ``(X, y)``; ``eval_set=(X_eval, y_eval)`` early-stops (and scores the sweep's trials)."""
        self._validate_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float32, ensure_all_finite=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if self.classes_.size != 2:
            raise ValueError(f"Only binary classification is supported. LightGBMClassifier got "
                             f"{self.classes_.size} class(es) {self.classes_[:5].tolist()}.")
        y = (y == self.classes_[1]).astype(int)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
            if not sample_weight.any():
                raise ValueError("Sample weights must contain at least one non-zero weight.")
        X = _csr(X)
        if eval_set is not None:
            Xe, ye = eval_set
            Xe = _csr(Xe) if sp.issparse(Xe) else np.asarray(Xe, np.float32)
            eval_set = (Xe, (np.asarray(ye) == self.classes_[1]).astype(int))
            if np.unique(eval_set[1]).size < 2:
                eval_set = None  # log loss on one class cannot choose between trees
        base = {**LIGHTGBM_DEFAULTS, **(self.params or {})}
        self.trials_ = []
        if self.n_trials and eval_set is not None:
            self.best_params_, self.estimator_ = self._sweep(X, y, sample_weight, eval_set, base)
        else:
            self.best_params_, self.estimator_ = base, self._fit_one(X, y, sample_weight, eval_set, base)
        self.best_iteration_ = int(self.estimator_.best_iteration_ or self.estimator_.n_estimators)
        return self

    def _fit_one(self, X, y, sample_weight, eval_set, params):
        from lightgbm import LGBMClassifier, early_stopping

        est = LGBMClassifier(**params, random_state=self.random_state, n_jobs=self.n_jobs, deterministic=True,
                             force_col_wise=True, verbose=-1)
        kw = {}
        if eval_set is not None:
            kw = {"eval_X": (eval_set[0],), "eval_y": (eval_set[1],), "eval_metric": "binary_logloss",
                  "callbacks": [early_stopping(self.early_stopping_rounds, verbose=False)]}
        return est.fit(X, y, sample_weight=sample_weight, **kw)

    def _sweep(self, X, y, sample_weight, eval_set, base):
        """The best trial's parameters and fitted model (kept, not refitted: the fit is deterministic)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        best = {}

        def objective(trial):
            t0 = time.perf_counter()
            params = {**base, **_space(trial)}
            est = self._fit_one(X, y, sample_weight, eval_set, params)
            loss = float(log_loss(eval_set[1], est.predict_proba(eval_set[0])[:, 1], labels=[0, 1]))
            self.trials_.append({"number": trial.number, "params": _space(trial), "eval_log_loss": loss,
                                 "trees": int(est.best_iteration_ or est.n_estimators),
                                 "seconds": time.perf_counter() - t0})
            if loss < best.get("loss", np.inf):
                best.update(loss=loss, params=params, est=est)
            return loss

        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=self.random_state))
        study.optimize(objective, n_trials=int(self.n_trials))
        return best["params"], best["est"]

    def predict_proba(self, X):
        check_is_fitted(self, "estimator_")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float32, reset=False)
        return self.estimator_.predict_proba(_csr(X))

    def predict(self, X):
        positive = self.predict_proba(X)[:, 1] >= 0.5
        return self.classes_[positive.astype(int)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_class = False
        return tags
