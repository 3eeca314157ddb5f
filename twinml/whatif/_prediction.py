"""What a what-if model predicts for each row: risk and effect under every plan, bands and support."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["PlanPrediction"]


@dataclass
class PlanPrediction:
    """Risks and effects under every plan for each prediction row.

    Arrays are indexed (row, plan, outcome, horizon) with plans in ``plans`` order (reference
    first); effects are risk under the plan minus risk under the reference (NaN where the plan is
    outside support for the row).
    """

    index: pd.DataFrame  # subject_id, prediction_time
    plans: list[str]
    outcomes: list[str]
    horizons: list[int]
    risk: np.ndarray  # mean over bootstrap heads
    risk_lo: np.ndarray
    risk_hi: np.ndarray
    effect: np.ndarray
    effect_lo: np.ndarray
    effect_hi: np.ndarray
    propensity: np.ndarray  # (row, plan)
    in_support: np.ndarray  # (row, plan) bool
    reason: np.ndarray  # (row, plan) str: "" when in support
    band: float

    def table(self) -> pd.DataFrame:
        """Long format: one row per (prediction row, plan, outcome, horizon)."""
        n, p, o, h = self.risk.shape
        grid = np.indices((n, p, o, h)).reshape(4, -1)
        out = self.index.iloc[grid[0]].reset_index(drop=True)
        out["plan"] = np.asarray(self.plans)[grid[1]]
        out["outcome"] = np.asarray(self.outcomes)[grid[2]]
        out["horizon_days"] = np.asarray(self.horizons)[grid[3]]
        for name in ("risk", "risk_lo", "risk_hi", "effect", "effect_lo", "effect_hi"):
            out[name] = getattr(self, name).reshape(-1)
        out["propensity"] = self.propensity[grid[0], grid[1]]
        out["in_support"] = self.in_support[grid[0], grid[1]]
        out["support_note"] = self.reason[grid[0], grid[1]]
        return out
