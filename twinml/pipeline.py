"""The pipeline layer: binds a validated :class:`~twinml.config.ExperimentConfig` to the domain functions.

``train(config)`` = prepare data -> labels -> fit -> evaluate -> one MLflow run with the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ._io import refuse_existing
from ._validation import ConfigError
from .cohort import Cohort, TaskDefinition, build_labels, events_for_fit
from .config import DataConfig, ExperimentConfig
from .data import read_meds, read_subject_splits
from .evaluation import MIN_CELL, evaluate_risks, meds_predictions, reliability_figure, write_meds_predictions
from .models import TabularRiskModel

__all__ = [
    "prepare_data",
    "train",
    "evaluate",
    "build_model",
    "TrainResult",
    "Progress",
    "load_truth",
    "load_reading_truth",
]

TRUTH_FILE = Path("truth") / "ground_truth.parquet"
READINGS_TRUTH_FILE = Path("truth") / "readings.parquet"


class Progress:
    """Prints each step with the time elapsed, so long runs show where they are."""

    def __init__(self, echo=print):
        self.echo = echo
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        self.echo(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}")


def _quiet(msg: str) -> None:
    return None


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    tracking_uri: str
    metrics: dict[str, pd.DataFrame]
    cohort: Cohort
    model: object  # TabularRiskModel or SequenceRiskModel


def prepare_data(data: DataConfig, *, overwrite: bool = False, progress=_quiet) -> Path:
    """Return the MEDS directory, simulating it first when the source is the simulator."""
    path = Path(data.path)
    if data.source == "meds":
        if not (path / "data").is_dir():
            raise ConfigError(f"data.path: no MEDS dataset at {path} (expected {path / 'data'}/).")
        return path
    from .simulate import simulate

    wanted = data.simulator.model_dump()
    saved = path / "truth" / "simulator.json"
    if path.exists() and not overwrite:
        have = json.loads(saved.read_text()) if saved.exists() else None
        # a key missing from an older simulator.json had its default then
        defaults = {k: f.default for k, f in type(data.simulator).model_fields.items()}
        if have is not None and all(have.get(k, defaults[k]) == v for k, v in wanted.items()):
            progress(f"reusing simulated cohort at {path}")
            return path
        raise ConfigError(
            f"data.path: {path} exists but was not simulated with these settings {wanted}; "
            "remove it, choose another path, or pass --overwrite."
        )
    progress(f"simulating {data.simulator.n_subjects:,} subjects -> {path}")
    simulate(**wanted, progress=progress).write(path, overwrite=True)
    return path


def build_model(config: ExperimentConfig):
    """The estimator a config asks for (tabular baseline, sequence model or what-if model), unfitted."""
    m, f = config.model, config.features
    if f.min_text_subjects and m.kind in ("whatif", "gru", "transformer"):
        raise ConfigError(
            f"config: features.min_text_subjects applies to model kinds lightgbm, logistic, hist_gb, record and "
            f"blend. Got {f.min_text_subjects} with kind {m.kind!r}."
        )
    if m.kind in ("whatif", "record", "blend", "gru", "transformer"):
        try:
            return _torch_model(config)
        except TypeError as err:
            raise ConfigError(f"model.params: {err}".replace(".__init__()", "")) from None
    params = dict(m.params)
    shares = params.pop("subject_shares", "auto")  # a TabularRiskModel argument, not the classifier's
    return TabularRiskModel(
        kind=m.kind,
        model_params=params,
        n_trials=m.search.n_trials if m.search else 0,
        windows_days=f.windows_days,
        aggregates=f.aggregates,
        min_code_count=f.min_code_count,
        min_text_subjects=f.min_text_subjects,
        calibration=m.calibration,
        subject_shares=shares,
        random_state=config.seed,
    )


def _torch_model(config: ExperimentConfig):
    """The what-if, record, blend, GRU or Transformer model of a config (a TypeError for unknown params)."""
    from .models import BlendRiskModel, RecordRiskModel, SequenceRiskModel

    m, f = config.model, config.features
    params = dict(m.params)
    if m.kind == "whatif":
        return _whatif_model(config, params)
    common = {"calibration": m.calibration, "random_state": config.seed}
    if m.kind == "blend":
        record = {"min_code_count": f.min_code_count, "min_text_subjects": f.min_text_subjects}
        tabular = {
            "windows_days": f.windows_days,
            "aggregates": f.aggregates,
            "min_code_count": f.min_code_count,
            "min_text_subjects": f.min_text_subjects,
        }
        return BlendRiskModel(
            **common,
            record_params={**record, **(params.pop("record_params", None) or {})},
            tabular_params={**tabular, **(params.pop("tabular_params", None) or {})},
            **params,
        )
    if m.kind == "record":
        return RecordRiskModel(
            **common, min_code_count=f.min_code_count, min_text_subjects=f.min_text_subjects, **params
        )
    return SequenceRiskModel(kind=m.kind, **common, min_code_count=f.min_code_count, **params)


def _whatif_model(config: ExperimentConfig, params: dict):
    """The what-if model of a config: ``encoder: {...}`` (or ``encoder__<name>``) settings go to its encoder,
    which starts from the config's seed and features.min_code_count."""
    from .models import SequenceRiskModel
    from .whatif import TreatmentResponseModel

    if config.task.treatment is None:
        raise ConfigError(
            "config: model.kind 'whatif' needs task.treatment (a plans file such as "
            "configs/plans.yaml, or the plans inline)."
        )
    flat = sorted(set(params) & (set(SequenceRiskModel().get_params()) - set(TreatmentResponseModel().get_params())))
    if flat:
        raise ConfigError(
            f"model.params: {flat[0]!r} is a setting of the what-if model's encoder; write it as "
            f"encoder: {{{flat[0]}: {params[flat[0]]!r}}} (or encoder__{flat[0]}: {params[flat[0]]!r})."
        )
    encoder = params.pop("encoder", None) or {}
    if not isinstance(encoder, dict):
        raise ConfigError(f"model.params.encoder: expected a mapping of the encoder's settings; got {encoder!r}.")
    nested = {k: params.pop(k) for k in list(params) if k.startswith("encoder__")}
    template = SequenceRiskModel(
        **{"min_code_count": config.features.min_code_count, "random_state": config.seed, **encoder}
    )
    model = TreatmentResponseModel(plans=config.task.treatment, encoder=template, **params)
    try:
        return model.set_params(**nested)
    except ValueError as err:  # scikit-learn's word for an unknown nested setting
        raise ConfigError(f"model.params: {err}") from None


