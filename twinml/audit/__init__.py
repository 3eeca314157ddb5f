"""Governance audit: calibration, subgroup fairness, explanations, policy gates and a signed-off report."""

from ._audit import AuditInputs, compute_audit, suppress_small_counts
from ._card import render_model_card
from ._figures import DriversDisplay, ReliabilityBandsDisplay, SubgroupForestDisplay
from ._policy import AuditPolicy, ExplainPolicy, Gates, load_policy
from ._render import render_html
from ._run import AUDIT_FILES, AuditResult, run_audit

__all__ = [
    "AuditPolicy",
    "ExplainPolicy",
    "Gates",
    "load_policy",
    "AuditInputs",
    "compute_audit",
    "suppress_small_counts",
    "render_html",
    "render_model_card",
    "run_audit",
    "AuditResult",
    "AUDIT_FILES",
    "ReliabilityBandsDisplay",
    "DriversDisplay",
    "SubgroupForestDisplay",
]
