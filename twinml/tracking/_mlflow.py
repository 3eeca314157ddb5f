"""Every MLflow call twinml makes lives here.

The embedded default store is ``sqlite:///mlflow.db`` in the working directory (MLflow 3's
file store is deprecated); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` point at a server.
Params carry configuration only, never subject-level data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import warnings
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from .._validation import ConfigError
from .._version import __version__
from ._integrity import (
    acting_user,
    check_audited_digest,
    combined_digest,
    download_model,
    file_digests,
    warn_outside_registry,
)
from ._pyfunc import RiskModelPyfunc, synthetic_input_example

# MLflow draws a progress bar for every artifact download (each model load) and logs INFO lines (creating
# the database tables, creating an experiment); twinml prints its own progress, so both are off unless the
# user asks for them (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR, MLFLOW_LOGGING_LEVEL). MLflow's warnings stay.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
    logging.getLogger("mlflow").setLevel(logging.WARNING)

if TYPE_CHECKING:
    from ..models import RiskModel

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
    "AUDIT_PASSED_TAG",
    "LoadedModel",
    "resolve_model_version",
    "load_registered_model",
    "promote",
]

_PARAM_MAX = 500
_RUNTIME_PACKAGES = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "lightgbm", "mlflow", "pydantic", "pyyaml")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else ``MLFLOW_TRACKING_URI``, else a SQLite store in the working directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def set_tracking_uri(uri: str | None = None) -> str:
    """Point this process's MLflow client at ``uri`` (resolved as :func:`resolve_tracking_uri`); returns it."""
    resolved = resolve_tracking_uri(uri)
    mlflow.set_tracking_uri(resolved)
    return resolved


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}`` (lists as JSON), values cut to MLflow-friendly length.

    >>> flatten_params({"task": {"horizons_days": [365, 730], "name": "x"}})
    {'task.horizons_days': '[365, 730]', 'task.name': 'x'}
    """
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."
    return out


def data_fingerprint(meds_dir) -> str:
    """SHA-256 over the dataset's file names, sizes and metadata contents (cheap, stable)."""
    root = Path(meds_dir)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.parquet")) + sorted(root.rglob("*.json")):
        rel = f.relative_to(root).as_posix()
        h.update(f"{rel}:{f.stat().st_size}".encode())
        if rel.startswith("metadata/"):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def code_version() -> str:
    """``twinml <version>`` plus the git commit of the source tree when there is one."""
    here = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}" + (f"+g{sha}" if sha else "")


def pip_requirements(*, torch: bool = False, opacus: bool = False) -> list[str]:
    """Pinned runtime requirements (explicit, so MLflow does not spend seconds inferring them); opacus for
    a privately trained model, whose network holds opacus' GRU."""
    extra = (("torch",) if torch else ()) + (("opacus",) if opacus else ())
    return [f"{p}=={version(p)}" for p in _RUNTIME_PACKAGES + extra]


def log_model(model, *, name: str = "model", registered_model_name: str | None = None):
    """Log a fitted TabularRiskModel as a pyfunc with signature and a synthetic input example."""
    example = synthetic_input_example(model)
    output = RiskModelPyfunc(model).predict(None, example)
    package_dir = Path(__file__).resolve().parents[1]
    with warnings.catch_warnings(), _quiet_logger("mlflow.pyfunc"):
        # subject_id is never missing, so MLflow's hint about integer columns does not apply
        warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent missing values.*")
        signature = infer_signature(example, output, params={"prediction_time": "", "output": "risk"})
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=RiskModelPyfunc(model),
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(
                torch=hasattr(model, "net_") or hasattr(model, "record_"),
                opacus=getattr(model, "privacy_", None) is not None,
            ),
            code_paths=[str(package_dir)],
            registered_model_name=registered_model_name,
        )


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Hide one logger's notices (the cloudpickle notice of pyfunc) for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def log_frame(df: pd.DataFrame, artifact_file: str) -> None:
    """Log a small aggregate table as CSV (never subject-level rows)."""
    mlflow.log_text(df.to_csv(index=False), artifact_file)


