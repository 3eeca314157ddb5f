"""``twinml recalibrate``: update a registered model's calibration on recent labelled data and register
the result as a new version of the same model, with its lineage (parent version, data window).

The model's own task labels the recent prediction times (the same eligibility and censoring rules as
training), the model predicts them, and one complementary log-log update per outcome is fitted by
maximum likelihood (:class:`~twinml.models.RecalibratedModel`): intercept only by default (a hazard
ratio: what a change in incidence calls for, and what the monitor recommends when calibration drifts
while discrimination holds), or intercept and slope.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._validation import ConfigError

__all__ = ["recalibrate", "RecalibrationReport"]

_DAY = pd.Timedelta(days=1)


@dataclass
class RecalibrationReport:
    """What was fitted on what, and the version it became."""

    model_uri: str
    name: str
    parent_version: str | None
    version: str
    run_id: str
    start: str
    end: str
    rows: int
    updates: list[dict]
    seconds: float


def _window_labels(events: pd.DataFrame, task, start, end) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """The task's labelled rows in ``[start, end]``; by default the last year whose labels are complete
    (ending a horizon before the data do)."""
    from ..cohort import SplitDefinition, build_labels

    if end is None:
        end = events["time"].max() - max(task.horizons_days) * _DAY
    end = pd.Timestamp(end)
    start = pd.Timestamp(start) if start is not None else end - 365 * _DAY
    if start >= end:
        raise ConfigError(f"recalibrate: the window's start {start.date()} must come before its end {end.date()}")
    labels = build_labels(events, task=task.model_copy(update={"split": SplitDefinition(strategy="random")})).labels
    labels = labels[(labels["prediction_time"] >= start) & (labels["prediction_time"] <= end)].reset_index(drop=True)
    if labels.empty:
        raise ConfigError(f"recalibrate: no labelled prediction time of the task in {start.date()}..{end.date()}")
    return labels, start, end


def _fit(model, events, labels, *, slope: bool, min_events: int) -> tuple[dict, list[dict]]:
    from ..models import cloglog_update, fit_cloglog, outcome_of

    risks = model.predict_risk(events, labels[["subject_id", "prediction_time"]])
    updates, facts = {}, []
    for outcome in dict.fromkeys(outcome_of(c) for c in model.label_columns_):
        cols = [c for c in model.label_columns_ if outcome_of(c) == outcome and c in labels]
        y = np.concatenate([labels[c].to_numpy(dtype=float, na_value=np.nan) for c in cols])
        p = np.concatenate([risks[c].to_numpy(float) for c in cols])
        keep = ~np.isnan(y)
        y, p = y[keep], p[keep]
        n_events = int(y.sum())
        if n_events < min_events or y.size - n_events < min_events:
            facts.append({"outcome": outcome, "rows": int(y.size), "skipped": f"fewer than {min_events} events"})
            continue
        a, b = fit_cloglog(y, p, slope=slope)
        updates[outcome] = (a, b)
        after = cloglog_update(p, a, b)
        facts.append(
            {
                "outcome": outcome,
                "rows": int(y.size),
                "a": a,
                "b": b,
                "hazard_ratio": float(np.exp(a)) if not slope else None,
                "oe_before": float(y.sum() / p.sum()),
                "oe_after": float(y.sum() / after.sum()),
            }
        )
    return updates, facts


def recalibrate(
    model_uri: str,
    events_dir,
    *,
    start=None,
    end=None,
    slope: bool = False,
    task=None,
    register_as: str | None = None,
    min_events: int = 20,
    tracking_uri: str | None = None,
    progress=None,
) -> RecalibrationReport:
    """Fit a calibration update of ``model_uri`` on the labelled prediction times in ``[start, end]`` of
    ``events_dir`` and register it as a new version (of the same registered model, or ``register_as``).

    ``task`` defaults to the model's training task; the window, to the last year whose labels are complete.
    """
    from .. import tracking
    from ..config import model_config
    from ..data import read_meds
    from ..models import RecalibratedModel

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    loaded = tracking.load_registered_model(model_uri, tracking_uri=tracking_uri)
    if hasattr(loaded.model, "predict_plans"):
        raise ConfigError(
            f"recalibrate: {model_uri!r} is a what-if model; recalibrate the risk models it is compared with"
        )
    name = register_as or loaded.name
    if name is None:
        raise ConfigError(f"recalibrate: {model_uri!r} is not a registered version; name the model with --register-as")
    run_id, config = model_config(model_uri, what="recalibrate")
    task = task or config.task
    events = read_meds(events_dir)
    labels, start, end = _window_labels(events, task, start, end)
    say(f"recalibrating {model_uri} on {len(labels):,} prediction times {start.date()}..{end.date()}")
    updates, facts = _fit(loaded.model, events, labels, slope=slope, min_events=min_events)
    if not updates:
        raise ConfigError(f"recalibrate: no outcome has {min_events} events and non-events in the window")
    first, last = str(start.date()), str(end.date())
    lineage = {
        "start": first,
        "end": last,
        "method": "cloglog intercept and slope" if slope else "cloglog intercept (hazard ratio)",
        "data_fingerprint": tracking.data_fingerprint(events_dir),
        "updates": facts,
        "parent": f"models:/{loaded.name}/{loaded.version}" if loaded.version else model_uri,
    }
    model = RecalibratedModel(loaded.model, updates, info=lineage)
    config_text = tracking.training_run_config(run_id) if run_id else None
    new_run, version = tracking.log_recalibrated_model(
        model, parent=loaded, name=name, experiment=config.tracking.experiment, config_text=config_text, facts=lineage
    )
    say(f"registered {name} version {version} (recalibrated from {lineage['parent']})")
    return RecalibrationReport(
        model_uri, name, loaded.version, version, new_run, first, last, len(labels), facts,
        time.perf_counter() - t0,
    )  # fmt: skip
