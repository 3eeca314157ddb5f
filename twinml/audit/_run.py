"""``twinml audit``: load a model and its task, compute the audit, write the report, record it in MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_directory, refuse_existing
from .._plotting import png_bytes
from .._validation import ConfigError
from ._audit import AuditInputs, compute_audit, config_hash
from ._card import render_model_card
from ._figures import DriversDisplay
from ._policy import AuditPolicy
from ._render import render_html

__all__ = ["run_audit", "AuditResult", "AUDIT_FILES"]

AUDIT_FILES = ("report.html", "audit.json", "model_card.md")


@dataclass
class AuditResult:
    passed: bool
    out_dir: Path
    report: dict
    mlflow_run_id: str | None


def run_audit(
    model_uri: str,
    meds_dir,
    *,
    policy: AuditPolicy,
    out,
    config=None,
    tracking_uri=None,
    overwrite: bool = False,
    progress=print,
) -> AuditResult:
    """Audit a logged or registered twinml model on a MEDS dataset; write ``out`` and log it to MLflow.

    The task comes from the model's training run (its logged config) unless ``config`` (an
    :class:`~twinml.config.ExperimentConfig`) is given. ``out`` receives ``report.html``,
    ``audit.json`` and ``model_card.md``, all at once (written to a temporary directory, then
    renamed). With a registered model the version gets tags ``twinml.audit.passed`` (``true`` /
    ``false``) and ``twinml.audit.run_id``; the report is logged as artifacts of a new run.
    """
    from .. import tracking
    from ..cohort import build_labels
    from ..data import read_code_metadata, read_meds, read_subject_splits
    from ..pipeline import load_truth

    out = Path(out)
    refuse_existing(out, overwrite=overwrite)  # before the model is loaded and the audit run
    loaded = tracking.load_registered_model(model_uri, tracking_uri=tracking_uri)
    if hasattr(loaded.model, "predict_plans"):
        raise ConfigError(
            f"audit: {model_uri!r} is a what-if (treatment-response) model; the audit covers risk "
            "models (its explanations read a risk network). Score its plans with `twinml whatif` "
            "and benchmarks/whatif.py."
        )
    run_id, config = _training_run(model_uri, loaded, config)
    progress(f"audit of {model_uri} (version {loaded.version}) on {meds_dir}")
    events = read_meds(meds_dir)
    cohort = build_labels(events, task=config.task, subject_splits=read_subject_splits(meds_dir))
    lineage = _lineage(model_uri, loaded, run_id, meds_dir, config, policy)
    codes = read_code_metadata(meds_dir)
    descriptions = dict(zip(codes["code"], codes["description"].fillna(""))) if "description" in codes else {}
    inputs = AuditInputs(loaded.model, events, cohort, config.task, load_truth(meds_dir), lineage, descriptions)
    report, figs = compute_audit(inputs, policy, seed=config.seed, progress=progress)
    figures = {name: png_bytes(f) for name, f in figs.items()}
    explained = report["explanations"]
    figures["importance"] = DriversDisplay(explained["codes"], title=f"drivers of {explained['label']}").png()
    _write(out, report, figures, overwrite=overwrite)
    progress(f"audit {'PASSED' if report['passed'] else 'FAILED'}; report: {out / 'report.html'}")
    audit_run = tracking.log_audit_run(
        report,
        out,
        experiment=config.tracking.experiment,
        tracking_uri=tracking_uri or config.tracking.uri,
        loaded=loaded,
    )
    return AuditResult(report["passed"], out, report, audit_run)


def _training_run(model_uri, loaded, config):
    """The model's training run id, and the experiment config: ``config`` if given, else the run's."""
    from .. import tracking
    from ..config import model_config

    if config is None:
        return model_config(model_uri, what="audit")
    mv = tracking.resolve_model_version(model_uri) if loaded.version else None
    return tracking.training_run_id(model_uri, mv), config


def _lineage(model_uri, loaded, run_id, meds_dir, config, policy) -> dict:
    """What was audited, on what, under which config, code and policy (hashes, not contents)."""
    from .. import tracking

    return {
        "model_uri": model_uri,
        "model_name": loaded.name,
        "model_version": loaded.version,
        "run_id": run_id,
        "data_fingerprint": tracking.data_fingerprint(meds_dir),
        "config_hash": config_hash(config.model_dump(mode="json")),
        "code_version": tracking.code_version(),
        "seed": config.seed,
        "policy_hash": config_hash(policy.model_dump(mode="json")),
        "artifact_digest": loaded.digest,
    }


def _write(out: Path, report, figures, *, overwrite):
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "report.html").write_text(render_html(report, figures), encoding="utf-8")
        (tmp / "audit.json").write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")
        (tmp / "model_card.md").write_text(render_model_card(report), encoding="utf-8")
