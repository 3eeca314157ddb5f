"""Batch scoring of a patient panel: a registered model over every subject of a MEDS dataset.

Both engines run the same function, :func:`score_events`, over groups of whole subjects: the
local engine streams over the dataset's shard files (one subject-aligned slice at a time, so
memory is bounded by the slice, not the panel), the Spark engine hands subject-partitioned
groups to it through ``applyInPandas``. The scores (one small row per subject) are gathered,
sorted by subject and written once, atomically: a crash leaves no output file, a rerun writes
the same bytes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import refuse_existing
from .._validation import ConfigError, MEDSValidationError, check_positive_int

__all__ = ["score", "score_events", "ScoreReport", "ENGINES", "NO_EVENTS", "SCORED", "read_score_metadata"]

ENGINES = ("local", "spark")
SCORED = "scored"
NO_EVENTS = "no events before as-of"
_META_KEY = b"twinml.scoring"
_EVENT_COLUMNS = ["subject_id", "time", "code", "numeric_value"]
BIRTH_CODE = "MEDS_BIRTH"


class _Report(Protocol):
    """A run's facts, stored in the metadata of the files it writes (ScoreReport, UpdateReport)."""

    def to_dict(self) -> dict: ...


@dataclass
class ScoreReport:
    """What a scoring run read and wrote (also stored in the output file's metadata)."""

    out: Path
    model_uri: str
    model_name: str | None
    model_version: str | None
    as_of: str
    input_fingerprint: str
    subjects: int
    scored: int
    no_events_before_as_of: int
    events_read: int
    seconds: float
    engine: str
    model_digest: str = ""  # SHA-256 of the model's artifacts as loaded (checked against its audit's)

    def to_dict(self) -> dict:
        """The facts stored in the file: no wall time or path, so a rerun writes the same bytes anywhere."""
        d = dict(self.__dict__)
        d.pop("seconds")
        d.pop("out")
        return d


def score_events(model, events: pd.DataFrame, as_of, *, trajectories: bool = False):
    """Risks of every subject in ``events`` at ``as_of``, one row per subject in order of appearance.

    ``events`` holds whole subjects sorted by subject then time. Events after ``as_of`` are
    never seen by the model (its featurizer cuts at the prediction time). A subject with no
    recorded event at or before ``as_of`` (birth does not count: it is not a record of care)
    gets ``status`` = ``"no events before as-of"`` and no risks, instead of silently vanishing.

    ``trajectories=True`` returns ``(scores, forecasts)``: the model's trajectory forecasts of the
    scored subjects in long format (``subject_id``, ``code``, ``horizon_days``, ``forecast``,
    ``lower_80``, ``upper_80``; see ``predict_trajectory``).
    """
    as_of = pd.Timestamp(as_of).as_unit("us").to_datetime64()
    sid = events["subject_id"].to_numpy(np.int64)
    new = np.r_[True, sid[1:] != sid[:-1]] if sid.size else np.zeros(0, bool)
    subjects = sid[new]
    t = events["time"].to_numpy("datetime64[us]")
    past = ~np.isnat(t) & (t <= as_of) & (events["code"] != BIRTH_CODE).to_numpy()
    rank = np.cumsum(new) - 1
    has_past = np.zeros(subjects.size, bool)
    has_past[rank[past]] = True
    out = pd.DataFrame({"subject_id": subjects, "status": np.where(has_past, SCORED, NO_EVENTS)})
    for c in model.label_columns_:
        out[c] = np.nan
    if has_past.any():
        index = pd.DataFrame({"subject_id": subjects[has_past], "prediction_time": np.full(has_past.sum(), as_of)})
        both = getattr(model, "predict_risk_and_trajectory", None) if trajectories else None
        if both is not None:  # one pass of the network for both outputs
            risks, forecasts = both(events, index)
        else:
            risks = model.predict_risk(events, index)
            forecasts = model.predict_trajectory(events, index) if trajectories else None
        out.loc[has_past, model.label_columns_] = risks[model.label_columns_].to_numpy(np.float64)
    if not trajectories:
        return out
    return out, (forecasts.drop(columns="prediction_time") if has_past.any() else _empty_forecasts())


