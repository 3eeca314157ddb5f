"""The monitoring policy: how panels are compared and the gates that set the exit code (YAML -> typed config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .._validation import PositiveInt, StrictModel, load_validated
from ..evaluation import MIN_CELL

__all__ = ["MonitorPolicy", "MonitorGates", "load_monitor_policy"]


class MonitorGates(StrictModel):
    """``input_drift`` / ``output_drift``: fail when any input feature / predicted-risk column is
    flagged; ``max_unseen_code_rate``: fail when more of the current window's events than this carry
    a code the reference never recorded. With outcomes (performance over time), on each label's
    latest reported period: ``min_observed_expected`` / ``max_observed_expected``: fail when the
    whole O/E interval lies outside; ``max_auroc_drop``: fail when the AUROC has credibly dropped by
    more than this since the first period (the 95 % interval of the drop lies wholly above it).
    ``null`` switches a gate off."""

    input_drift: bool = True
    output_drift: bool = True
    max_unseen_code_rate: float | None = 0.01
    min_observed_expected: float | None = 0.8
    max_observed_expected: float | None = 1.25
    max_auroc_drop: float | None = 0.05


class MonitorPolicy(StrictModel):
    """How two panels are compared (``configs/monitor_policy.yaml``).

    A feature is flagged when its Westfall-Young adjusted permutation p-value is below ``alpha`` and
    its population stability index reaches ``min_psi``. Features are profiled over the
    ``lookback_days`` before each panel's as-of time; a feature is tested when it has
    ``min_subjects`` subjects; counts under ``min_cell`` are suppressed in the report. Performance
    over time pools scores by ``period`` and bootstraps AUROC intervals ``n_bootstrap`` times.
    """

    lookback_days: PositiveInt = 365
    alpha: float = 0.01
    min_psi: float = 0.1
    permutations: PositiveInt = 999
    min_subjects: PositiveInt = 50
    min_cell: PositiveInt = MIN_CELL
    seed: int = 0
    period: Literal["quarter", "month"] = "quarter"
    n_bootstrap: PositiveInt = 200
    gates: MonitorGates = Field(default_factory=MonitorGates)

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v):
        if not 0 < v < 1:
            raise ValueError(f"must be between 0 and 1 (exclusive). Got {v} instead")
        return v


def load_monitor_policy(path_or_dict=None) -> MonitorPolicy:
    """Read and validate a monitoring policy; ``None`` (or an empty file) gives the defaults."""
    if path_or_dict is None:
        return MonitorPolicy()
    return load_validated(MonitorPolicy, path_or_dict, what="monitoring policy", source="policy", empty_is_default=True)
