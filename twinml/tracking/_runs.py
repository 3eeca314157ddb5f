"""What a twinml run records in MLflow: the training run, the audit run, and the way back from a model to
the run that trained it. The pipeline and the audit compute; these functions are their only MLflow calls."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import pandas as pd

from ._integrity import AUDITED_DIGEST_TAG, DIGESTS_ARTIFACT
from ._mlflow import (
    AUDIT_PASSED_TAG,
    code_version,
    data_fingerprint,
    flatten_params,
    log_frame,
    log_metrics_table,
    log_model,
    log_predictions,
    log_search_trials,
    resolve_tracking_uri,
)

__all__ = [
    "log_training_run",
    "training_run_id",
    "training_run_config",
    "log_audit_run",
    "log_monitor_run",
    "log_recalibrated_model",
    "active_tracking_uri",
]

MONITOR_PASSED_TAG = "twinml.monitor.passed"

CONFIG_ARTIFACTS = ("config.yaml", "config.json")
PRIVACY_METRICS = ("epsilon", "delta", "max_grad_norm", "noise_multiplier", "sample_rate", "steps")


def log_training_run(
    config,
    *,
    tracking_uri: str,
    data_root: Path,
    config_text: str | None,
    cohort,
    n_train_rows: int,
    model,
    metrics: dict[str, pd.DataFrame],
    figures: dict[str, object],
    predictions: dict,
    min_cell: int,
) -> tuple[str, str]:
    """One experiment as one run of ``config.tracking.experiment`` on ``tracking_uri``; returns the run id
    and the logged model's URI.

    The run holds the flattened config as params, lineage tags, the config text (``config_text`` as
    ``config.yaml``, else the config as ``config.json``), the cohort's attrition and label counts, the
    train rows and the rows per factual plan (a count under ``min_cell`` is left out), the epoch history,
    each split's metrics (as metrics and CSV), ``figures`` (artifact path -> matplotlib figure, closed once
    logged), the MEDS predictions, the sweep trials as nested runs, and the model as a pyfunc (registered
    as ``config.tracking.register_as`` when set). Counts and aggregates only, except the predictions
    (see :func:`log_predictions`).
    """
    from .._plotting import close

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(config.tracking.experiment)
    cfg_json = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    with mlflow.start_run(run_name=config.name) as run:
        mlflow.log_params(flatten_params(config.model_dump(mode="json")))
        mlflow.set_tags(
            {
                "twinml.code_version": code_version(),
                "twinml.data_fingerprint": data_fingerprint(data_root),
                "twinml.config_hash": hashlib.sha256(cfg_json.encode()).hexdigest()[:16],
                "twinml.data_source": config.data.source,
                "twinml.seed": str(config.seed),
            }
        )
        mlflow.log_text(config_text or cfg_json, CONFIG_ARTIFACTS[0] if config_text else CONFIG_ARTIFACTS[1])
        log_frame(cohort.attrition, "cohort/attrition.csv")
        log_frame(cohort.label_counts, "cohort/label_counts.csv")
        mlflow.log_metrics({"cohort/train_rows": float(n_train_rows)})
        for plan, n in getattr(model, "plan_counts_", {}).items():
            if n >= min_cell:
                mlflow.log_metric(f"treatment/train_rows/{plan}", float(n))
        _log_fit(model)
        for split, table in metrics.items():
            log_metrics_table(table, split=split)
            log_frame(table, f"evaluation/{split}_metrics.csv")
        for path, fig in figures.items():
            mlflow.log_figure(fig, path)
            close(fig)
        log_predictions(predictions)
        log_search_trials(getattr(model, "search_trials_", {}))
        info = log_model(model, registered_model_name=config.tracking.register_as)
    return run.info.run_id, info.model_uri


def _log_fit(model) -> None:
    """The epoch history, what opacus' accountant says a DP-SGD fit spent (the budget asked is a param),
    how many subject shares a tabular model was fitted on (``subject_shares: auto`` resolved) and a blend's
    record weight (``record_weight: auto`` resolved; its tuning loss at each weight as ``blend/tuning_loss``,
    step = weight x 100)."""
    if callable(getattr(model, "n_shares", None)):
        mlflow.set_tag("twinml.subject_shares", str(model.n_shares()))
    if callable(getattr(model, "blend_weight", None)):
        mlflow.set_tag("twinml.record_weight", f"{model.blend_weight():g}")
        for w, loss in (getattr(model, "tuning_losses_", None) or {}).items():
            mlflow.log_metric("blend/tuning_loss", loss, step=round(w * 100))
    for rec in getattr(model, "history_", []):
        mlflow.log_metrics(
            {"train/loss": rec["train_loss"], "tuning/loss": rec["tuning_loss"], "train/epoch_seconds": rec["seconds"]},
            step=rec["epoch"],
        )
    privacy = getattr(model, "privacy_", None)
    if privacy:
        mlflow.log_metrics({f"privacy/{k}": float(privacy[k]) for k in PRIVACY_METRICS})
        mlflow.set_tags({"twinml.privacy.unit": privacy["unit"], "twinml.privacy.accountant": privacy["accountant"]})


def training_run_id(model_uri: str, version=None) -> str | None:
    """The run that trained ``model_uri``: from its registry ``version`` (a ModelVersion) if given, from a
    ``runs:/`` URI, or from an MLflow 3 logged model (``models:/m-...``); None for a plain path."""
    if version is not None:
        return version.run_id
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/") :].split("/", 1)[0]
    if model_uri.startswith("models:/"):
        return mlflow.get_logged_model(model_uri[len("models:/") :].strip("/")).source_run_id
    return None


def training_run_config(run_id: str) -> str | None:
    """The experiment config text logged with a training run (``config.yaml``, else ``config.json``);
    None if the run has neither."""
    for name in CONFIG_ARTIFACTS:
        try:
            return mlflow.artifacts.load_text(f"runs:/{run_id}/{name}")
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            continue
    return None


def log_audit_run(report: dict, out: Path, *, experiment: str, tracking_uri: str | None, loaded) -> str:
    """A run of ``experiment`` holding the audit (``out`` as artifacts under ``audit/``), the overall AUROC
    and ECE per label, the number of failed gates, the verdict as a tag, and the audited artifacts'
    digests (``audit/artifact_digests.json``); with a registry version (``loaded``, a :class:`LoadedModel`),
    the version is tagged with the verdict, the run id and the artifacts' digest.

    Uses the client API only, so auditing leaves no active run or experiment behind in the process. No
    group-level number reaches MLflow.
    """
    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    lineage = report["lineage"]
    name = f"audit {loaded.name} v{loaded.version}" if loaded.version else f"audit {lineage['model_uri']}"
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={
            "twinml.audit.model_uri": lineage["model_uri"],
            AUDIT_PASSED_TAG: str(report["passed"]).lower(),
            "twinml.data_fingerprint": lineage["data_fingerprint"],
        },
    )
    run_id = run.info.run_id
    status = "FAILED"
    try:
        metrics = {
            f"audit/{p['label']}/auroc": p["auroc"] for p in report["performance"] if isinstance(p.get("auroc"), float)
        }
        metrics |= {
            f"audit/{e['label']}/ece": e["after"]["ece"]
            for e in report["calibration"]
            if isinstance(e["after"].get("ece"), float)
        }
        metrics["audit/gates_failed"] = float(sum(g["passed"] is False for g in report["gates"]))
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_artifacts(run_id, str(out), artifact_path="audit")
        digests = {"digest": loaded.digest, "files": loaded.files}
        client.log_text(run_id, json.dumps(digests, indent=1, sort_keys=True), DIGESTS_ARTIFACT)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    if loaded.version:
        client.set_model_version_tag(loaded.name, loaded.version, AUDIT_PASSED_TAG, str(report["passed"]).lower())
        client.set_model_version_tag(loaded.name, loaded.version, "twinml.audit.run_id", run_id)
        client.set_model_version_tag(loaded.name, loaded.version, AUDITED_DIGEST_TAG, loaded.digest)
    return run_id


def log_monitor_run(
    report: dict, out: Path | None, *, model_uri: str, experiment: str, tracking_uri: str | None
) -> str:
    """A run of ``experiment`` holding a monitoring report (``out`` as artifacts under ``monitor/``), linked to
    the model: the largest PSI per feature group, the number of flagged features, the unseen-code rate and the
    verdict. A registered version gets the tags ``twinml.monitor.passed`` and ``twinml.monitor.run_id``.

    Only aggregates reach MLflow (no subject, and no count that could be a small cell).
    """
    from ._mlflow import resolve_model_version

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    client = mlflow.MlflowClient()
    mv = resolve_model_version(model_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    tags = {"twinml.monitor.model_uri": model_uri, MONITOR_PASSED_TAG: str(report["passed"]).lower()}
    if mv is not None:
        tags |= {"twinml.monitor.model_name": mv.name, "twinml.monitor.model_version": str(mv.version)}
    name = f"monitor {mv.name} v{mv.version}" if mv is not None else f"monitor {model_uri}"
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        metrics: dict[str, float] = {}
        if "groups" in report:
            client.log_param(run_id, "reference_as_of", report["reference"]["as_of"])
            client.log_param(run_id, "current_as_of", report["current"]["as_of"])
            metrics |= {f"monitor/max_psi/{g['group']}": g["worst"]["psi"] for g in report["groups"]}
            metrics["monitor/flagged_features"] = float(sum(f["flagged"] for f in report["features"]))
            if report["unseen_codes"] is not None:
                metrics["monitor/unseen_code_rate"] = report["unseen_codes"]["rate"]
        for row in (report.get("performance") or {}).get("rows", []):  # the latest period of a label wins
            if not row["suppressed"]:
                metrics[f"monitor/{row['label']}/auroc"] = row["auroc"]
                metrics[f"monitor/{row['label']}/observed_expected"] = row["observed_expected"]
        metrics["monitor/gates_failed"] = float(sum(not g["passed"] for g in report["gates"]))
        for key, value in metrics.items():
            client.log_metric(run_id, key.replace(" ", "_"), float(value))
        if out is not None:
            client.log_artifacts(run_id, str(out), artifact_path="monitor")
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    if mv is not None:
        client.set_model_version_tag(mv.name, str(mv.version), MONITOR_PASSED_TAG, str(report["passed"]).lower())
        client.set_model_version_tag(mv.name, str(mv.version), "twinml.monitor.run_id", run_id)
    return run_id


def log_recalibrated_model(model, *, parent, name: str, experiment: str, config_text: str | None, facts: dict):
    """Register ``model`` (a :class:`~twinml.models.RecalibratedModel`) as a new version of ``name``, from a run
    that records its lineage: the parent model (``parent``, a LoadedModel) and version, the data window, the
    update per outcome and O/E before/after (``facts``, aggregates only), and the parent's experiment config
    (so the new version's audit and monitor find the task). Returns ``(run_id, version)``."""
    client = mlflow.MlflowClient()
    parent_ref = f"models:/{parent.name}/{parent.version}" if parent.version else parent.uri
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"recalibrate {parent_ref}") as run:
        mlflow.set_tags(
            {
                "twinml.recalibrated_from": parent_ref,
                "twinml.recalibration.window": f"{facts['start']}..{facts['end']}",
                "twinml.code_version": code_version(),
                "twinml.data_fingerprint": facts["data_fingerprint"],
            }
        )
        mlflow.log_params({"window_start": facts["start"], "window_end": facts["end"], "method": facts["method"]})
        for u in facts["updates"]:
            metrics = {k: u[k] for k in ("a", "b", "oe_before", "oe_after") if u.get(k) is not None}
            mlflow.log_metrics({f"recalibration/{u['outcome']}/{k}": float(v) for k, v in metrics.items()})
        if config_text is not None:
            mlflow.log_text(config_text, CONFIG_ARTIFACTS[0])
        mlflow.log_dict(facts, "recalibration.json")
        info = log_model(model, registered_model_name=name)
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "twinml.recalibrated_from", parent_ref)
    client.set_model_version_tag(name, version, "twinml.recalibration.window", f"{facts['start']}..{facts['end']}")
    return run.info.run_id, version


def active_tracking_uri() -> str:
    """The tracking URI this process is using now (MLflow's, after a load has set it)."""
    return mlflow.get_tracking_uri()
