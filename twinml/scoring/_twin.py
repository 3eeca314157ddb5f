"""The living twin's files: a panel's twin state saved by ``twinml score --state``, advanced by
``twinml update`` over the events that arrived since, without reading the old ones.

The state is one Parquet file per directory (``twin_state.parquet``), one row per subject, sorted by
subject, with the model it belongs to (name, version and a digest of its parameters) in the file's
metadata. An update writes the new scores and the new state beside their targets and renames them
into place; a crash leaves the old state and no scores file. A state is only advanced by the model
that made it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._arrays import NAT
from .._validation import ConfigError, MEDSValidationError
from ._score import _EVENT_COLUMNS, NO_EVENTS, SCORED, _as_frame, _write_atomic, data_files

__all__ = ["STATE_FILE", "UpdateReport", "write_state", "read_state", "update", "score_with_state"]

STATE_FILE = "twin_state.parquet"
_META_KEY = b"twinml.twin_state"
_FORMAT = 1
_TIME_FIELDS = ("last_visit", "birth", "as_of")


def _model_identity(loaded) -> dict:
    from ..models._twin import model_digest

    return {"model_name": loaded.name, "model_version": loaded.version, "model_digest": model_digest(loaded.model)}


def write_state(state, directory, identity: dict, *, then=None) -> Path:
    """Write ``state`` to ``directory/twin_state.parquet`` atomically: to a temporary file beside it,
    then (after ``then()``, if given: e.g. writing the scores that go with it) renamed into place.
    If anything fails, the old state stays and the temporary file is removed."""
    directory = Path(directory)
    cols = {"subject_id": pa.array(state.subject_id, pa.int64())}
    for f in fields(state):
        a = getattr(state, f.name)
        if f.name == "subject_id":
            continue
        if f.name in _TIME_FIELDS:
            cols[f.name] = pa.array(a, pa.int64(), mask=a == NAT).cast(pa.timestamp("us"))
        elif a.ndim == 1:
            cols[f.name] = pa.array(a)
        else:  # per-subject vectors: fixed-size lists (timestamps of readings as int64 µs, NAT for none)
            flat = np.ascontiguousarray(a).reshape(-1)
            cols[f.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), int(np.prod(a.shape[1:])))
    table = pa.table(cols)
    meta = {"format": _FORMAT, **identity,
            "shapes": {f.name: list(getattr(state, f.name).shape[1:]) for f in fields(state)}}
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.partial-{os.getpid()}"
    try:
        pq.write_table(table, tmp)
        if then is not None:
            then()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def read_state_metadata(directory) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no twin state here (make one with `twinml score ... --state {directory}`).")
    meta = pq.read_schema(path).metadata or {}
    if _META_KEY not in meta:
        raise ConfigError(f"{path}: not a twinml twin state (no {_META_KEY.decode()} metadata).")
    return json.loads(meta[_META_KEY])


def read_state(directory, model, identity: dict | None = None):
    """The state in ``directory``, refused unless ``identity`` (the loaded model's) matches its maker."""
    from ..models._twin import TwinState

    path = Path(directory) / STATE_FILE
    meta = read_state_metadata(directory)
    if identity is not None and meta.get("model_digest") != identity["model_digest"]:
        made = _describe(meta)
        raise ConfigError(f"{path}: this twin state was made by {made}, not by {_describe(identity)}; a state is "
                          "only advanced by the model that made it (rescore the panel with --state to start one).")
    table = pq.read_table(path)
    arrays = {}
    for f in fields(TwinState):
        col = table.column(f.name).combine_chunks()
        shape = meta["shapes"][f.name]
        if f.name in _TIME_FIELDS:
            arrays[f.name] = np.where(col.is_null().to_numpy(zero_copy_only=False), NAT,
                                      col.cast(pa.int64()).fill_null(0).to_numpy())
        elif shape:
            arrays[f.name] = col.values.to_numpy().reshape(-1, *shape)
        else:
            arrays[f.name] = col.to_numpy()
    state = TwinState(**arrays)
    state.check_fits(model, where=str(path))
    return state


def _describe(identity) -> str:
    who = identity.get("model_name") or "an unregistered model"
    ver = f" version {identity['model_version']}" if identity.get("model_version") else ""
    return f"{who}{ver} (parameters {identity.get('model_digest', '?')[:12]})"


def _scores_from_state(model, state, touched, as_of):
    """One row per touched subject (in ``touched`` order): status and risks, NaN where refused or empty."""
    from ..models._twin import state_risks

    out = touched[["subject_id"]].copy()
    rows = np.searchsorted(state.subject_id, out["subject_id"].to_numpy(np.int64))
    refused = touched["status"].to_numpy(object) != ""
    care = np.zeros(len(out), bool)
    care[~refused] = state.n_care[rows[~refused]] > 0
    out["status"] = np.where(refused, touched["status"].to_numpy(object), np.where(care, SCORED, NO_EVENTS))
    for c in model.label_columns_:
        out[c] = np.nan
    if care.any():
        risks = state_risks(model, state.take(rows[care]), as_of)
        out.loc[care, model.label_columns_] = risks[model.label_columns_].to_numpy(np.float64)
    return out


def score_with_state(model, events: pd.DataFrame, as_of):
    """Scores (as :func:`~twinml.scoring.score_events`) and the twin state of the subjects in ``events``,
    from one pass of the record model."""
    from ..models._twin import TwinState, advance

    sid = events["subject_id"].to_numpy(np.int64)
    subjects = sid[np.r_[True, sid[1:] != sid[:-1]]] if sid.size else sid
    state, touched = advance(model, TwinState.empty(model), events, as_of)
    scores = _scores_from_state(model, state, touched, as_of)
    # subjects whose every event is after as-of are not in the state, but are reported, as by scoring
    allrows = pd.DataFrame({"subject_id": subjects}).merge(scores, on="subject_id", how="left")
    allrows["status"] = allrows["status"].fillna(NO_EVENTS)
    return allrows, state


@dataclass
class UpdateReport:
    """What an update read and wrote (also stored in the scores file's metadata)."""

    out: Path
    state_dir: Path
    model_uri: str
    model_name: str | None
    model_version: str | None
    as_of: str
    input_fingerprint: str
    events_read: int
    events_after_as_of: int
    subjects_in_state: int
    subjects_touched: int
    advanced: int
    new_subjects: int
    refused: int
    seconds: float

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("seconds", "out", "state_dir"):
            d.pop(k)
        return d


def _check_event_schema(path) -> None:
    schema = pq.read_schema(path)
    want = {"subject_id": pa.types.is_integer, "time": pa.types.is_timestamp,
            "code": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t),
            "numeric_value": pa.types.is_floating}
    for col, ok in want.items():
        if col not in schema.names:
            raise MEDSValidationError(f"{path}: column {col!r} is required (MEDS events: subject_id, time, code, "
                                      "numeric_value).")
        if not ok(schema.field(col).type):
            kind = {"subject_id": "an integer", "time": "a timestamp", "code": "a string",
                    "numeric_value": "a float"}[col]
            raise MEDSValidationError(f"{path}: column {col!r} must be {kind} (MEDS); got {schema.field(col).type}.")


