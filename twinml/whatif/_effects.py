"""Scoring treatment effects against the simulator's counterfactual truth.

For one label (outcome x horizon) every method gives, per row and plan, an estimated effect
(risk under the plan minus risk under the reference), optionally a band, and twinml says which
(row, plan) pairs are in support. Scores use only in-support pairs with a known true risk:

- **PEHE**: root mean squared error of the individual effect;
- **ATE error**: |mean estimated effect - mean true effect|;
- **coverage**: share of true effects inside the band;
- **policy value**: give each row the available plan (reference or in support) with the lowest
  estimated risk; its true risk reduction against the reference, as a share of the reduction of
  the oracle policy that picks the plan with the lowest true risk among the same options
  (``oracle_any_plan``: the oracle free to pick plans outside support too, for reference).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["true_plan_risks", "effect_scores", "policy_value"]


def true_plan_risks(truth: pd.DataFrame, index: pd.DataFrame, plans, column: str) -> np.ndarray:
    """True risk of ``column`` under each plan for each row of ``index``: (rows, plans), NaN if unknown."""
    keys = index[["subject_id", "prediction_time"]].reset_index(drop=True)
    keys = keys.assign(prediction_time=keys["prediction_time"].astype("datetime64[us]"))
    t = truth[truth["plan"].astype(str).isin(list(plans))][["subject_id", "prediction_time", "plan", column]]
    wide = t.assign(
        plan=t["plan"].astype(str), prediction_time=t["prediction_time"].astype("datetime64[us]")
    ).pivot_table(index=["subject_id", "prediction_time"], columns="plan", values=column, observed=True, dropna=False)
    out = keys.merge(wide.reset_index(), on=["subject_id", "prediction_time"], how="left")
    return np.column_stack([out[p].to_numpy(np.float64) if p in out else np.full(len(keys), np.nan) for p in plans])


def effect_scores(effect, true_effect, support, lo=None, hi=None) -> dict:
    """PEHE, ATE error, coverage and counts for one plan's effects (arrays over rows)."""
    ok = support & np.isfinite(true_effect) & np.isfinite(effect)
    e, t = effect[ok], true_effect[ok]
    out = {
        "n": int(ok.sum()),
        "pehe": float(np.sqrt(np.mean((e - t) ** 2))) if ok.any() else np.nan,
        "ate_true": float(t.mean()) if ok.any() else np.nan,
        "ate_est": float(e.mean()) if ok.any() else np.nan,
    }
    out["ate_error"] = abs(out["ate_est"] - out["ate_true"])
    out["coverage"] = float(np.mean((lo[ok] <= t) & (t <= hi[ok]))) if lo is not None and ok.any() else np.nan
    return out


def policy_value(est_effect, true_risk, support) -> dict:
    """Risk reduction of "lowest estimated risk" against the oracle, over rows with every true risk known.

    ``est_effect`` and ``true_risk`` are (rows, plans) with the reference in column 0 (its effect 0);
    ``support`` (rows, plans) says which plans may be chosen (the reference always may).
    """
    avail = support.copy()
    avail[:, 0] = True
    rows = np.isfinite(true_risk).all(axis=1)
    est = np.where(avail, np.nan_to_num(est_effect, nan=np.inf), np.inf)
    est[:, 0] = 0.0
    truth = np.where(avail, true_risk, np.inf)
    pick = np.argmin(est[rows], axis=1)
    best = np.argmin(truth[rows], axis=1)
    r = true_risk[rows]
    gain = r[:, 0] - r[np.arange(r.shape[0]), pick]
    oracle = r[:, 0] - r[np.arange(r.shape[0]), best]
    unrestricted = r[:, 0] - r.min(axis=1)
    return {
        "rows": int(rows.sum()),
        "reduction": float(gain.mean()),
        "oracle_reduction": float(oracle.mean()),
        "oracle_any_plan": float(unrestricted.mean()),
        "share_of_oracle": float(gain.mean() / oracle.mean()) if oracle.mean() > 0 else np.nan,
        "treated_share": float((pick != 0).mean()),
    }