def _empty_forecasts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": np.zeros(0, np.int64),
            "code": np.zeros(0, object),
            "horizon_days": np.zeros(0, np.int64),
            **{c: np.zeros(0) for c in ("forecast", "lower_80", "upper_80")},
        }
    )


def _subject_slices(table: pa.Table, subjects_per_slice: int):
    """Consecutive slices of a subject-sorted table, each holding at most ``subjects_per_slice`` whole subjects."""
    sid = table.column("subject_id").to_numpy()
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if sid.size else np.zeros(0, np.int64)
    cuts = np.r_[starts[::subjects_per_slice], sid.size]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        yield table.slice(lo, hi - lo)


def typed_events(df: pd.DataFrame) -> pd.DataFrame:
    """Event columns as the models read them: code categorical, time in µs, value float32."""
    df["code"] = df["code"].astype("category")
    df["time"] = df["time"].astype("datetime64[us]")
    df["numeric_value"] = df["numeric_value"].astype("float32")
    return df


def _as_frame(table: pa.Table) -> pd.DataFrame:
    return typed_events(table.to_pandas())


def data_files(events_dir) -> list[Path]:
    root = Path(events_dir)
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise MEDSValidationError(f"{root}: not a MEDS dataset with events (no data/**/*.parquet files).")
    return files


def _score_local(model, files, as_of, subjects_per_slice, say, states=None, forecasts=None):
    """Score slice by slice; with a ``states`` list, from the twin state of each slice (kept there);
    with a ``forecasts`` list, the trajectory forecasts of each slice too (kept there)."""
    parts, n_events, n_subjects, t0 = [], 0, 0, time.perf_counter()
    for i, f in enumerate(files, start=1):
        table = pq.read_table(f, columns=_EVENT_COLUMNS)
        for piece in _subject_slices(table, subjects_per_slice):
            if forecasts is not None:
                part, fc = score_events(model, _as_frame(piece), as_of, trajectories=True)
                forecasts.append(fc)
            elif states is None:
                part = score_events(model, _as_frame(piece), as_of)
            else:
                from ._twin import score_with_state

                part, st = score_with_state(model, _as_frame(piece), as_of)
                states.append(st)
            parts.append(part)
            n_events += piece.num_rows
            n_subjects += len(part)
            rate = n_subjects / max(time.perf_counter() - t0, 1e-9)
            say(f"file {i}/{len(files)}: {n_subjects:,} subjects scored ({rate:,.0f}/s)")
        del table
    return parts, n_events


