"""The audit policy: what to audit, how, and the gates that decide pass or fail (YAML -> typed config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .._validation import PositiveInt, StrictModel, load_validated
from ..evaluation import DEFAULT_ATTRIBUTES, MIN_CELL

__all__ = ["AuditPolicy", "Gates", "ExplainPolicy", "MitigationPolicy", "MembershipPolicy", "load_policy"]

_Constraint = Literal["demographic_parity", "equalized_odds", "true_positive_rate_parity", "false_positive_rate_parity"]
_DEFAULT_CONSTRAINTS: tuple[_Constraint, ...] = ("true_positive_rate_parity", "equalized_odds")


class Gates(StrictModel):
    """Each gate applies to every gated label; ``null`` switches a gate off.

    - ``min_auroc_lower_bound``: the lower end of the AUROC's 95% bootstrap interval must reach it.
    - ``max_ece``: expected calibration error (equal-mass bins, after the calibrator) at most this.
    - ``max_subgroup_auroc_gap``: no unsuppressed group may be *credibly* worse than the whole
      population by more than this: a group fails when the upper end of its AUROC interval is
      below overall AUROC minus the gap.
    Subgroup gates judge every group with at least ``min_cell`` subjects. ``subgroup_reference``
    is what the O/E and true-risk gates compare a group with: ``population`` (everyone, including
    the group itself) or ``largest_group`` (the attribute's largest group, e.g. the majority race).
    - ``min_observed_expected_ratio``: each unsuppressed group's observed / expected events (O/E,
      from recorded labels) relative to the population's must not be *credibly* outside [r, 1/r]:
      a group fails when the whole 95% Poisson interval of its O/E lies outside. A group whose
      diagnoses go unrecorded has far fewer observed events than predicted.
    - ``min_true_risk_ratio``: on simulated data (ground truth beside the events), every
      unsuppressed group's ratio of mean predicted to mean true risk must lie within [r, 1/r] times
      the whole population's ratio (an under-diagnosed group's risk is under-predicted); skipped,
      and said so, where there is no ground truth.
    - ``min_faithfulness_ratio``: removing the top-k attributed events must move the risk at least
      this many times more than removing k random events (sequence models).
    - ``max_membership_auc_upper``: the upper end of the 95 % interval of each membership-inference
      attack's AUROC (training subjects against held-out ones), over all gated labels pooled and over
      each gated label alone, must not exceed it.
    """

    min_auroc_lower_bound: float | None = 0.6
    max_ece: float | None = 0.02
    max_subgroup_auroc_gap: float | None = 0.10
    min_observed_expected_ratio: float | None = 0.7
    min_true_risk_ratio: float | None = 0.7
    min_faithfulness_ratio: float | None = 1.5
    max_membership_auc_upper: float | None = 0.6
    subgroup_reference: Literal["population", "largest_group"] = "population"


class ExplainPolicy(StrictModel):
    label: str | None = None  # default: the first audited label
    n_rows: PositiveInt = 1000  # explained rows, sampled from the audited split
    n_samples: PositiveInt = 16  # expected-gradient samples per row (sequence models)
    top_k: PositiveInt = 5  # events removed in the faithfulness check


class MembershipPolicy(StrictModel):
    """The membership-inference audit: up to ``max_subjects`` held-out subjects with a known label
    (non-members) against as many such training subjects drawn at random (members); ``enabled: false``
    skips it. Always the loss-threshold attack; with ``reference_models`` K > 0 also the stronger
    reference-model (RMIA-style) attack, which refits K copies of the model, each on its own share of the
    training subjects not drawn as members (at most ``reference_subjects``; default an equal share), and
    takes as many other held-out subjects as its population (so at most half the held-out subjects are
    non-members). Off by default because it costs K fits."""

    enabled: bool = True
    max_subjects: PositiveInt = 2000
    reference_models: int = Field(default=0, ge=0, le=16)
    reference_subjects: PositiveInt | None = None


class MitigationPolicy(StrictModel):
    """Report what fairlearn's ThresholdOptimizer would change (never applied to the model)."""

    attribute: str | None = None  # e.g. race; null: no trade-off table
    constraints: list[_Constraint] = Field(default_factory=lambda: list(_DEFAULT_CONSTRAINTS))
    fit_split: Literal["train", "tuning", "held_out"] = "tuning"


class AuditPolicy(StrictModel):
    """What the audit measures and the gates it applies (``configs/audit_policy.yaml``)."""

    split: Literal["train", "tuning", "held_out", "held_out_same_period"] = "held_out"
    labels: list[str] | None = None  # audited labels; default all the model predicts
    gate_labels: list[str] | None = None  # labels the gates apply to; default the audited ones
    attributes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    age_bands: list[int] = Field(default_factory=lambda: [18, 45, 65])
    intersections: list[tuple[str, str]] = Field(default_factory=lambda: [("sex", "race")])
    min_cell: PositiveInt = MIN_CELL
    operating_top_fraction: float = 0.1  # threshold = risk of the top 10% of audited rows
    n_bootstrap: int = 200
    explain: ExplainPolicy = Field(default_factory=ExplainPolicy)
    mitigation: MitigationPolicy = Field(default_factory=MitigationPolicy)
    membership: MembershipPolicy = Field(default_factory=MembershipPolicy)
    gates: Gates = Field(default_factory=Gates)
    intended_use: str = (
        "Decision support: ranks adult patients by their risk of the audited outcomes "
        "for preventive outreach. Not for diagnosis, and not a substitute for clinical judgement."
    )
    limitations: list[str] = Field(default_factory=list)

    @field_validator("operating_top_fraction")
    @classmethod
    def _fraction(cls, v):
        if not 0 < v < 1:
            raise ValueError(f"must be between 0 and 1 (exclusive). Got {v} instead")
        return v


def load_policy(path_or_dict=None) -> AuditPolicy:
    """Read and validate an audit policy; ``None`` (or an empty file) gives the defaults."""
    if path_or_dict is None:
        return AuditPolicy()
    return load_validated(AuditPolicy, path_or_dict, what="audit policy", source="policy", empty_is_default=True)
