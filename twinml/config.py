"""One YAML file per experiment, parsed into typed, validated config objects.

Only the pipeline and CLI read these; domain functions take plain keyword arguments.
An error names the file, the key, the rule and the value received.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ._validation import ConfigError, NonNegativeInt, PositiveInt, StrictModel, load_validated
from .cohort import TaskDefinition

__all__ = [
    "ExperimentConfig",
    "DataConfig",
    "SimulatorSettings",
    "FeaturesConfig",
    "ModelConfig",
    "SearchConfig",
    "EvaluationConfig",
    "TrackingConfig",
    "load_config",
]


class SimulatorSettings(StrictModel):
    """Arguments of :func:`twinml.simulate.simulate` used when ``data.source`` is ``simulator``."""

    n_subjects: PositiveInt = 5_000
    seed: int = 0
    years: PositiveInt = 10
    bias_group: str | None = None
    underdiagnosis_rate: float = 0.0
    visit_rate_ratio: float = 1.0
    treatment_effect_scale: float = 1.0
    treatment_rate_scale: float = 1.0
    treatment_decisions: Literal["visits", "yearly_review"] = "visits"


class DataConfig(StrictModel):
    """Where events come from. ``path`` is a MEDS directory (simulated there first if missing)."""

    source: Literal["simulator", "meds"] = "simulator"
    path: str
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)


class FeaturesConfig(StrictModel):
    windows_days: tuple[int | None, ...] = (30, 365, None)
    aggregates: tuple[Literal["count", "last", "mean", "min", "max", "recency"], ...] = (
        "count",
        "last",
        "mean",
        "min",
        "max",
        "recency",
    )
    min_code_count: int = 10
    # text answers of at least this many training subjects read as codes ``code//text``; 0: text ignored
    min_text_subjects: NonNegativeInt = 0

    @field_validator("windows_days")
    @classmethod
    def _windows(cls, v):
        for w in v:
            if w is not None and w <= 0:
                raise ValueError(f"must be positive ints or null (all history). Got {w} instead")
        return v


class SearchConfig(StrictModel):
    """A hyperparameter sweep (``lightgbm`` only): optuna trials per label on the tuning split's log loss."""

    n_trials: PositiveInt = 20


class ModelConfig(StrictModel):
    """``lightgbm`` / ``logistic`` / ``hist_gb``: tabular models (``params`` go to the classifier, except
    ``subject_shares``: :class:`~twinml.models.TabularRiskModel`'s subsample-and-aggregate; calibration
    ``sigmoid``, ``isotonic`` or ``temperature``). ``gru`` / ``transformer``: sequence models over the last
    ``max_len`` events (``params`` are :class:`~twinml.models.SequenceRiskModel` arguments such as
    ``d_model``, ``max_epochs``; calibration ``platt``, ``temperature`` or ``isotonic``). ``record``: a GRU
    over each subject's whole record, read out at every prediction time
    (:class:`~twinml.models.RecordRiskModel`; the same calibrations). ``blend``: that GRU and LightGBM as
    one model, their hazard logits averaged with a weight chosen on the tuning rows
    (:class:`~twinml.models.BlendRiskModel`; ``params`` ``record_weight`` (``auto`` or a number),
    ``n_record_members``, ``record_params``, ``tabular_params``; the same calibrations).
    ``whatif``: the treatment-response model
    (:class:`~twinml.whatif.TreatmentResponseModel`; needs ``task.treatment``; no calibration)."""

    kind: Literal["lightgbm", "logistic", "hist_gb", "record", "blend", "gru", "transformer", "whatif"] = "lightgbm"
    params: dict = Field(default_factory=dict)
    calibration: Literal["sigmoid", "isotonic", "platt", "temperature"] | None = None
    search: SearchConfig | None = None

    @model_validator(mode="after")
    def _calibration_fits_kind(self):
        if self.search is not None and self.kind != "lightgbm":
            raise ValueError(f"search applies to kind 'lightgbm' only; got kind {self.kind!r}")
        if self.kind == "whatif" and self.calibration is not None:
            raise ValueError(
                "calibration does not apply to kind 'whatif' (risks under unobserved plans cannot be "
                "recalibrated); use null"
            )
        sequence = self.kind in ("record", "blend", "gru", "transformer", "whatif")
        allowed = ("platt", "temperature", "isotonic") if sequence else ("sigmoid", "isotonic", "temperature")
        if self.calibration is not None and self.calibration not in allowed:
            names = " or ".join(repr(a) for a in allowed)
            raise ValueError(
                f"calibration {self.calibration!r} does not apply to kind {self.kind!r}; use {names} or null"
            )
        return self


class EvaluationConfig(StrictModel):
    """``splits`` are scored after training; under ``task.split.strategy: temporal``, scoring
    ``held_out`` (the later period) also scores ``held_out_same_period`` beside it."""

    splits: tuple[Literal["train", "tuning", "held_out", "held_out_same_period"], ...] = ("held_out",)
    n_bootstrap: int = 200
    ece_bins: int = 10


class TrackingConfig(StrictModel):
    uri: str | None = None
    experiment: str = "twinml"
    register_as: str | None = None


class ExperimentConfig(StrictModel):
    """The whole experiment: data source, task, features, model, evaluation, tracking."""

    name: str
    seed: int = 0
    data: DataConfig
    task: TaskDefinition
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("evaluation")
    @classmethod
    def _same_period_needs_a_temporal_split(cls, v, info: ValidationInfo):
        task = info.data.get("task")
        if task is not None and "held_out_same_period" in v.splits and task.split.strategy != "temporal":
            raise ValueError("split 'held_out_same_period' exists only under task.split.strategy: temporal")
        return v


def load_config(path_or_dict) -> ExperimentConfig:
    """Read and validate an experiment config (relative paths are relative to the working directory)."""
    return load_validated(ExperimentConfig, path_or_dict, what="config", source="config")


def model_config(model_uri: str, *, what: str) -> tuple[str | None, ExperimentConfig]:
    """The run that trained ``model_uri`` and the experiment config logged with it (tracking URI already set).

    ``what`` names the command in the error when there is no such run or config ("audit", "monitor").
    """
    import yaml

    from . import tracking

    mv = tracking.resolve_model_version(model_uri)
    run_id = tracking.training_run_id(model_uri, mv)
    if run_id is None:
        raise ConfigError(f"{what}: cannot find the training run of {model_uri!r}; pass --config.")
    text = tracking.training_run_config(run_id)
    if text is None:
        raise ConfigError(
            f"{what}: the model's training run {run_id} has no config.yaml/config.json artifact; "
            "pass the experiment config with --config."
        )
    return run_id, load_config(yaml.safe_load(text))