def load_truth(meds_dir) -> pd.DataFrame | None:
    """The simulator's ground truth beside a MEDS directory, if there is one."""
    f = Path(meds_dir) / TRUTH_FILE
    return pd.read_parquet(f) if f.exists() else None


def load_reading_truth(meds_dir) -> pd.DataFrame | None:
    """The simulator's noise-free value of every lab/vital reading beside a MEDS directory
    (:attr:`SimulatedCohort.readings`), if there is one (cohorts simulated before it was written have none)."""
    f = Path(meds_dir) / READINGS_TRUTH_FILE
    return pd.read_parquet(f) if f.exists() else None


def _label_rows(labels, split):
    return labels[labels["split"] == split].reset_index(drop=True)


def _predictions(labels, risks, columns) -> dict:
    return {c: meds_predictions(labels, risks, c) for c in columns}


def train(
    config: ExperimentConfig,
    *,
    tracking_uri: str | None = None,
    config_text: str | None = None,
    overwrite_data: bool = False,
    predictions_dir=None,
    overwrite: bool = False,
    progress=_quiet,
) -> TrainResult:
    """Run one experiment end to end as one MLflow run.

    Predictions of every evaluated split are logged in the MEDS prediction schema (artifacts
    ``predictions/{split}/{label}.parquet``) and, with ``predictions_dir``, written there too.
    """
    from . import tracking

    refuse_existing(predictions_dir, overwrite=overwrite)  # before the fit, not after it
    root = prepare_data(config.data, overwrite=overwrite_data, progress=progress)
    events = read_meds(root)
    progress(f"read {len(events):,} events")
    cohort = build_labels(events, task=config.task, subject_splits=read_subject_splits(root))
    labels = cohort.labels
    progress(f"labels: {len(labels):,} prediction times for {labels['subject_id'].nunique():,} subjects")
    train_rows = _label_rows(labels, "train")
    if train_rows.empty:
        raise ConfigError("task: no prediction times fall in the train split; check prediction_times and splits.")
    model = build_model(config)
    fit_events = events_for_fit(events, config.task)  # a temporal split: nothing from train_before on
    model.fit(fit_events, train_rows, tuning_labels=_label_rows(labels, "tuning"), progress=progress)
    metrics, risks, predictions = _evaluate_splits(config, model, events, labels, load_truth(root), progress)
    if predictions_dir is not None:
        write_meds_predictions(predictions_dir, predictions, overwrite=overwrite)
        progress(f"wrote MEDS predictions to {predictions_dir}")
    figures = {
        f"evaluation/reliability_{name}.png": reliability_figure(
            _label_rows(labels, name), risks[name], model.label_columns_, title=f"{config.name}: reliability ({name})"
        )
        for name in metrics
    }
    uri = tracking.resolve_tracking_uri(tracking_uri or config.tracking.uri)
    run_id, model_uri = tracking.log_training_run(
        config,
        tracking_uri=uri,
        data_root=root,
        config_text=config_text,
        cohort=cohort,
        n_train_rows=len(train_rows),
        model=model,
        metrics=metrics,
        figures=figures,
        predictions=predictions,
        min_cell=MIN_CELL,  # rows per factual plan under the audit's minimum cell are not logged
    )
    progress(f"logged MLflow run {run_id} to {uri}")
    return TrainResult(run_id, model_uri, uri, metrics, cohort, model)


