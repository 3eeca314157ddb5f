"""Task definitions: who is predicted for, when, and what counts as the outcome.

A task is read from YAML and validated once, here; an error names the key, the rule and
the value received (and suggests the key you probably meant).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from .._validation import ConfigError, NonNegativeInt, PositiveInt, StrictModel, format_validation_error
from ._plans import PlanSet

__all__ = [
    "TaskDefinition",
    "OutcomeDefinition",
    "PredictionTimes",
    "SplitDefinition",
    "load_task",
    "format_validation_error",
]


class OutcomeDefinition(StrictModel):
    """Which codes mark the outcome. ``codes`` match exactly, ``prefixes`` by the start of the code."""

    codes: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    exclude_prior: bool = True

    @model_validator(mode="after")
    def _some_code(self):
        if not self.codes and not self.prefixes:
            raise ValueError("an outcome needs at least one entry in 'codes' or 'prefixes'")
        return self


class PredictionTimes(StrictModel):
    """When predictions are made.

    ``yearly``: ``start + k * every_days`` for every k while the data lasts.
    ``every_visit``: at each distinct time of an event whose code starts with one of
    ``visit_prefixes`` (all events when empty), at most ``max_per_subject`` per subject
    (a seeded random choice).
    """

    strategy: Literal["yearly", "every_visit"] = "yearly"
    start: dt.date | None = None
    every_days: PositiveInt = 365
    visit_prefixes: tuple[str, ...] = ()
    max_per_subject: int | None = None
    seed: int = 0

    @field_validator("max_per_subject")
    @classmethod
    def _pos_or_none(cls, v):
        if v is not None and v <= 0:
            raise ValueError(f"must be a positive int or null. Got {v} instead")
        return v


class SplitDefinition(StrictModel):
    """Subject-level splits (from the dataset's ``metadata/subject_splits.parquet`` or random), or a
    temporal split of them.

    ``strategy: temporal`` is the "deployed next year" estimate. The model learns on the train and
    tuning subjects' rows before ``train_before``, from the events before it (``events_for_fit``: its
    vocabulary, value scaling and forecast targets read nothing later). It is tested on the held-out
    subjects' rows from ``test_from`` on (split ``held_out``), so no subject is on both sides; the
    held-out subjects' rows before ``train_before`` are scored too (split ``held_out_same_period``: new
    patients, the same years), the random-split figure beside it. ``test_from`` must be at least the
    longest horizon after ``train_before``, so that no training label window reaches into the test
    period. Rows outside both periods are left out (the cohort's attrition counts them). ``subjects``
    says where the subject splits come from (``meds``: the dataset's; ``random``: drawn with
    ``fractions`` and ``seed``).
    """

    strategy: Literal["meds", "random", "temporal"] = "meds"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    subjects: Literal["meds", "random"] = "meds"
    train_before: dt.date | None = None
    test_from: dt.date | None = None

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, v):
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(
                f"must be three non-negative shares (train, tuning, held_out) summing to 1. Got {list(v)} instead"
            )
        return v

    @model_validator(mode="after")
    def _temporal_dates(self):
        dates = (self.train_before, self.test_from)
        if self.strategy != "temporal":
            if any(d is not None for d in dates) or self.subjects != "meds":  # (a dumped config has the defaults)
                raise ValueError("'train_before', 'test_from' and 'subjects' belong to strategy: temporal")
            return self
        if any(d is None for d in dates):
            raise ValueError("strategy: temporal needs both 'train_before' and 'test_from' (dates)")
        if self.test_from <= self.train_before:  # type: ignore[operator]
            raise ValueError("'test_from' must come after 'train_before'")
        return self


class TaskDefinition(StrictModel):
    """A prediction task over MEDS events (see :mod:`twinml.cohort` for the exact rules).

    Either ``outcomes`` (twinml computes the labels) or ``labels``: outcome name -> a MEDS label file
    or directory (``subject_id``, ``prediction_time``, ``boolean_value``; what ACES writes), taken as
    they are, with exactly one horizon naming the label columns.
    """

    name: str
    outcomes: dict[str, OutcomeDefinition] = Field(default_factory=dict)
    labels: dict[str, str] | None = None
    horizons_days: tuple[int, ...]
    prediction_times: PredictionTimes = Field(default_factory=PredictionTimes)
    min_history_days: NonNegativeInt = 365
    min_age_years: float | None = 18.0
    split: SplitDefinition = Field(default_factory=SplitDefinition)
    treatment: PlanSet | None = None

    @field_validator("horizons_days")
    @classmethod
    def _horizons(cls, v):
        if not v:
            raise ValueError("must list at least one horizon")
        for h in v:
            if h <= 0:
                raise ValueError(f"must be positive ints. Got {h} instead")
        if len(set(v)) != len(v):
            raise ValueError(f"must not repeat a horizon. Got {list(v)} instead")
        return tuple(sorted(v))

    @field_validator("outcomes", "labels")
    @classmethod
    def _outcome_names(cls, v):
        for name in v or ():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"names must be letters, digits and '_'. Got {name!r} instead")
        return v

    @model_validator(mode="after")
    def _outcomes_or_labels(self):
        if self.labels is not None and self.outcomes:
            raise ValueError(
                "give either 'outcomes' (labels computed by twinml) or 'labels' (MEDS label files), not both"
            )
        if self.labels is None and not self.outcomes:
            raise ValueError("must define at least one outcome (or 'labels': MEDS label files per outcome)")
        if self.labels is not None and (not self.labels or len(self.horizons_days) != 1):
            raise ValueError(
                "'labels' needs at least one file and exactly one horizon in 'horizons_days' "
                f"(the window the files were made with). Got {len(self.horizons_days)} horizons"
            )
        return self

    @field_validator("split")
    @classmethod
    def _gap(cls, v, info: ValidationInfo):
        horizons = info.data.get("horizons_days")
        if v.strategy == "temporal" and horizons:
            need = v.train_before + dt.timedelta(days=max(horizons))
            if v.test_from < need:
                raise ValueError(
                    f"'test_from' must be at least the longest horizon ({max(horizons)} days) after 'train_before', "
                    f"so that no training label window reaches the test period; the earliest allowed is {need}"
                )
        return v

    @field_validator("treatment", mode="before")
    @classmethod
    def _plans_file(cls, v):
        # a path names a plans YAML file (configs/plans.yaml); a mapping is the plan set itself
        if isinstance(v, (str, Path)):
            if not Path(v).exists():
                raise ValueError(f"plans file {str(v)!r} not found")
            return yaml.safe_load(Path(v).read_text())
        return v

    @property
    def label_columns(self) -> list[str]:
        """``{outcome}_{horizon}d`` for every outcome and horizon, outcome-major."""
        return [f"{o}_{h}d" for o in (self.labels or self.outcomes) for h in self.horizons_days]


def load_task(path_or_dict, *, source: str | None = None) -> TaskDefinition:
    """Read a task from a YAML file (or a dict) and validate it."""
    if isinstance(path_or_dict, dict):
        raw, src = path_or_dict, source or "task"
    else:
        src = source or str(path_or_dict)
        with open(path_or_dict) as fh:
            raw = yaml.safe_load(fh)
        raw = raw.get("task", raw) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: a task must be a mapping of keys; got {type(raw).__name__}")
    try:
        return TaskDefinition.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source=src, model=TaskDefinition, prefix="task.")) from None
