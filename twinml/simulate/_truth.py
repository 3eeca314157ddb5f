"""Exact ground-truth risks from the simulated hazard paths.

Hazards are constant within a step and every outcome races death, so the probability that
outcome ``k`` occurs in ``(t, t + h]`` before death is, summing over steps ``j``:

    sum_j  S_j * lam_k / (lam_k + lam_d) * (1 - exp(-(lam_k + lam_d) * dt_j)),
    S_j = exp(-sum_{i<j} (lam_k + lam_d) * dt_i)

(for death itself, ``1 - exp(-sum lam_d * dt)``). The last step of a horizon may be partial.
This is the same law the simulator draws events from, so these probabilities are the
Bayes-optimal scores for the realised labels: the oracle.
"""

from __future__ import annotations

import numpy as np

from ._process import DEATH, DT, STEPS_PER_YEAR


def horizon_steps(horizon_days: int) -> tuple[int, float]:
    """Whole steps and the fraction of one more step that a horizon in days covers."""
    steps = horizon_days * STEPS_PER_YEAR / 365.0
    full = int(np.floor(steps + 1e-9))
    return full, max(steps - full, 0.0)


def cumulative_incidence(lam: np.ndarray, horizons_days) -> np.ndarray:
    """Risk of each outcome within each horizon.

    Parameters
    ----------
    lam : array (n, H, 5)
        Hazards per year over the steps following the prediction time.
    horizons_days : sequence of int

    Returns
    -------
    array (n, 5, len(horizons_days)), float32
    """
    lam = lam.astype(np.float64)
    lam_d = lam[..., DEATH : DEATH + 1]
    total = np.where(np.arange(lam.shape[-1]) == DEATH, lam_d, lam + lam_d)  # (n, H, 5)
    share = np.where(np.arange(lam.shape[-1]) == DEATH, 1.0, lam / total)
    surv_end = np.exp(-np.cumsum(total * DT, axis=1))  # survival to the end of each step
    surv_start = np.concatenate([np.ones_like(surv_end[:, :1]), surv_end[:, :-1]], axis=1)
    step_p = surv_start * share * (1.0 - np.exp(-total * DT))
    cum = np.concatenate([np.zeros_like(step_p[:, :1]), np.cumsum(step_p, axis=1)], axis=1)
    out = np.empty((lam.shape[0], lam.shape[-1], len(horizons_days)), np.float32)
    for i, h in enumerate(horizons_days):
        full, frac = horizon_steps(h)
        risk = cum[:, full]
        if frac > 0:
            risk = risk + surv_start[:, full] * share[:, full] * (1.0 - np.exp(-total[:, full] * frac * DT))
        out[:, :, i] = risk
    return out


def steps_needed(horizons_days) -> int:
    full, frac = horizon_steps(max(horizons_days))
    return full + (1 if frac > 0 else 0)