def score(
    model_uri: str,
    events_dir,
    as_of,
    out,
    *,
    engine: str = "local",
    tracking_uri: str | None = None,
    subjects_per_slice: int = 20_000,
    spark_master: str | None = None,
    spark_partitions: int | None = None,
    overwrite: bool = False,
    state_dir=None,
    trajectories=None,
    override: str | None = None,
    progress=None,
) -> ScoreReport:
    """Score every subject of a MEDS dataset at ``as_of`` with a logged or registered model.

    Parameters
    ----------
    model_uri : str
        ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/...`` or a local path.
    events_dir : MEDS dataset directory.
    as_of : date or timestamp; events after it are ignored.
    out : Parquet file to write: ``subject_id``, ``status``, one risk column per outcome and
        horizon, ``model_version``; run facts (model, as-of, input fingerprint, counts) in its metadata.
    engine : {"local", "spark"}
    subjects_per_slice : whole subjects scored at once by the local engine (bounds memory).
    spark_master, spark_partitions : Spark only (default ``local[*]``; partitions from the input size).
    state_dir : also save each subject's twin state there (a manifest and an Arrow part file; a
        whole-record model and the local engine only), for :func:`~twinml.scoring.update` to
        continue from. The scores then come from that state (one pass; equal to the usual ones
        within 1e-5).
    trajectories : also write the model's trajectory forecasts of every scored subject to this
        Parquet file, long format (``subject_id``, ``code``, ``horizon_days``, ``forecast``,
        ``lower_80``, ``upper_80``, ``model_version``; the scores file's run facts in its metadata).
        A sequence model with a trajectory head and the local engine only; both files are written
        together, all or nothing.
    override : a registered version whose artifacts changed since its audit is refused (their digest
        is recomputed before the model is unpickled) unless this reason is given; it is recorded on the
        version. The digest scored with is stored in the output's metadata (``model_digest``).
    """
    from ..tracking import data_fingerprint, load_registered_model

    say = progress or (lambda msg: None)
    as_of_ts, out, trajectories = _checked_request(
        engine, subjects_per_slice, as_of, out, overwrite, state_dir, trajectories
    )
    states: list[pd.DataFrame] | None = [] if state_dir is not None else None
    forecasts: list[pd.DataFrame] | None = [] if trajectories is not None else None
    files = data_files(events_dir)
    t0 = time.perf_counter()
    loaded = load_registered_model(model_uri, tracking_uri=tracking_uri, verify="score", override_reason=override)
    say(f"model {model_uri}" + (f" = {loaded.name} version {loaded.version}" if loaded.version else ""))
    _check_model_outputs(loaded.model, model_uri, states, forecasts)
    spark = (spark_master, spark_partitions)
    scores, n_events = _score_panel(
        loaded, engine, events_dir, files, as_of_ts, subjects_per_slice, spark, say, states, forecasts
    )
    scores = _one_row_per_subject(scores, events_dir)
    scores["model_version"] = loaded.version or ""
    n_scored = int((scores["status"] == SCORED).sum())
    facts = (as_of_ts.isoformat(), data_fingerprint(events_dir), len(scores), n_scored, len(scores) - n_scored)
    report = ScoreReport(
        out, model_uri, loaded.name, loaded.version, *facts, int(n_events), time.perf_counter() - t0, engine,
        loaded.digest,
    )  # fmt: skip
    if report.scored + report.no_events_before_as_of != report.subjects:
        raise RuntimeError("score: subjects read != scored + reported without events")
    _write_outputs(report, scores, loaded, trajectories, forecasts, state_dir, states, say)
    report.seconds = time.perf_counter() - t0
    say(
        f"{report.subjects:,} subjects: {report.scored:,} scored, {report.no_events_before_as_of:,} with no events "
        f"before {as_of_ts.date()} -> {out} ({report.subjects / max(report.seconds, 1e-9):,.0f} subjects/s)"
    )
    return report


def _score_panel(loaded, engine, events_dir, files, as_of_ts, subjects_per_slice, spark, say, states, forecasts):
    """Scores of every subject (one engine) and the number of events read; the local engine also
    collects each slice's twin states or forecasts into ``states`` / ``forecasts`` when they are lists."""
    if engine == "local":
        parts, n_events = _score_local(loaded.model, files, as_of_ts, subjects_per_slice, say, states, forecasts)
        scores = (
            pd.concat(parts, ignore_index=True)
            if parts
            else score_events(
                loaded.model, _as_frame(pq.read_table(files[0], columns=_EVENT_COLUMNS).slice(0, 0)), as_of_ts
            )
        )
    else:
        from ._spark import score_spark

        scores, n_events = score_spark(loaded, events_dir, as_of_ts, master=spark[0], partitions=spark[1], say=say)
    return scores, n_events


def _checked_request(engine, subjects_per_slice, as_of, out, overwrite, state_dir, trajectories):
    """The request's arguments checked, in order, before any work: (as-of time, out, trajectories file)."""
    if engine not in ENGINES:
        raise ConfigError(f"score: 'engine' must be one of {list(ENGINES)}. Got {engine!r} instead.")
    check_positive_int(subjects_per_slice, name="subjects_per_slice", owner="score")
    try:
        as_of_ts = pd.Timestamp(as_of)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"score: 'as_of' must be a date or timestamp, e.g. 2024-01-01. Got {as_of!r} ({e})."
        ) from None
    if as_of_ts.tzinfo is not None:
        as_of_ts = as_of_ts.tz_convert("UTC").tz_localize(None)
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    if state_dir is not None:
        from ._twin import MANIFEST

        if engine != "local":
            raise ConfigError(
                f"score: a twin state (state_dir) is saved by the local engine only; got engine {engine!r}."
            )
        refuse_existing(Path(state_dir) / MANIFEST, overwrite=overwrite, what="a twin state")
    if trajectories is not None:
        if engine != "local" or state_dir is not None:
            raise ConfigError(
                "score: trajectory forecasts (trajectories) are written by the local engine without "
                f"a twin state only; got engine {engine!r}" + (" and a state_dir" if state_dir else "")
            )
        trajectories = Path(trajectories)
        refuse_existing(trajectories, overwrite=overwrite)
        if trajectories.resolve() == out.resolve():
            raise ConfigError(f"score: the trajectories file must differ from the scores file; both are {out}")
    return as_of_ts, out, trajectories


