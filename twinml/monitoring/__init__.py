"""Watching a twin in production: is the panel being scored still the panel the model was validated on?

:func:`run_monitor` (``twinml monitor``) profiles two panels, a reference (what the model was
trained or validated on) and the current one, from their MEDS events and/or twinml scores files,
and compares them feature by feature: demographics, activity (sequence length, visit days), codes'
rates, lab values, predicted risks, and codes never seen before. Each feature gets a population
stability index and a permutation p-value adjusted over the whole report; gates from a policy YAML
set the verdict; the report is HTML + JSON with small cells suppressed, logged to MLflow against the
model version. With outcomes that have since arrived it reports performance over calendar time and
recommends recalibration or retraining; :func:`recalibrate` (``twinml recalibrate``) fits the update and
registers it as a new version with its lineage.
"""

from ._compare import FeatureTable, feature_tables, score_tables, unseen_codes
from ._performance import label_scores, performance_over_time, recommendations
from ._policy import MonitorGates, MonitorPolicy, load_monitor_policy
from ._profile import PanelProfile, profile_events, profile_meds
from ._recalibrate import RecalibrationReport, recalibrate
from ._report import DriftDisplay, PerformanceDisplay, RiskShiftDisplay, render_html
from ._run import MONITOR_FILES, MonitorResult, Panel, compare_panels, run_monitor

__all__ = [
    "run_monitor",
    "compare_panels",
    "MonitorResult",
    "Panel",
    "MONITOR_FILES",
    "MonitorPolicy",
    "MonitorGates",
    "load_monitor_policy",
    "PanelProfile",
    "profile_events",
    "profile_meds",
    "FeatureTable",
    "feature_tables",
    "score_tables",
    "unseen_codes",
    "render_html",
    "DriftDisplay",
    "RiskShiftDisplay",
    "PerformanceDisplay",
    "label_scores",
    "performance_over_time",
    "recommendations",
    "recalibrate",
    "RecalibrationReport",
]
