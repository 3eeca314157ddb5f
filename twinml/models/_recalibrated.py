"""A fitted risk model with its outputs recalibrated on recent data: the model, unchanged, plus one
complementary log-log update per outcome.

``risk' = 1 - exp(-exp(a + b * cloglog(risk)))`` with ``cloglog(r) = log(-log(1 - r))``. With ``b = 1``
this multiplies the model's cumulative hazard by ``exp(a)``: exactly the update a change in an
outcome's incidence (a hazard ratio) calls for. One ``(a, b)`` per outcome, shared by its horizons, is a
monotone map, so each risk curve stays non-decreasing in the horizon.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy.optimize import minimize

__all__ = ["RecalibratedModel", "fit_cloglog", "cloglog_update", "outcome_of"]

_EPS = 1e-9
_HORIZON = re.compile(r"^(?P<outcome>.+)_(?P<days>\d+)d$")
# what the wrapper must not pass through: the base model's own calibration and bands, which the
# update would bypass (a twin state, read through ``calibrator_``, is refused: not a record model)
_HIDDEN = ("calibrator_", "risk_bands_", "predict_risk_curve")


def outcome_of(label: str) -> str:
    """``t2d_365d`` -> ``t2d`` (the outcome a label column belongs to)."""
    m = _HORIZON.match(label)
    return m.group("outcome") if m else label


def _cloglog(p):
    p = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    return np.log(-np.log1p(-p))


def cloglog_update(p, a: float, b: float):
    """Risks ``p`` after the update ``(a, b)``."""
    return -np.expm1(-np.exp(a + b * _cloglog(p)))


def fit_cloglog(y, p, *, slope: bool = False) -> tuple[float, float]:
    """Maximum-likelihood ``(a, b)`` of the update for labels ``y`` and risks ``p`` (``b = 1`` unless ``slope``)."""
    y, z = np.asarray(y, float), _cloglog(p)

    def nll(theta):
        a, b = (theta[0], theta[1]) if slope else (theta[0], 1.0)
        q = np.clip(-np.expm1(-np.exp(a + b * z)), _EPS, 1 - _EPS)
        return -float(np.sum(y * np.log(q) + (1 - y) * np.log1p(-q)))

    res = minimize(nll, x0=[0.0, 1.0] if slope else [0.0], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8})
    return float(res.x[0]), float(res.x[1]) if slope else 1.0


class RecalibratedModel:
    """``base`` with its risks updated per outcome (``updates``: outcome -> ``(a, b)``).

    Everything else (``label_columns_``, the featurizer, trajectories, the network the audit explains)
    is the base model's. ``info`` records where the update came from (parent version, data window).
    """

    def __init__(self, base, updates: dict[str, tuple[float, float]], info: dict | None = None):
        self.base = base
        self.updates = {k: (float(a), float(b)) for k, (a, b) in updates.items()}
        self.info = dict(info or {})

    def __getattr__(self, name):
        if name in ("base", "updates", "info") or name.startswith("__") or name in _HIDDEN:
            raise AttributeError(name)
        return getattr(self.base, name)

    def recalibrate(self, risks: pd.DataFrame) -> pd.DataFrame:
        """The update applied to a frame of risk columns (other columns as they are)."""
        out = risks.copy()
        for c in self.base.label_columns_:
            if c in out and outcome_of(c) in self.updates:
                out[c] = cloglog_update(out[c].to_numpy(float), *self.updates[outcome_of(c)])
        return out

    def predict_risk(self, events, index, *, calibrated: bool = True) -> pd.DataFrame:
        """The base model's risks, updated; ``calibrated=False``: the base model's before any calibration
        (what the audit shows as "before")."""
        if not calibrated:
            return self.base.predict_risk(events, index, calibrated=False)
        return self.recalibrate(self.base.predict_risk(events, index))

    def predict_risk_and_trajectory(self, events, index):
        risks, forecasts = self.base.predict_risk_and_trajectory(events, index)
        return self.recalibrate(risks), forecasts

    def __repr__(self) -> str:
        return f"RecalibratedModel({type(self.base).__name__}, updates={self.updates})"
