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

How the model works
-------------------
:class:`TreatmentResponseModel` is a :class:`SequenceRiskModel` whose network also has a
propensity head (which plan a patient like this one gets) and, per plan, an offset of the
hazard log-odds (the plan's effect, allowed to vary with the patient). Trained on the factual
plan of each row (:func:`twinml.cohort.factual_plans`) in two stages:

1. **representation**: the encoder, the hazard head, the plan offsets and the propensity head
   learn together (the propensity loss makes the representation keep what drove the treatment
   decision: the DragonNet idea), early-stopping on the tuning rows;
2. **heads**: with the representation frozen, ``n_boot`` heads are refitted to convergence by
   L-BFGS, each a ridge-penalised logistic hazard model (a base term and, per plan, an offset
   and its interaction with the representation) on its own Poisson(1) bootstrap weights per
   subject. Stochastic training moves the plan offsets only slowly (few treated rows per batch:
   measured, it left effects shrunk towards zero); the convex refit does not stop short.
   ``cross_fit=True`` trains two encoders on two subject folds and fits each one's heads on the
   other fold (measured: no change in PEHE or coverage, so off by default).

Both stages run ``n_encoders`` times (3 by default) from different random starts: a deep ensemble
whose members each have their own bootstrap heads.

**Confounding**: the history at the decision (what was measured, past diagnoses) enters the
outcome model, so effects are adjusted for it (regression adjustment on the representation).
``balancing="ipw"`` also weights the head refit by stabilised inverse propensity weights;
measured on the simulator it widened errors (benchmarks/whatif.py), so it is off by default.

**Uncertainty**: the band of a risk or an effect is the mean +/- z * SD across the bootstrap
heads of every encoder (90% by default): the sampling spread of the heads plus the disagreement
between the encoders' representations, not how far a patient's true risk may sit from what their
history shows. Measured on the simulator (benchmarks/whatif.py), 90% bands covered 69% of true
individual effects with one encoder and no forecast task, 77% with the forecast task, 82% with
three encoders and the forecast task (the defaults).

**Overlap**: see ``_support.py``; a plan outside support for a row has NaN risk and effect (not
estimable), never a number.
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
