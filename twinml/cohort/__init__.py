"""Cohorts and tasks: prediction times, eligibility, labels per outcome x horizon, splits."""

from .._validation import load_validated
from ._labels import Cohort, build_labels, events_for_fit, to_meds_labels
from ._meds_labels import read_label_files
from ._plans import PlanSet, TreatmentPlan, factual_plans, load_plans
from ._task import OutcomeDefinition, PredictionTimes, SplitDefinition, TaskDefinition, load_task

__all__ = [
    "TaskDefinition",
    "OutcomeDefinition",
    "PredictionTimes",
    "SplitDefinition",
    "load_task",
    "Cohort",
    "build_labels",
    "events_for_fit",
    "to_meds_labels",
    "read_label_files",
    "PlanSet",
    "TreatmentPlan",
    "factual_plans",
    "load_plans",
    "load_validated",
]
