"""The what-if twin: risk under alternative treatment plans.

- :class:`TreatmentResponseModel` (``_model.py``; its bootstrap heads in ``_heads.py``, its overlap
  rules in ``_support.py``) learns risk curves under each plan of a :class:`~twinml.cohort.PlanSet`;
- :class:`PlanPrediction` is what it predicts per row: risk and effect under every plan with bands,
  propensities and support flags;
- :func:`what_if` compares plans for chosen patients (matched to the model's plans by what they
  start), :class:`PlanCurvesDisplay` draws them, :func:`write_whatif` writes them, and
  :func:`what_if_from_uri` does all three for a registered model (``twinml whatif``);
- :func:`true_plan_risks`, :func:`effect_scores`, :func:`policy_value` score effects against the
  simulator's counterfactual truth (PEHE, ATE error, band coverage, policy value).

``TreatmentResponseModel`` is imported lazily, so reading or plotting a what-if result does not
import torch.
"""

from ._api import (
    NOT_TRAINED,
    PlanCurvesDisplay,
    WhatIfResult,
    match_plans,
    parse_subject_ids,
    plan_curves_figure,
    what_if,
    what_if_from_uri,
    write_whatif,
)
from ._effects import effect_scores, policy_value, true_plan_risks
from ._prediction import PlanPrediction

__all__ = [
    "TreatmentResponseModel",
    "PlanPrediction",
    "what_if",
    "WhatIfResult",
    "match_plans",
    "plan_curves_figure",
    "PlanCurvesDisplay",
    "write_whatif",
    "what_if_from_uri",
    "parse_subject_ids",
    "NOT_TRAINED",
    "true_plan_risks",
    "effect_scores",
    "policy_value",
]


def __dir__():
    return sorted(__all__)


def __getattr__(name):
    if name == "TreatmentResponseModel":
        from ._model import TreatmentResponseModel

        return TreatmentResponseModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