def log_metrics_table(metrics: pd.DataFrame, *, split: str) -> None:
    """Each numeric cell of a metrics table (one row per label) as ``{split}/{label}/{metric}``."""
    values = {}
    for rec in metrics.to_dict("records"):
        for key, val in rec.items():
            if key != "label" and isinstance(val, (int, float)) and pd.notna(val):
                values[f"{split}/{rec['label']}/{key}"] = float(val)
    mlflow.log_metrics(values)


def log_predictions(predictions: dict) -> None:
    """``{split: {label: frame}}`` in the MEDS prediction schema as artifacts ``predictions/{split}/{label}.parquet``.

    These are subject-level rows (ids, prediction times, risks), the model's own output on the dataset
    it was trained on: an artifact store holding them needs the dataset's own access rules.
    """
    import tempfile

    from ..evaluation import write_meds_predictions

    with tempfile.TemporaryDirectory() as tmp:
        out = write_meds_predictions(Path(tmp) / "predictions", predictions)
        mlflow.log_artifacts(str(out), "predictions")


def log_search_trials(trials: dict) -> None:
    """Each sweep trial (``{label: [trial, ...]}``) as a nested run of the active run: params and tuning loss."""
    for label, records in trials.items():
        for rec in records:
            with mlflow.start_run(run_name=f"{label} trial {rec['number']}", nested=True):
                mlflow.log_params(
                    {"label": label, **{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in rec["params"].items()}}
                )
                mlflow.log_metrics(
                    {"tuning/log_loss": rec["eval_log_loss"], "trees": float(rec["trees"]), "seconds": rec["seconds"]}
                )


def log_ingest_report(report) -> bool:
    """The data-quality summary of an ingestion (counts only) as metrics and an artifact of the active run;
    False (nothing logged) when no run is active."""
    if mlflow.active_run() is None:
        return False
    mlflow.log_dict(report.to_dict(), "quality/summary.json")
    mlflow.log_metrics(
        {
            "ingest/rows_read": report.rows_read,
            "ingest/rows_kept": report.rows_kept,
            "ingest/rows_quarantined": report.rows_quarantined,
        }
    )
    return True


# ---- the model registry: which version is scored, and who let it be -------------------------------

AUDIT_PASSED_TAG = "twinml.audit.passed"  # "true" / "false", set on a model version by the audit (issue 6)


@dataclass
class LoadedModel:
    """A pyfunc model loaded for scoring, with the registry version it came from (if any) and the
    digest of the artifacts it was loaded from (``files``: path -> SHA-256)."""

    uri: str
    name: str | None
    version: str | None
    pyfunc: object
    model: RiskModel  # the fitted TabularRiskModel / SequenceRiskModel / ... inside
    digest: str = ""
    files: dict = field(default_factory=dict)


def resolve_model_version(model_uri: str):
    """``models:/name@alias`` or ``models:/name/version`` -> the registry's ModelVersion; None for other URIs
    (``runs:/...``, a path, or an MLflow 3 logged-model URI ``models:/m-...``)."""
    if not model_uri.startswith("models:/"):
        return None
    client = mlflow.MlflowClient()
    ref = model_uri[len("models:/") :].rstrip("/")
    if "@" not in ref and "/" not in ref:  # MLflow 3 logged-model id (models:/m-...), not a registry version
        return None
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, _, version = ref.rpartition("/")
    if not name or not version.isdigit():
        raise ConfigError(f"model URI {model_uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>.")
    return client.get_model_version(name, version)


