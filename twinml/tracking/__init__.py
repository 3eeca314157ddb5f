"""MLflow tracking: runs, params, metrics, artifacts and the pyfunc model."""

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
]
