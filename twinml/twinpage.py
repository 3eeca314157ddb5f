"""One patient's twin on one page: the record, the risk, the trajectories, the plans and the drivers.

:func:`twin_page` gathers what a fitted twinml model says about one subject at one prediction time
(by default the subject's last event); :func:`write_twin_page` writes it as one self-contained HTML
file (figures embedded as PNG data; a Content-Security-Policy forbids every fetch, so nothing on the
page leaves the machine it is opened on) beside the same numbers as CSV. ``twinml twin`` runs both
on a registered model.

Sections, each present on every page (saying why when the model cannot fill it):

1. **Record**: who (age, sex and race codes at the prediction time), the timeline of every event
   by vocabulary, small plots of the most-read labs, the latest events.
2. **Risk**: the risk of each outcome within each horizon, with the model's risk band (the
   observed rate, Wilson 95 %, among tuning patients the model scored alike; :class:`~twinml.models.RiskBands`).
3. **Trajectories**: each forecast lab's recent readings and its median forecast at each horizon
   with the conformal 80 % interval (``predict_trajectory``).
4. **What-if**: risk under each treatment plan with its bootstrap band and support flag (models
   trained with ``model.kind: whatif``).
5. **Drivers**: the codes that move this patient's risk most, from the audit's explainer
   (:func:`~twinml.evaluation.explain_model`), one table per outcome at its longest horizon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._io import atomic_directory
from ._twinpage_render import render_twin_html
from ._validation import ConfigError

if TYPE_CHECKING:  # imported lazily at run time (what-if pulls in torch)
    from .whatif import WhatIfResult

__all__ = ["TwinPage", "twin_page", "write_twin_page", "twin_page_from_uri", "render_twin_html", "TWIN_FILES"]

TWIN_FILES = ("twin.html", "risk.csv", "trajectory.csv", "drivers.csv", "whatif.csv")


@dataclass
class TwinPage:
    """What :func:`twin_page` found; every table is also written as CSV by :func:`write_twin_page`."""

    subject_id: int
    prediction_time: pd.Timestamp
    model: str  # the model's class and, when known, its URI
    events: pd.DataFrame  # the subject's events up to the prediction time (static ones included)
    traits: dict  # age, sex, race, ...
    risk: pd.DataFrame  # outcome, horizon_days, risk, band_lo, band_hi
    trajectory: pd.DataFrame | None
    whatif: WhatIfResult | None
    drivers: pd.DataFrame | None  # outcome, label, code, description, attribution, direction, last_days_before
    descriptions: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # section -> why it is empty or what it means
    band_note: str = ""


_LABEL = re.compile(r"^(?P<outcome>.+)_(?P<horizon>\d+)d$")


def _split_label(label):
    """``mi_365d`` -> ("mi", 365); a label without a horizon in its name -> (label, None)."""
    m = _LABEL.match(label)
    return (m["outcome"], int(m["horizon"])) if m else (label, None)


def _subject_events(events, subject_id, at):
    ev = events[events["subject_id"] == subject_id]
    if ev.empty:
        raise ConfigError(
            f"subject {subject_id} has no events in the events given "
            f"({events['subject_id'].nunique():,} subjects there)."
        )
    timed = ev["time"].dropna()
    if timed.empty:
        raise ConfigError(f"subject {subject_id} has only static rows (no dated event) in the events given.")
    try:
        t = timed.max() if at is None else pd.Timestamp(at)
    except ValueError:
        t = pd.NaT
    if pd.isna(t):
        raise ConfigError(f"at: not a date/time: {at!r} (e.g. 2024-12-31 or 2024-12-31T23:59:59).")
    if t.tzinfo is not None:  # MEDS times are naive UTC
        t = t.tz_convert("UTC").tz_localize(None)
    if t < timed.min():
        raise ConfigError(f"at: {t} is before subject {subject_id}'s first event ({timed.min()}).")
    keep = ev["time"].isna() | (ev["time"] <= t)
    ev = ev[keep.to_numpy()].sort_values("time", kind="stable", na_position="first")  # MEDS order, whatever the input's
    return ev.reset_index(drop=True), pd.Timestamp(t).as_unit("us")


def _traits(ev, index):
    from .evaluation import subject_attributes

    out = subject_attributes(ev, index).iloc[0].to_dict()
    birth = ev.loc[ev["code"].astype(str) == "MEDS_BIRTH", "time"].dropna()
    t = index["prediction_time"].iloc[0]
    if not birth.empty:
        out = {"age": f"{(t - birth.min()).days / 365.25:.1f} years", **out}
    out.pop("age_band", None)
    return {k: str(v) for k, v in out.items()}


def _risk_table(model, ev, index):
    risk = model.predict_risk(ev, index)
    bands = getattr(model, "risk_bands_", None)
    rows = []
    for c in model.label_columns_:
        outcome, h = _split_label(c)
        p = float(risk[c].iloc[0])
        lo, hi = bands.interval(c, [p]) if bands is not None else (np.array([np.nan]), np.array([np.nan]))
        rows.append(
            {
                "outcome": outcome,
                "horizon_days": h,
                "label": c,
                "risk": p,
                "band_lo": float(lo[0]),
                "band_hi": float(hi[0]),
            }
        )
    return pd.DataFrame(rows).astype({"horizon_days": "Int64"})


def _drivers(model, ev, index, labels, descriptions, *, top, n_samples, seed):
    from .evaluation import explain_model, patient_drivers

    t = index["prediction_time"].iloc[0]
    last = ev.dropna(subset=["time"]).groupby(ev["code"].astype(str))["time"].max()
    parts, skipped = [], []
    for outcome, label in labels.items():
        try:
            attr = explain_model(model, ev, index, label=label, n_samples=n_samples, seed=seed)
        except ConfigError as err:  # e.g. a label with one class in training: the others are still explained
            skipped.append(str(err))
            continue
        d = patient_drivers(attr, top=top)
        d = d[d["attribution"] != 0]
        d = d.assign(outcome=outcome, label=label, code=d["code"].astype(str))
        d["description"] = [descriptions.get(c, "") for c in d["code"]]
        d["last_days_before"] = ((t - d["code"].map(last)).dt.days).astype("Int64")
        parts.append(d[["outcome", "label", "code", "description", "attribution", "direction", "last_days_before"]])
    return (pd.concat(parts, ignore_index=True) if parts else None), skipped


def twin_page(
    model,
    events: pd.DataFrame,
    subject_id: int,
    *,
    at=None,
    plans=None,
    code_descriptions=None,
    model_uri: str | None = None,
    n_drivers: int = 8,
    n_samples: int = 16,
    seed: int = 0,
    progress=None,
) -> TwinPage:
    """Everything the page shows for ``subject_id`` at ``at`` (default: the subject's last event).

    Parameters
    ----------
    model : a fitted twinml model (what ``load_registered_model(...).model`` returns)
    events : MEDS events holding the subject (others are ignored; events after ``at`` too)
    plans : PlanSet, optional
        What-if models only: the plans to compare (default: the model's own plans).
    code_descriptions : dict, optional
        Code -> description (a MEDS dataset's ``metadata/codes.parquet``) for the tables.
    n_drivers, n_samples, seed
        Drivers per outcome; expected-gradient samples and seed of the explainer (as in the audit).
    """
    say = progress or (lambda msg: None)
    if isinstance(subject_id, bool) or not isinstance(subject_id, (int, np.integer)):
        raise ConfigError(f"subject_id: expected an integer subject id; got {subject_id!r}.")
    ev, t = _subject_events(events, int(subject_id), at)
    index = pd.DataFrame({"subject_id": [int(subject_id)], "prediction_time": [t.to_datetime64()]})
    descriptions = dict(code_descriptions or {})
    notes: dict[str, str] = {}
    say(f"subject {subject_id}: {ev['time'].notna().sum():,} events up to {t}")

    risk = _risk_table(model, ev, index)
    say("risk: scored")
    trajectory = _trajectory_section(model, ev, index, notes, say)
    whatif = _whatif_section(model, ev, index, plans, notes, say)
    drivers = _drivers_section(
        model, ev, index, descriptions, notes, say, top=n_drivers, n_samples=n_samples, seed=seed
    )
    name = type(model).__name__ + (f" {model_uri}" if model_uri else "")
    return TwinPage(
        int(subject_id),
        t,
        name,
        ev,
        _traits(ev, index),
        risk,
        trajectory,
        whatif,
        drivers,
        descriptions,
        notes,
        _band_note(model),
    )


def _band_note(model) -> str:
    if getattr(model, "risk_bands_", None) is None:
        return "No band: this model was fitted without tuning rows, or before twinml kept risk bands."
    return (
        "Band: observed rate (Wilson 95 %) among the tuning patients whose predicted risk fell in the "
        "same bin as this patient's (tenths of the tuning rows; fewer bins under 500 rows); those rows "
        "also early-stopped or calibrated the model, so the band leans optimistic."
    )


def _trajectory_section(model, ev, index, notes, say):
    """The model's lab forecasts for the patient, or None with the reason in ``notes``."""
    trajectory = None
    if hasattr(model, "predict_trajectory"):
        try:
            trajectory = model.predict_trajectory(ev, index)
        except ConfigError as err:  # fitted without the head: the model says why
            notes["trajectory"] = f"No lab trajectories: {err}."
    else:
        notes["trajectory"] = (
            f"No lab trajectories: a {type(model).__name__} does not forecast them (the "
            "sequence, record and blend models do)."
        )
    if trajectory is not None:
        say(f"trajectories: {trajectory['code'].nunique()} codes")
    return trajectory


def _whatif_section(model, ev, index, plans, notes, say):
    """The patient's what-if under each plan (what-if models), or None with the reason in ``notes``."""
    if not hasattr(model, "predict_plans"):
        notes["whatif"] = (
            "This model compares no treatment plans; train one with model.kind: whatif and "
            "task.treatment to see risk under each plan."
        )
        return None
    from .whatif import what_if

    whatif = what_if(model, ev, index, plans)
    say(f"what-if: {len(whatif.prediction.plans)} plans")
    return whatif


def _drivers_section(model, ev, index, descriptions, notes, say, *, top, n_samples, seed):
    """The patient's drivers of each outcome at its longest horizon, or None with the reason in ``notes``."""
    if hasattr(model, "predict_plans"):
        notes["drivers"] = (
            "The audit's explainer reads risk networks, not what-if models, so no drivers are "
            "shown; explain a risk model of the same task."
        )
        return None
    if (
        type(model).__name__ == "TabularRiskModel"
        and model.kind == "logistic"
        and getattr(model, "feature_means_", None) is None
    ):
        notes["drivers"] = (
            "This logistic model was fitted before twinml kept its training feature means, which "
            "one patient is explained against; refit it to see its drivers."
        )
        return None
    longest: dict[str, str] = {}  # outcome -> its label at the longest horizon
    for c in model.label_columns_:
        outcome, h = _split_label(c)
        if outcome not in longest or (h or 0) > (_split_label(longest[outcome])[1] or 0):
            longest[outcome] = c
    drivers, skipped = _drivers(model, ev, index, longest, descriptions, top=top, n_samples=n_samples, seed=seed)
    if skipped:
        notes["drivers"] = "Not explained: " + " ".join(skipped)
    if drivers is None:
        notes.setdefault("drivers", "No label could be explained.")
    say(f"drivers: explained {len(longest) - len(skipped)} labels")
    return drivers


def write_twin_page(page: TwinPage, out, *, overwrite: bool = False) -> Path:
    """Write ``twin.html`` and the tables (``risk.csv``, ``trajectory.csv``, ``drivers.csv``,
    ``whatif.csv``; those the page has) to ``out`` at once: all of them or nothing."""
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "twin.html").write_text(render_twin_html(page), encoding="utf-8")
        page.risk.to_csv(tmp / "risk.csv", index=False)
        if page.trajectory is not None:
            page.trajectory.to_csv(tmp / "trajectory.csv", index=False)
        if page.drivers is not None:
            page.drivers.to_csv(tmp / "drivers.csv", index=False)
        if page.whatif is not None:
            page.whatif.table().to_csv(tmp / "whatif.csv", index=False)
    return out


def twin_page_from_uri(
    model_uri: str,
    meds_dir,
    subject_id: int,
    out,
    *,
    at=None,
    plans=None,
    overwrite: bool = False,
    tracking_uri: str | None = None,
    progress=None,
) -> Path:
    """``twinml twin``: load a registered model, read one subject from a MEDS directory, write its page.

    ``at`` is a date/time string (default: the subject's last event), ``plans`` a plans YAML path for a
    what-if model. ``out`` is refused before anything is loaded when it exists and ``overwrite`` is False.
    """
    from ._io import refuse_existing
    from .cohort import load_plans
    from .data import read_code_metadata, read_meds
    from .tracking import load_registered_model

    refuse_existing(out, overwrite=overwrite)  # before the model is loaded
    try:
        when = None if at is None else pd.Timestamp(at)
    except ValueError:
        raise ConfigError(f"--at: not a date/time: {at!r} (e.g. 2024-12-31 or 2024-12-31T23:59:59).") from None
    asked = load_plans(plans) if plans else None
    loaded = load_registered_model(model_uri, tracking_uri=tracking_uri)
    if asked is not None and not hasattr(loaded.model, "predict_plans"):
        raise ConfigError(
            f"--plans: {model_uri} is a {type(loaded.model).__name__}, not a what-if model; "
            "train one with model.kind: whatif to compare plans."
        )
    meta = read_code_metadata(meds_dir)
    descriptions = (
        {}
        if "description" not in meta
        else dict(zip(meta["code"].astype(str), meta["description"].fillna("").astype(str)))
    )
    ev = read_meds(meds_dir, subjects=[subject_id])
    if ev.empty:
        raise ConfigError(f"--subject: subject {subject_id} has no events in {meds_dir}.")
    page = twin_page(
        loaded.model,
        ev,
        subject_id,
        at=when,
        plans=asked,
        code_descriptions=descriptions,
        model_uri=f"models:/{loaded.name}/{loaded.version}" if loaded.version else model_uri,
        progress=progress,
    )
    return write_twin_page(page, out, overwrite=overwrite)
