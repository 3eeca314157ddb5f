"""Discrete-time hazard targets, the censoring-aware loss, and a monotone calibrator."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._validation import ConfigError

__all__ = ["parse_label_columns", "hazard_targets", "hazard_loss", "risk_curve", "curve_frame", "HazardCalibrator"]

_LABEL = re.compile(r"^(?P<outcome>.+)_(?P<horizon>\d+)d$")


def parse_label_columns(columns) -> tuple[list[str], list[int]]:
    """``["mi_365d", "mi_730d", ...]`` -> outcomes and sorted horizons; every outcome needs every horizon."""
    found: dict[str, set[int]] = {}
    for c in columns:
        m = _LABEL.match(c)
        if not m:
            raise ConfigError(f"labels: column {c!r} is not named '<outcome>_<days>d' as task labels are.")
        found.setdefault(m["outcome"], set()).add(int(m["horizon"]))
    horizons = sorted(next(iter(found.values())))
    for outcome, hs in found.items():
        if sorted(hs) != horizons:
            raise ConfigError(
                f"labels: outcome {outcome!r} has horizons {sorted(hs)}, others have {horizons}; "
                "a risk curve needs the same horizons for every outcome."
            )
    return list(found), horizons


def hazard_targets(labels: pd.DataFrame, outcomes, horizons) -> np.ndarray:
    """Labels as float (n, outcomes, horizons): 1 / 0 / NaN (unknown: censored or excluded)."""
    out = np.full((len(labels), len(outcomes), len(horizons)), np.nan, np.float32)
    for i, o in enumerate(outcomes):
        for j, h in enumerate(horizons):
            out[:, i, j] = labels[f"{o}_{h}d"].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    return out


def _mask_and_target(y: torch.Tensor):
    """Bin j counts when its end status is known and the row was event-free at its start."""
    known = ~torch.isnan(y)
    free_before = torch.cat([torch.ones_like(y[..., :1], dtype=torch.bool), y[..., :-1] == 0], dim=-1)
    return (known & free_before).to(y.dtype), torch.nan_to_num(y, nan=0.0)


def hazard_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of each bin's hazard over the bins each row was observed in.

    A row censored after horizon k contributes only bins up to k; after an event, none.
    """
    mask, target = _mask_and_target(y)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * mask).sum() / mask.sum().clamp(min=1.0)


def base_hazard_logits(y: np.ndarray) -> np.ndarray:
    """Logit of the training hazard rate per (outcome, bin): the starting bias for rare events."""
    mask, target = _mask_and_target(torch.from_numpy(y))
    rate = ((target * mask).sum(0) + 0.5) / (mask.sum(0) + 1.0)
    return torch.logit(rate).numpy()


def risk_curve(logits: torch.Tensor) -> torch.Tensor:
    """Cumulative risk per horizon: 1 - prod_{j<=k} (1 - hazard_j); non-decreasing in k."""
    return 1.0 - torch.cumprod(1.0 - torch.sigmoid(logits), dim=-1)


def calibrated_curve(logits: torch.Tensor, calibrator=None, calibrated: bool = True) -> np.ndarray:
    """Risk curves from hazard logits, through ``calibrator`` first when there is one and ``calibrated``."""
    if calibrated and calibrator is not None:
        logits = calibrator(logits)
    return risk_curve(logits).numpy()


def curve_frame(index: pd.DataFrame, curve: np.ndarray, outcomes, horizons, label_columns) -> pd.DataFrame:
    """Risk curves (n, outcomes, horizons) as one column per label beside ``index``'s keys."""
    out = index[["subject_id", "prediction_time"]].reset_index(drop=True).copy()
    for i, o in enumerate(outcomes):
        for j, h in enumerate(horizons):
            out[f"{o}_{h}d"] = curve[:, i, j]
    return out[["subject_id", "prediction_time", *label_columns]]


class HazardCalibrator:
    """Recalibration of hazard logits per (outcome, bin), fitted on tuning rows.

    ``method``: ``platt`` (a scale and a shift of the logit), ``temperature`` (a scale only) or
    ``isotonic`` (a non-decreasing map of each bin's hazard, sklearn's IsotonicRegression on the
    rows observed in that bin). Every method keeps hazards in (0, 1), so calibrated risk curves
    stay monotone in the horizon.
    """

    METHODS = ("platt", "temperature", "isotonic")

    def __init__(self, method: str = "platt"):
        self.method = method

    def fit(self, logits: np.ndarray, y: np.ndarray) -> HazardCalibrator:
        if self.method == "isotonic":
            return self._fit_isotonic(logits, y)
        z, t = torch.from_numpy(logits).double(), torch.from_numpy(y).double()
        self.scale = torch.ones(z.shape[1:], dtype=torch.float64, requires_grad=True)
        self.shift = torch.zeros(z.shape[1:], dtype=torch.float64, requires_grad=self.method == "platt")
        params = [self.scale, self.shift] if self.method == "platt" else [self.scale]
        opt = torch.optim.LBFGS(params, max_iter=100, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = hazard_loss(z * self.scale + self.shift, t)
            loss.backward()
            return loss

        opt.step(closure)
        self.scale, self.shift = self.scale.detach().float(), self.shift.detach().float()
        return self

    def _fit_isotonic(self, logits, y):
        from sklearn.isotonic import IsotonicRegression

        mask, target = (a.numpy() for a in _mask_and_target(torch.from_numpy(y)))
        hazard = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        self.isotonic = np.empty(logits.shape[1:], dtype=object)
        for o, b in np.ndindex(*logits.shape[1:]):
            seen = mask[:, o, b] > 0
            iso = IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6, out_of_bounds="clip")
            self.isotonic[o, b] = iso.fit(hazard[seen, o, b], target[seen, o, b]) if seen.any() else None
        return self

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.method != "isotonic":
            return logits * self.scale + self.shift
        hazard = torch.sigmoid(logits).double().numpy()
        out = hazard.copy()
        for o, b in np.ndindex(*self.isotonic.shape):
            iso = self.isotonic.item(o, b)  # an IsotonicRegression, or None for a bin without rows
            if iso is not None:
                out[:, o, b] = iso.predict(hazard[:, o, b])
        return torch.logit(torch.from_numpy(np.clip(out, 1e-6, 1 - 1e-6))).to(logits.dtype)