def _check_model_outputs(model, model_uri, states, forecasts) -> None:
    """A twin state needs a whole-record model; trajectory forecasts a model with a trajectory head."""
    if states is not None:
        from ..models.twin import check_record_model

        check_record_model(model, "score --state")
    if forecasts is not None and not getattr(model, "trajectory_codes_", None):
        raise ConfigError(
            f"score --trajectories: {model_uri} ({type(model).__name__}) has no trajectory "
            "forecasts; only a sequence model fitted with trajectory_codes has"
        )


def _one_row_per_subject(scores: pd.DataFrame, events_dir) -> pd.DataFrame:
    scores = scores.sort_values("subject_id", kind="stable").reset_index(drop=True)
    if scores["subject_id"].duplicated().any():
        raise MEDSValidationError(
            f"{events_dir}: subject_id {scores['subject_id'][scores['subject_id'].duplicated()].iloc[0]} "
            "appears in more than one data file; each subject must be in one file only."
        )
    return scores


def _write_outputs(report, scores, loaded, trajectories, forecasts, state_dir, states, say) -> None:
    """The scores file, with the trajectories file or the twin state when asked: all or nothing."""
    out = report.out
    if forecasts is not None:
        fc = pd.concat(forecasts, ignore_index=True) if forecasts else _empty_forecasts()
        fc = fc.sort_values(["subject_id", "code", "horizon_days"], kind="stable").reset_index(drop=True)
        fc["model_version"] = loaded.version or ""
        _write_atomic_many([(fc, trajectories), (scores, out)], report)
        say(
            f"trajectory forecasts: {len(fc):,} rows ({fc['code'].nunique()} codes x "
            f"{fc['horizon_days'].nunique()} horizons) -> {trajectories}"
        )
    elif states is None:
        _write_atomic(scores, out, report)
    else:
        from ..models.twin import TwinState
        from ._twin import _Lock, _model_identity, write_state

        state = TwinState.concat(states).sorted() if states else TwinState.empty(loaded.model)
        with _Lock(state_dir):
            write_state(
                state, state_dir, _model_identity(loaded), base=True, then=lambda: _write_atomic(scores, out, report)
            )
        say(f"twin state of {len(state):,} subjects -> {Path(state_dir)}")


def _write_atomic(scores: pd.DataFrame, out: Path, report: _Report) -> None:
    """Write to a hidden temporary file beside ``out`` and rename it into place: all or nothing."""
    _write_atomic_many([(scores, out)], report)


def _write_atomic_many(frames, report: _Report) -> None:
    """Each ``(frame, path)`` to a hidden temporary file beside its path (the run facts in its metadata),
    then renamed into place in order, the last path last (the commit point). If a rename fails,
    the files already placed are put back as they were (an earlier file restored, a new one removed)."""
    staged, placed, done = [], [], False
    try:
        for frame, out in frames:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            meta = dict(table.schema.metadata or {})
            meta[_META_KEY] = json.dumps(report.to_dict(), sort_keys=True).encode()
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
            staged.append((tmp, out))
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        for tmp, out in staged:
            existed = out.exists()
            backup = out.parent / f".{out.name}.previous-{os.getpid()}" if existed and len(staged) > 1 else None
            if backup is not None:
                os.replace(out, backup)
            placed.append((out, backup, existed))
            os.replace(tmp, out)
        done = True
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()
        for out, backup, existed in reversed(placed):
            if done:
                if backup is not None:
                    backup.unlink()
            elif backup is not None:
                os.replace(backup, out)  # put the earlier file back
            elif not existed and out.is_file():
                out.unlink()  # placed by this call: take it away again


def read_score_metadata(path) -> dict:
    """The run facts stored in a scores file (model, version, as-of, input fingerprint, counts)."""
    meta = pq.read_schema(path).metadata or {}
    if _META_KEY not in meta:
        raise ConfigError(f"{path}: not a twinml scores file (no {_META_KEY.decode()} metadata).")
    return json.loads(meta[_META_KEY])
