"""Risk bands: what a model's predicted risk has meant on the tuning rows, kept with the model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import binomtest

__all__ = ["RiskBands"]


@dataclass
class RiskBands:
    """What a predicted risk has meant on the tuning rows: for each label, equal-mass bins of the
    model's (calibrated) risk, each with the observed rate and its Wilson 95 % interval.

    A patient's interval is the band of the bin their risk falls in: of the tuning patients the
    model scored like this one, that share had the outcome. Only aggregates are kept (bin edges
    halfway between neighbouring tuning risks, rates, intervals), and every bin holds at least
    ``min_rows`` rows with a known label; a label with fewer than that has no band. The tuning rows
    also early-stopped (and calibrated) the model, so the bands lean optimistic; the audit's
    held-out reliability is the check.

    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0, 0.5, 2000)
    >>> bands = RiskBands.fit(pd.DataFrame({"x_365d": p}), pd.DataFrame({"x_365d": (rng.uniform(size=2000) < p) * 1.0}))
    >>> lo, hi = bands.interval("x_365d", np.array([0.025, 0.475]))  # the middle of the first and last tenth
    >>> bool(lo[0] < 0.025 < hi[0] and lo[1] < 0.475 < hi[1] and hi[0] < lo[1])
    True
    """

    edges: dict = field(default_factory=dict)  # label -> interior bin edges (n_bins - 1)
    observed: dict = field(default_factory=dict)  # label -> observed rate per bin
    lo: dict = field(default_factory=dict)
    hi: dict = field(default_factory=dict)
    confidence: float = 0.95

    @classmethod
    def fit(
        cls,
        risks: pd.DataFrame,
        labels: pd.DataFrame,
        columns=None,
        *,
        n_bins: int = 10,
        min_rows: int = 50,
        confidence: float = 0.95,
    ) -> RiskBands:
        """Bands from the rows of ``risks`` and ``labels`` (aligned; labels 1/0, NaN or NA when unknown)."""
        out = cls(confidence=confidence)
        for c in (
            columns
            if columns is not None
            else [c for c in risks if c in labels and c not in ("subject_id", "prediction_time")]
        ):
            y = labels[c].astype("Float64").to_numpy(np.float64, na_value=np.nan)
            p = risks[c].to_numpy(np.float64)
            known = ~np.isnan(y) & np.isfinite(p)
            k = min(n_bins, int(known.sum()) // min_rows)
            if k < 1:
                continue
            order = np.argsort(p[known], kind="stable")
            ps, ys = p[known][order], y[known][order]
            parts = np.array_split(np.arange(ps.size), k)
            out.edges[c] = np.array([(ps[b[-1]] + ps[b[-1] + 1]) / 2 for b in parts[:-1]])
            rates, los, his = [], [], []
            for b in parts:
                ci = binomtest(int(ys[b].sum()), int(b.size)).proportion_ci(
                    confidence_level=confidence, method="wilson"
                )
                rates.append(float(ys[b].mean()))
                los.append(float(ci.low))
                his.append(float(ci.high))
            out.observed[c], out.lo[c], out.hi[c] = np.array(rates), np.array(los), np.array(his)
        return out

    def interval(self, label: str, risk) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper band for each risk of ``label`` (NaN where the label has no band)."""
        risk = np.asarray(risk, np.float64)
        if label not in self.edges:
            return np.full(risk.shape, np.nan), np.full(risk.shape, np.nan)
        b = np.searchsorted(self.edges[label], risk, side="right")
        ok = np.isfinite(risk)  # no band for a risk that is not a number
        return np.where(ok, self.lo[label][b], np.nan), np.where(ok, self.hi[label][b], np.nan)
