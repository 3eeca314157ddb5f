"""MLflow tracking: runs, params, metrics, artifacts, the pyfunc model and the registry. Every MLflow call
in twinml is in this package (tests/test_layout.py checks that no other module imports mlflow)."""

from ._mlflow import (
    AUDIT_PASSED_TAG,
    LoadedModel,
    code_version,
    data_fingerprint,
    flatten_params,
    load_registered_model,
    log_frame,
    log_ingest_report,
    log_metrics_table,
    log_model,
    log_predictions,
    log_search_trials,
    pip_requirements,
    promote,
    resolve_model_version,
    resolve_tracking_uri,
)
from ._pyfunc import RiskModelPyfunc, as_pyfunc_input, prediction_index, synthetic_input_example
from ._runs import active_tracking_uri, log_audit_run, log_training_run, training_run_config, training_run_id

__all__ = [
    "resolve_tracking_uri",
    "flatten_params",
    "data_fingerprint",
    "code_version",
    "log_model",
    "log_frame",
    "log_metrics_table",
    "pip_requirements",
    "log_ingest_report",
    "log_predictions",
    "log_search_trials",
    "RiskModelPyfunc",
    "as_pyfunc_input",
    "prediction_index",
    "synthetic_input_example",
    "AUDIT_PASSED_TAG",
    "LoadedModel",
    "resolve_model_version",
    "load_registered_model",
    "promote",
    "log_training_run",
    "training_run_id",
    "training_run_config",
    "log_audit_run",
    "active_tracking_uri",
]