def read_new_events(events_dir) -> tuple[pd.DataFrame, int]:
    """Every event of a MEDS directory, checked (schema, whole subjects, time order) file by file."""
    from .._arrays import EventArrays

    frames = []
    for f in data_files(events_dir):
        _check_event_schema(f)
        frame = _as_frame(pq.read_table(f, columns=_EVENT_COLUMNS))
        try:
            EventArrays(frame)
        except MEDSValidationError as e:
            raise MEDSValidationError(f"{f}: {str(e).removeprefix('events: ')}") from None
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frames) > 1:
        events["code"] = events["code"].astype(str).astype("category")
        sid = events["subject_id"].to_numpy(np.int64)
        starts = sid[np.r_[True, sid[1:] != sid[:-1]]]
        if np.unique(starts).size != starts.size:
            dup = pd.Series(starts)[pd.Series(starts).duplicated()].iloc[0]
            raise MEDSValidationError(f"{events_dir}: subject_id {dup} appears in more than one data file; each "
                                      "subject must be in one file only.")
    return events, len(events)


def update(model_uri: str, state_dir, events_dir, as_of, out, *, tracking_uri: str | None = None,
           overwrite: bool = False, progress=None) -> UpdateReport:
    """Advance a saved twin state over new events and score the subjects they touch.

    Parameters
    ----------
    model_uri : the model that made the state (its parameters must match).
    state_dir : directory holding ``twin_state.parquet`` (from ``score(..., state_dir=...)``).
    events_dir : MEDS directory of the events since the state was saved (only these are read).
    as_of : the time to advance to; later events are not read.
    out : Parquet scores of the touched subjects: ``status`` is ``scored``, ``no events before as-of`` or
        a refusal (an event at or before the subject's last absorbed visit, or an as-of before the
        subject's state), whose state is kept as it was.
    """
    from ..models._twin import advance, check_record_model
    from ..tracking import data_fingerprint, load_registered_model

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    as_of_ts = _as_of(as_of, "update")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    read_state_metadata(state_dir)  # a missing state fails before the model is loaded
    loaded = load_registered_model(model_uri, tracking_uri=tracking_uri)
    check_record_model(loaded.model, "update")
    identity = _model_identity(loaded)
    state = read_state(state_dir, loaded.model, identity)
    events, n_read = read_new_events(events_dir)
    t = events["time"].to_numpy("datetime64[us]")
    n_after = int((~np.isnat(t) & (t > as_of_ts.to_datetime64())).sum())
    say(f"twin state: {len(state):,} subjects; {n_read:,} new events ({n_after:,} after {as_of_ts} not read)")
    new_state, touched = advance(loaded.model, state, events, as_of_ts)
    scores = _scores_from_state(loaded.model, new_state, touched, as_of_ts)
    scores = scores.sort_values("subject_id", kind="stable").reset_index(drop=True)
    scores["model_version"] = loaded.version or ""
    refused = int((touched["status"] != "").sum())
    new = int((~np.isin(touched["subject_id"].to_numpy(np.int64), state.subject_id)).sum())
    report = UpdateReport(out, Path(state_dir), model_uri, loaded.name, loaded.version, as_of_ts.isoformat(),
                          data_fingerprint(events_dir), n_read, n_after, len(new_state), len(touched),
                          len(touched) - refused, new, refused, 0.0)
    if report.advanced + report.refused != report.subjects_touched:
        raise RuntimeError("update: subjects touched != advanced + refused")
    # the new state is complete beside the old before the scores are written; it replaces the old
    # only once they are (a failure in between leaves the old state, which the same update can redo)
    write_state(new_state, state_dir, identity, then=lambda: _write_atomic(scores, out, report))
    report.seconds = time.perf_counter() - t0
    say(f"{report.subjects_touched:,} subjects touched: {report.advanced:,} advanced ({new:,} new), "
        f"{report.refused:,} refused; {report.subjects_in_state - report.subjects_touched:,} untouched -> {out} "
        f"({report.seconds:.1f}s)")
    return report


def _as_of(as_of, owner) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(as_of)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{owner}: 'as_of' must be a date or timestamp, e.g. 2024-01-01. Got {as_of!r} ({e}).") from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts
