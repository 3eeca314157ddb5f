"""The living twin's files: a panel's twin state saved by ``twinml score --state``, advanced by
``twinml update`` over the events that arrived since, without reading the old ones.

A state directory holds ``manifest.json`` and the part files it lists, oldest first (Arrow IPC
files, uncompressed, so an update memory-maps them and reads only its subjects' rows): the
base written by ``score --state`` (one row per subject) and one part per update holding only the
subjects that update advanced (a later row of a subject supersedes earlier ones). So an update
writes in proportion to what changed, and every other subject's row is left as it was, byte for
byte. The manifest names the model the state belongs to (name, version and a digest of its
parameters) and is the commit point: a part is written first, the scores next, and the manifest
is replaced last, atomically; a crash before that leaves the old state (an unlisted part file is
ignored and removed by the next write). When the update parts outgrow the base
(:data:`COMPACT_AFTER` parts, or more rows than the base), the update writes one new base instead.
A state is only advanced by the model that made it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._arrays import NAT
from .._io import refuse_existing
from .._validation import ConfigError, MEDSValidationError
from ._score import _EVENT_COLUMNS, NO_EVENTS, SCORED, _as_frame, _write_atomic, data_files

__all__ = ["MANIFEST", "COMPACT_AFTER", "UpdateReport", "write_state", "read_state", "update", "score_with_state"]

MANIFEST = "manifest.json"
COMPACT_AFTER = 16  # update parts before the next update writes a new base
_FORMAT = 1
_TIME_FIELDS = ("last_visit", "birth", "as_of")
NOT_YET = "not advanced: every new event is after as-of (send them again with a later update)"


def _model_identity(loaded) -> dict:
    from ..models.twin import model_digest

    return {"model_name": loaded.name, "model_version": loaded.version, "model_digest": model_digest(loaded.model)}


def _table(state) -> pa.Table:
    cols = {"subject_id": pa.array(state.subject_id, pa.int64())}
    for f in fields(state):
        a = getattr(state, f.name)
        if f.name == "subject_id":
            continue
        if f.name in _TIME_FIELDS:
            cols[f.name] = pa.array(a, pa.int64(), mask=a == NAT).cast(pa.timestamp("us"))
        elif a.ndim == 1:
            cols[f.name] = pa.array(a)
        elif int(np.prod(a.shape[1:])) == 0:
            continue  # a field of width 0 (e.g. no read-out codes): its shape in the manifest is enough
        else:  # per-subject vectors: fixed-size lists (timestamps of readings as int64 µs, NAT for none)
            flat = np.ascontiguousarray(a).reshape(-1)
            cols[f.name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), int(np.prod(a.shape[1:])))
    return pa.table(cols)


class _Lock:
    """An exclusive lock on a state directory for one writer at a time (``.lock``, created atomically)."""

    def __init__(self, directory):
        self.path = Path(directory) / ".lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise ConfigError(
                f"{self.path}: another update or scoring run is writing this twin state (if none is, "
                "a run was killed: remove the file and rerun)."
            ) from None
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def write_state(
    rows, directory, identity: dict, *, base: bool, new_subjects: int = 0, then=None, events_digest: str | None = None
) -> dict:
    """Write ``rows`` (a :class:`~twinml.models.twin.TwinState`, sorted by subject) as a new part of
    the state in ``directory``: the whole new base (``base=True``) or an update part (``new_subjects``
    of its rows are subjects the state did not hold), then run ``then()`` (e.g. write the scores
    that go with it) and commit by replacing the manifest. On any failure the old manifest stands
    and the new part is removed. Returns the new manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(directory) if (directory / MANIFEST).exists() and not base else None
    name = f"part-{uuid.uuid4().hex[:16]}.arrow"
    parts = ([] if old is None else old["parts"]) + [
        {"file": name, "rows": len(rows), "base": base, "events_digest": events_digest}
    ]
    n_subjects = len(rows) if base else (old["subjects"] if old else 0) + int(new_subjects)
    manifest = {
        "format": _FORMAT,
        **identity,
        "parts": parts,
        "subjects": n_subjects,
        "shapes": {f.name: list(getattr(rows, f.name).shape[1:]) for f in fields(rows)},
    }
    tmp = directory / f".{MANIFEST}.partial-{os.getpid()}"
    done = False
    try:
        table = _table(rows)
        with pa.OSFile(str(directory / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(len(rows), 1))
        if then is not None:
            then()
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, directory / MANIFEST)
        done = True
    finally:
        if tmp.exists():
            tmp.unlink()
        if not done and (directory / name).exists():
            (directory / name).unlink()
    listed = {p["file"] for p in parts}
    for f in directory.glob("part-*.arrow"):  # superseded bases' parts and leftovers of failed writes
        if f.name not in listed:
            f.unlink()
    return manifest


def _read_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: no twin state here (make one with `twinml score ... --state {directory}`).")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not a twinml twin state manifest ({e}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or not manifest.get("parts"):
        raise ConfigError(f"{path}: not a twinml twin state manifest (format {_FORMAT} expected).")
    return manifest


def read_state_metadata(directory) -> dict:
    """The state's manifest: the model it belongs to, its parts and the shape of each field."""
    return _read_manifest(directory)


def needs_compaction(manifest) -> bool:
    parts = manifest["parts"]
    updates = [p for p in parts if not p["base"]]
    return len(updates) >= COMPACT_AFTER or sum(p["rows"] for p in updates) > parts[0]["rows"]


def _part(directory, part) -> pa.Table:
    """A part file, memory-mapped (zero-copy: only the rows taken are read from disk)."""
    return pa.ipc.open_file(pa.memory_map(str(Path(directory) / part["file"]), "r")).read_all()


def _to_state(table: pa.Table, meta: dict, model):
    from ..models.twin import TwinState

    arrays = {}
    for f in fields(TwinState):
        shape = meta["shapes"][f.name]
        if shape and int(np.prod(shape)) == 0:
            arrays[f.name] = np.zeros((table.num_rows, *shape), getattr(TwinState.empty(model), f.name).dtype)
            continue
        col = table.column(f.name).combine_chunks()
        if f.name in _TIME_FIELDS:
            arrays[f.name] = np.where(
                col.is_null().to_numpy(zero_copy_only=False), NAT, col.cast(pa.int64()).fill_null(0).to_numpy()
            )
        elif shape:
            arrays[f.name] = col.values.to_numpy().reshape(-1, *shape)
        else:
            arrays[f.name] = col.to_numpy()
    return TwinState(**arrays)


def read_state(directory, model, identity: dict | None = None, *, subjects=None):
    """The state in ``directory`` (its parts merged: each subject's latest row), refused unless
    ``identity`` (the loaded model's) is the model that made it. With ``subjects``, only their rows
    (those the state holds), read by position from the memory-mapped parts."""
    from ..models.twin import TwinState

    path = Path(directory) / MANIFEST
    meta = _read_manifest(directory)
    if identity is not None and meta.get("model_digest") != identity["model_digest"]:
        raise ConfigError(
            f"{path}: this twin state was made by {_describe(meta)}, not by {_describe(identity)}; a "
            "state is only advanced by the model that made it (rescore the panel with --state to "
            "start one)."
        )
    want = None if subjects is None else np.unique(np.asarray(subjects, np.int64))
    pieces = []
    for part in meta["parts"]:
        table = _part(directory, part)
        if want is not None:
            sid = table.column("subject_id").to_numpy()  # sorted within a part
            pos = np.searchsorted(sid, want)
            hit = pos < sid.size
            hit[hit] = sid[pos[hit]] == want[hit]
            table = table.take(pa.array(pos[hit]))
        pieces.append(_to_state(table, meta, model))
    state = TwinState.concat(pieces) if len(pieces) > 1 else pieces[0]
    if len(pieces) > 1:  # each subject's latest row: parts are in order, rows within a part unique
        order = np.argsort(state.subject_id, kind="stable")
        sid = state.subject_id[order]
        last = np.r_[sid[1:] != sid[:-1], True] if sid.size else np.zeros(0, bool)
        state = state.take(order[last])
    state.check_fits(model, where=str(path))
    return state


def _describe(identity) -> str:
    who = identity.get("model_name") or "an unregistered model"
    ver = f" version {identity['model_version']}" if identity.get("model_version") else ""
    return f"{who}{ver} (parameters {identity.get('model_digest', '?')[:12]})"


def _scores_from_state(model, state, touched, as_of):
    """One row per touched subject (in ``touched`` order): status and risks, NaN where refused or empty."""
    from ..models.twin import state_risks

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
    from ..models.twin import TwinState, advance

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
    not_yet: int
    seconds: float

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("seconds", "out", "state_dir"):
            d.pop(k)
        return d


def _check_event_schema(path) -> None:
    schema = pq.read_schema(path)
    want = {
        "subject_id": pa.types.is_integer,
        "time": pa.types.is_timestamp,
        "code": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t),
        "numeric_value": pa.types.is_floating,
    }
    for col, ok in want.items():
        if col not in schema.names:
            raise MEDSValidationError(
                f"{path}: column {col!r} is required (MEDS events: subject_id, time, code, numeric_value)."
            )
        if not ok(schema.field(col).type):
            kind = {"subject_id": "an integer", "time": "a timestamp", "code": "a string", "numeric_value": "a float"}[
                col
            ]
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
        starts = sid[np.r_[True, sid[1:] != sid[:-1]]] if sid.size else sid
        if np.unique(starts).size != starts.size:
            dup = pd.Series(starts)[pd.Series(starts).duplicated()].iloc[0]
            raise MEDSValidationError(
                f"{events_dir}: subject_id {dup} appears in more than one data file; each "
                "subject must be in one file only."
            )
    return events, len(events)


def update(
    model_uri: str,
    state_dir,
    events_dir,
    as_of,
    out,
    *,
    tracking_uri: str | None = None,
    overwrite: bool = False,
    progress=None,
) -> UpdateReport:
    """Advance a saved twin state over new events and score the subjects they touch.

    Parameters
    ----------
    model_uri : the model that made the state (its parameters must match).
    state_dir : a twin state directory (from ``score(..., state_dir=...)``); advanced in place.
    events_dir : MEDS directory of the events since the state was saved (only these are read).
    as_of : the time to advance to; later events are not read.
    out : Parquet scores of the subjects the new events name: ``status`` is ``scored``, ``no events
        before as-of``, a refusal (an event at or before the subject's last absorbed visit, an as-of
        before the subject's state, static rows for a subject the state holds), whose state is kept
        as it was, or :data:`NOT_YET` (every new event after as-of).

    Events after ``as_of`` are not absorbed: send them again with a later update. The same batch of
    events twice (same order-free digest) is refused before anything is read or written, so an
    update retried after it committed does nothing. One writer at a time: a ``.lock`` file in the
    state directory.
    """
    from ..models.twin import advance, check_record_model
    from ..tracking import data_fingerprint, load_registered_model

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    as_of_ts = _as_of(as_of, "update")
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    manifest = read_state_metadata(state_dir)  # a missing state fails before the model is loaded
    loaded = load_registered_model(model_uri, tracking_uri=tracking_uri)
    check_record_model(loaded.model, "update")
    identity = _model_identity(loaded)
    with _Lock(state_dir):
        manifest = read_state_metadata(state_dir)
        events, n_read = read_new_events(events_dir)
        n_after, digest = _absorbable(events, as_of_ts, manifest, state_dir, events_dir)
        # only the rows of the subjects the new events name are read from the state
        prior = read_state(state_dir, loaded.model, identity, subjects=events["subject_id"].to_numpy(np.int64))
        say(
            f"twin state: {manifest['subjects']:,} subjects, {len(prior):,} of them in the new events; {n_read:,} "
            f"new events ({n_after:,} after {as_of_ts} not read)"
        )
        new_state, touched = advance(loaded.model, prior, events, as_of_ts)
        scores, later = _update_scores(loaded, new_state, touched, events, as_of_ts)
        refused, advanced, new_advanced = _tally(touched, prior)
        counts = (n_read, n_after, manifest["subjects"] + new_advanced, len(touched), len(touched) - refused)
        report = UpdateReport(
            out,
            Path(state_dir),
            model_uri,
            loaded.name,
            loaded.version,
            as_of_ts.isoformat(),
            data_fingerprint(events_dir),
            *counts,
            new_advanced,
            refused,
            int(later.size),
            0.0,
        )
        if report.advanced + report.refused != report.subjects_touched:
            raise RuntimeError("update: subjects touched != advanced + refused")
        rows = new_state.take(np.searchsorted(new_state.subject_id, advanced))
        compact = _commit(state_dir, loaded, identity, manifest, rows, new_advanced, digest, scores, report)
    report.seconds = time.perf_counter() - t0
    say(
        f"{report.subjects_touched:,} subjects touched: {report.advanced:,} advanced ({new_advanced:,} new), "
        f"{report.refused:,} refused; {report.subjects_in_state - report.subjects_touched:,} untouched -> {out} "
        f"({report.seconds:.1f}s)" + ("; state compacted into a new base" if compact else "")
    )
    return report


def _absorbable(events, as_of_ts, manifest, state_dir, events_dir):
    """How many new events an update leaves (those after as-of) and the digest of those it absorbs; the
    same events again mean the update already committed: refused."""
    from ..models.twin import events_digest

    t = events["time"].to_numpy("datetime64[us]")
    upto = np.isnat(t) | (t <= as_of_ts.to_datetime64())
    n_after = int((~upto).sum())
    digest = events_digest(events[upto]) if upto.any() else None
    if digest is not None and any(p.get("events_digest") == digest for p in manifest["parts"]):
        raise ConfigError(
            f"{events_dir}: its {int(upto.sum()):,} events up to {as_of_ts} were already absorbed "
            f"into the twin state in {Path(state_dir) / MANIFEST} (same events digest {digest}); "
            "nothing done."
        )
    return n_after, digest


def _tally(touched, prior):
    """Of the touched subjects: how many were refused, the (sorted) ids of those advanced, and how many of
    those are new to the state."""
    status = touched["status"].to_numpy(object)
    ids = touched["subject_id"].to_numpy(np.int64)
    is_new = ~np.isin(ids, prior.subject_id)
    return int((status != "").sum()), np.sort(ids[status == ""]), int((is_new & (status == "")).sum())


def _update_scores(loaded, new_state, touched, events, as_of_ts):
    """Scores of the touched subjects, with the subjects whose every new event is after as-of reported
    (not advanced); and those subjects."""
    named = pd.unique(events["subject_id"].to_numpy(np.int64))
    later = np.setdiff1d(named, touched["subject_id"].to_numpy(np.int64))
    scores = _scores_from_state(loaded.model, new_state, touched, as_of_ts)
    if later.size:
        scores = pd.concat([scores, pd.DataFrame({"subject_id": later, "status": NOT_YET})], ignore_index=True)
    scores = scores.sort_values("subject_id", kind="stable").reset_index(drop=True)
    scores["model_version"] = loaded.version or ""
    return scores, later


def _commit(state_dir, loaded, identity, manifest, rows, new_advanced, digest, scores, report) -> bool:
    """Write the advanced ``rows`` as a new part, then the scores, then the manifest (the commit): a failure
    on the way leaves the old state, which the same update can redo. Returns whether the state was
    compacted (the whole state, each subject's latest row, as one new base)."""
    compact = needs_compaction(manifest)
    if compact:
        from ..models.twin import TwinState

        whole = read_state(state_dir, loaded.model, identity)
        keep = ~np.isin(whole.subject_id, rows.subject_id)
        rows = TwinState.concat([whole.take(np.flatnonzero(keep)), rows]).sorted()
    if len(rows) or compact:
        write_state(
            rows,
            state_dir,
            identity,
            base=compact,
            new_subjects=new_advanced,
            events_digest=digest,
            then=lambda: _write_atomic(scores, report.out, report),
        )
    else:
        _write_atomic(scores, report.out, report)
    return compact


def _as_of(as_of, owner) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(as_of)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"{owner}: 'as_of' must be a date or timestamp, e.g. 2024-01-01. Got {as_of!r} ({e})."
        ) from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts
