"""Treatment plans and the factual plan each prediction row followed.

A plan set (YAML, or the ``treatment`` section of a task) names the options a clinician could
take at a prediction time ``t``: ``no_new_treatment`` (the reference) or starting one or more
treatments, each given by its codes and a start offset. The **factual plan** of a row is read
from the events after ``t``, vectorised over all rows:

- a plan code is *newly started* in a row when its first occurrence for the subject falls in
  ``(t + start_days, t + start_days + decision_window_days]`` and it never occurred at or
  before ``t``;
- the factual plan is the plan whose codes are exactly the plan codes newly started in the row
  (the reference plan when none is); a row that matches no plan (another combination, or a
  start at another offset) is ``None`` and is left out of treatment-response training,
  counted, never guessed;
- a plan is *already on* for a row when any of its codes occurred at or before ``t``: starting
  it is not an option there, and its effect is reported as not applicable.

Only events after ``t`` decide the factual plan; features still see only events at or before ``t``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import field_validator, model_validator

from .._arrays import NAT, EventArrays, prior_and_next
from .._validation import PositiveInt, StrictModel, load_validated

__all__ = ["TreatmentPlan", "PlanSet", "load_plans", "factual_plans"]

_DAY_US = 86_400 * 1_000_000


class TreatmentPlan(StrictModel):
    """Start every code in ``codes`` ``start_days`` after the prediction time (no codes: nothing new)."""

    codes: tuple[str, ...] = ()
    start_days: int = 0
    description: str | None = None

    @field_validator("start_days")
    @classmethod
    def _non_negative(cls, v):
        if v < 0:
            raise ValueError(f"must be a non-negative int (days after the prediction time). Got {v} instead")
        return v


class PlanSet(StrictModel):
    """Named treatment plans, the reference they are compared with, and the decision window."""

    plans: dict[str, TreatmentPlan]
    reference: str = "no_new_treatment"
    decision_window_days: PositiveInt = 90

    @model_validator(mode="after")
    def _consistent(self):
        if self.reference not in self.plans:
            raise ValueError(f"reference {self.reference!r} is not one of the plans {sorted(self.plans)}")
        if self.plans[self.reference].codes:
            raise ValueError(
                f"the reference plan {self.reference!r} must start nothing (codes: []); "
                f"got {list(self.plans[self.reference].codes)}"
            )
        seen: dict[tuple, str] = {}
        for name, plan in self.plans.items():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"plan names must be letters, digits and '_'. Got {name!r} instead")
            key = (frozenset(plan.codes), plan.start_days if plan.codes else 0)
            if key in seen:
                raise ValueError(f"plans {seen[key]!r} and {name!r} start the same codes at the same time")
            seen[key] = name
        return self

    @property
    def names(self) -> list[str]:
        """Plan names, the reference first."""
        return [self.reference] + [p for p in self.plans if p != self.reference]

    @property
    def codes(self) -> list[str]:
        """Every code any plan starts, sorted."""
        return sorted({c for p in self.plans.values() for c in p.codes})


def load_plans(path_or_dict) -> PlanSet:
    """Read and validate a plans YAML file (or dict); errors name the file, key and rule."""
    return load_validated(PlanSet, path_or_dict, what="treatment plans", source="plans")


def factual_plans(events: pd.DataFrame, index: pd.DataFrame, plans: PlanSet) -> pd.DataFrame:
    """The plan each row of ``index`` followed, and which plans were already on.

    Returns
    -------
    DataFrame aligned with ``index``: ``plan`` (a plan name; missing when the treatments started
    match no plan) and one bool column ``already_on/{plan}`` per plan.
    """
    ev = EventArrays(events)
    q_rank = pd.Index(ev.subjects).get_indexer(index["subject_id"].to_numpy(np.int64))
    q_time = index["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)
    # per code: was it given at or before t, and when after t was it first given
    before, first_after = {}, {}
    for code in plans.codes:
        hit = ev.codes_matching(codes=[code])
        before[code], first_after[code] = prior_and_next(ev.subject[hit], ev.time[hit], q_rank, q_time)
    period_end = q_time + _window_end(plans) * _DAY_US
    new_in_period = {c: ~before[c] & (first_after[c] != NAT) & (first_after[c] <= period_end) for c in plans.codes}

    n = len(index)
    out = pd.DataFrame(index=index.index)
    matched = np.zeros(n, bool)
    plan = np.full(n, None, dtype=object)
    for name, p in sorted(plans.plans.items(), key=lambda kv: -len(kv[1].codes)):
        # exactly this set: no other plan code newly started anywhere in the decision period
        ok = ~np.logical_or.reduce([new_in_period[c] for c in set(plans.codes) - set(p.codes)] + [np.zeros(n, bool)])
        lo = q_time + p.start_days * _DAY_US
        hi = lo + plans.decision_window_days * _DAY_US
        for code in p.codes:
            ok &= new_in_period[code] & (first_after[code] > lo) & (first_after[code] <= hi)
        take = ok & ~matched
        plan[take] = name
        matched |= take
    out["plan"] = plan
    for name, p in plans.plans.items():
        on = np.zeros(n, bool)
        for code in p.codes:
            on |= before[code]
        out[f"already_on/{name}"] = on
    return out


def _window_end(plans: PlanSet) -> int:
    """Days after t through which any plan's start counts (the latest plan's window end)."""
    return max(p.start_days for p in plans.plans.values()) + plans.decision_window_days