def _scored_splits(config: ExperimentConfig) -> list[str]:
    """The evaluated splits; a temporal split's later period comes with its same-period twin (the random
    split's figure, from the same fit)."""
    splits: list[str] = list(config.evaluation.splits)
    if config.task.split.strategy == "temporal" and "held_out" in splits and "held_out_same_period" not in splits:
        splits.insert(splits.index("held_out"), "held_out_same_period")
    return splits


def _evaluate_splits(config: ExperimentConfig, model, events, labels, truth, progress):
    """Each evaluated split's metrics, risks and MEDS predictions (split -> ...)."""
    metrics: dict[str, pd.DataFrame] = {}
    risks: dict[str, object] = {}
    predictions: dict[str, dict[str, pd.DataFrame]] = {}
    for split in _scored_splits(config):
        rows = _label_rows(labels, split)
        risks[split] = model.predict_risk(events, rows)
        predictions[split] = _predictions(rows, risks[split], model.label_columns_)
        metrics[split] = evaluate_risks(
            rows,
            risks[split],
            columns=model.label_columns_,
            truth=truth,
            n_boot=config.evaluation.n_bootstrap,
            ece_bins=config.evaluation.ece_bins,
            seed=config.seed,
        )
        progress(f"evaluated {split}: {len(rows):,} rows")
    return metrics, risks, predictions


def evaluate(
    model_uri: str,
    *,
    meds_dir,
    task: TaskDefinition,
    split: str = "held_out",
    tracking_uri: str | None = None,
    n_boot: int = 200,
    seed: int = 0,
    predictions_dir=None,
    overwrite: bool = False,
    progress=_quiet,
) -> pd.DataFrame:
    """Score a logged model on a MEDS dataset's labels for ``task`` and return its metrics.

    With ``predictions_dir`` the predictions are written there in the MEDS prediction schema
    (``{split}/{label}.parquet``), for meds-evaluation or any MEDS-DEV tool.
    """
    from . import tracking

    refuse_existing(predictions_dir, overwrite=overwrite)
    model = tracking.load_registered_model(model_uri, tracking_uri=tracking_uri).model
    events = read_meds(meds_dir)
    labels = build_labels(events, task=task, subject_splits=read_subject_splits(meds_dir)).labels
    rows = _label_rows(labels, split)
    missing = [c for c in model.label_columns_ if c not in rows]
    if missing:
        raise ConfigError(f"task: the model predicts {missing}, which this task does not label.")
    progress(f"scoring {len(rows):,} {split} rows")
    risks = model.predict_risk(events, rows[["subject_id", "prediction_time"]])
    if predictions_dir is not None:
        write_meds_predictions(
            predictions_dir, {split: _predictions(rows, risks, model.label_columns_)}, overwrite=overwrite
        )
        progress(f"wrote MEDS predictions to {predictions_dir}")
    return evaluate_risks(
        rows, risks, columns=model.label_columns_, truth=load_truth(meds_dir), n_boot=n_boot, seed=seed
    )