def load_registered_model(
    model_uri: str, *, tracking_uri: str | None = None, verify: str | None = None, override_reason: str | None = None
) -> LoadedModel:
    """Load a logged or registered twinml pyfunc model and say which registry version it is.

    The artifacts are downloaded and hashed first; with ``verify`` (the command's name, e.g. ``"score"``)
    a registered version whose artifacts changed since its audit is refused before anything is
    unpickled (see :func:`~twinml.tracking._integrity.check_audited_digest`; ``override_reason`` lets it
    through, recorded). A model from a path or a foreign URI is loaded with a warning: its pickle runs code.
    """
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mv = resolve_model_version(model_uri)
    # load the exact version an alias points to now, so the version recorded is the version scored
    uri = f"models:/{mv.name}/{mv.version}" if mv is not None else model_uri
    warn_outside_registry(model_uri)
    tmp, local = download_model(uri)
    files = file_digests(local)
    digest = combined_digest(files)
    if verify is not None and mv is not None:
        check_audited_digest(mv, files, what=verify, override_reason=override_reason)
    with _quiet_logger("mlflow.pyfunc"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        pyfunc = mlflow.pyfunc.load_model(str(local))
    inner = pyfunc.unwrap_python_model()
    if not isinstance(inner, RiskModelPyfunc):
        raise ConfigError(f"model URI {model_uri!r}: not a twinml risk model (pyfunc wraps {type(inner).__name__}).")
    loaded = LoadedModel(model_uri, mv.name if mv else None, str(mv.version) if mv else None, pyfunc, inner.model)
    loaded.digest, loaded.files = digest, files
    tmp.cleanup()
    return loaded


def _record_then_move_alias(client, name: str, version: str, alias: str, tags: dict) -> None:
    """Tag the version (the record comes first), then move the alias. If the server refuses either
    (HTTP 403: the user may not), it is a ConfigError; when the tags were written and the alias refused,
    ``twinml.promotion.<alias>`` is set to ``refused`` so the version's record shows the attempt."""
    written = []
    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
            written.append(key)
        client.set_registered_model_alias(name, alias, version)
    except mlflow.exceptions.MlflowException as err:
        if err.error_code != "PERMISSION_DENIED":
            raise
        moving = len(written) == len(tags)
        if moving:
            client.set_model_version_tag(name, version, f"twinml.promotion.{alias}", "refused")
        raise ConfigError(
            f"promote: the tracking server refused user {acting_user()!r} "
            f"{'moving the alias' if moving else 'tagging the version'} (permission denied): pointing @{alias} "
            f"of {name!r} at version {version} needs MANAGE on the registered model, or an admin (README: "
            "Deploying with access control). "
            + (
                f"The alias did not move; the version records the attempt (twinml.promotion.{alias}=refused)."
                if moving
                else "Nothing was changed."
            )
        ) from None


def promote(
    name: str, version: str | int, alias: str, *, override_reason: str | None = None, tracking_uri: str | None = None
) -> dict:
    """Point ``alias`` (e.g. ``champion``) at a model version, only if its audit gates passed.

    Without a passed audit (tag ``twinml.audit.passed = true`` on the version) promotion is
    refused unless ``override_reason`` is given; an override is recorded on the version (reason,
    user, alias) before the alias moves. So is a version whose artifacts changed since its audit
    (their digest is recomputed here): refused, naming the changed files, unless overridden.
    """
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    client = mlflow.MlflowClient()
    mv = client.get_model_version(name, str(version))
    audit = mv.tags.get(AUDIT_PASSED_TAG)
    if audit != "true" and not override_reason:
        why = "its audit failed" if audit == "false" else "it has no audit result"
        raise ConfigError(
            f"promote: {name} version {version} cannot become @{alias}: {why} "
            f"(tag {AUDIT_PASSED_TAG}={audit!r}). Run the audit, or pass an override reason "
            "(CLI: --override 'REASON'), which is recorded on the version."
        )
    tmp, local = download_model(f"models:/{name}/{version}")  # the bytes the alias will serve, hashed
    with tmp:
        check_audited_digest(mv, file_digests(local), what="promote", override_reason=override_reason)
    tags = {f"twinml.promotion.{alias}": "override" if audit != "true" else "audit passed"}
    if audit != "true":
        tags |= {
            f"twinml.promotion.{alias}.override_reason": str(override_reason),
            f"twinml.promotion.{alias}.override_by": acting_user(),
        }
    _record_then_move_alias(client, name, str(version), alias, tags)
    return {"name": name, "version": str(version), "alias": alias, "audit": audit, "override": audit != "true"}
