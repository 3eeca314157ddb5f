"""The twin state of the whole-record GRU: what it needs to continue each subject's record where it ends.

A :class:`~twinml.models.RecordRiskModel` reads a subject's record once, visit by visit, and reads
out at the prediction time. Everything that readout needs is a small, fixed-size summary of the
record up to its last visit: every GRU layer's state after that visit, the visit's time, the birth
time and static traits, and the last reading of each code the model reads out. :func:`advance`
continues that summary over new events (the visits after the state's last one) without reading the
old ones; :func:`state_risks` reads the risks out of it at any later time. Both are vectorised over
subjects (one padded GRU batch of their new visits), and equal a full rescore of the whole history:
the same features, the same arithmetic, in the same order, except that the recurrence resumes from
the stored state instead of recomputing it.

An event at or before a subject's last absorbed visit cannot be absorbed (it would change visits the
state summarises): that subject is refused, its state left as it was, and the caller told why.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from .._arrays import NAT, EventArrays, ragged_arange
from .._validation import ConfigError
from ..features import last_readings, last_value_features
from ._hazard import calibrated_curve, curve_frame

__all__ = ["TwinState", "advance", "state_risks", "model_digest", "LATE_EVENT", "EARLIER_AS_OF", "STATIC_AGAIN"]

_DAY_US = 86_400 * 1_000_000
_YEAR_US = 365.25 * _DAY_US
BIRTH = "MEDS_BIRTH"
LATE_EVENT = "refused: an event at or before the last visit the state holds (rescore this subject in full)"
EARLIER_AS_OF = "refused: as-of earlier than the state's (rescore this subject in full)"
STATIC_AGAIN = (
    "refused: static rows (no time) for a subject the state already holds; its static traits were read "
    "with its first events (rescore this subject in full if they changed)"
)


@dataclass
class TwinState:
    """Per subject (rows sorted by ``subject_id``), what the model needs to continue the record.

    ``hidden`` (n, n_layers, d_model) is every GRU layer's state after ``last_visit`` (µs; ``NAT``
    before any visit, with zero state); ``birth`` (µs or ``NAT``) and ``traits`` (the static codes'
    columns) give the static inputs at any time; ``last_value`` / ``last_value_time`` the last
    normalised reading of each read-out code (``NAT``: none); ``as_of`` the time the subject was
    last advanced to; ``n_events`` the events absorbed and ``n_care`` those that are neither static
    nor birth (a subject without any is reported "no events before as-of", as by scoring);
    ``digest`` the sum (mod 2**64) of the absorbed events' 64-bit hashes, so it equals the digest of
    the whole history however the events arrived in batches.
    """

    subject_id: np.ndarray
    hidden: np.ndarray
    last_visit: np.ndarray
    birth: np.ndarray
    traits: np.ndarray
    last_value: np.ndarray
    last_value_time: np.ndarray
    as_of: np.ndarray
    n_events: np.ndarray
    n_care: np.ndarray
    digest: np.ndarray

    def __len__(self) -> int:
        return int(self.subject_id.size)

    @classmethod
    def empty(cls, model) -> TwinState:
        net, f = model.net_, model.featurizer_
        k = len(f.last_value_codes_)
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, net.gru.num_layers, net.d_model), np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, f.n_static_ - 2), np.float32),
            np.zeros((0, k), np.float32),
            np.zeros((0, k), np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.uint64),
        )

    def take(self, rows) -> TwinState:
        return TwinState(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @classmethod
    def concat(cls, parts) -> TwinState:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def sorted(self) -> TwinState:
        return self.take(np.argsort(self.subject_id, kind="stable"))

    def check_fits(self, model, where="twin state") -> None:
        """The shapes this model's state has (a state of another architecture is refused)."""
        want = TwinState.empty(model)
        for f in fields(self):
            got, exp = getattr(self, f.name), getattr(want, f.name)
            if got.shape[1:] != exp.shape[1:] or got.dtype != exp.dtype:
                raise ConfigError(
                    f"{where}: field {f.name!r} has shape {got.shape[1:]} {got.dtype}, but this "
                    f"model's state has {exp.shape[1:]} {exp.dtype}: the state is from another model."
                )


def model_digest(model) -> str:
    """SHA-256 of the network's parameters, the calibrator and the vocabulary: a state made by one
    model cannot be advanced by another, whatever the URI it was loaded from."""
    h = hashlib.sha256()
    for name, t in sorted(model.net_.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    h.update(np.asarray(model.featurizer_.vocabulary_).astype(str).tobytes())
    cal = getattr(model, "calibrator_", None)
    if cal is not None:
        h.update(repr(sorted((k, repr(v)) for k, v in vars(cal).items())).encode())
    return h.hexdigest()


def _us(t) -> int:
    """A date or timestamp as integer µs since the epoch (naive UTC)."""
    return int(np.datetime64(pd.Timestamp(t).as_unit("us"), "us").astype(np.int64))


def check_record_model(model, what="twin state"):
    from ._record_model import RecordRiskModel

    if not isinstance(model, RecordRiskModel):
        raise ConfigError(
            f"{what}: needs a whole-record model (model.kind: record); this model is "
            f"{type(model).__name__}, which keeps no state to continue from."
        )


def events_digest(events: pd.DataFrame) -> str:
    """An order-free digest of a batch of events (the sum of their hashes mod 2**64), hex."""
    return f"{int(event_hashes(events).sum(dtype=np.uint64)) if len(events) else 0:016x}"


def event_hashes(events: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each event's (subject_id, time, code, numeric_value)."""
    frame = pd.DataFrame(
        {
            "subject_id": events["subject_id"].to_numpy(np.int64),
            "time": events["time"].astype("datetime64[us]"),
            "code": events["code"].astype(str).to_numpy(),
            "numeric_value": events["numeric_value"].to_numpy(np.float64),
        }
    )
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64)


def advance(model, state: TwinState, events: pd.DataFrame, as_of, *, batch_size: int = 256):
    """Continue ``state`` over ``events`` (MEDS rows, sorted by subject then time) up to ``as_of``.

    Events after ``as_of`` are not read (a later call can absorb them: they are after every visit
    the state then holds). Subjects not in ``state`` start from the empty record. Returns
    ``(new_state, touched)``: the whole state (untouched subjects as they were, rows sorted by
    subject) and a frame of the subjects with events at or before ``as_of``, with ``status`` ``""``
    (advanced) or one of :data:`LATE_EVENT`, :data:`EARLIER_AS_OF`, :data:`STATIC_AGAIN`
    (refused: state unchanged).
    """
    check_record_model(model, "advance")
    state.check_fits(model)
    as_of_us = _us(as_of)
    ev_all = EventArrays(events)  # checks the layout: whole subjects, time non-decreasing
    keep = (ev_all.time == NAT) | (ev_all.time <= as_of_us)
    if keep.all():
        ev = ev_all
    else:
        events = events.iloc[np.flatnonzero(keep)]
        ev = EventArrays(events)
    subjects, rank = ev.subjects, ev.subject
    pos = np.searchsorted(state.subject_id, subjects)
    known = pos < len(state)
    known[known] = state.subject_id[pos[known]] == subjects[known]
    p = np.where(known, pos, 0)

    def stored(field, fill):  # each touched subject's stored value (``fill`` for subjects new to the state)
        return np.where(known, getattr(state, field)[p], fill) if len(state) else np.full(subjects.size, fill)

    last = stored("last_visit", NAT)
    is_birth = ev.codes_matching(codes=[BIRTH])
    late_ev = (ev.time != NAT) & (last[rank] != NAT) & (ev.time <= last[rank])
    # a birth after the state was made would change the age of visits it already summarises
    late_ev |= is_birth & known[rank] & ((last[rank] != NAT) | (stored("birth", NAT)[rank] != NAT))
    status = np.full(subjects.size, "", dtype=object)
    late = np.zeros(subjects.size, bool)
    late[rank[late_ev]] = True
    status[late] = LATE_EVENT
    static_again = np.zeros(subjects.size, bool)
    static_again[rank[(ev.time == NAT) & known[rank]]] = True
    status[static_again & ~late] = STATIC_AGAIN
    status[known & ~late & ~static_again & (stored("as_of", 0) > as_of_us)] = EARLIER_AS_OF
    ok = status == ""
    touched = pd.DataFrame({"subject_id": subjects, "status": status})
    if not ok.any():
        return state, touched

    acc_events = events.iloc[np.flatnonzero(ok[rank])]
    acc = subjects[ok]
    # each accepted subject's stored state; the empty record's for subjects new to the state
    prior = _blank(model, acc.size)
    if len(state):
        kn, rows = known[ok], p[ok]
        for f in fields(TwinState):
            getattr(prior, f.name)[kn] = getattr(state, f.name)[rows[kn]]
    fresh = _absorb(model, acc_events, acc, prior, as_of_us, batch_size)
    untouched = np.ones(len(state), bool)
    untouched[p[ok & known]] = False
    return TwinState.concat([state.take(np.flatnonzero(untouched)), fresh]).sorted(), touched


def _blank(model, n) -> TwinState:
    """``n`` rows of the empty record: zero state, no visit, birth or readings."""
    e = TwinState.empty(model)
    shape = lambda a: (n,) + a.shape[1:]  # noqa: E731
    fill = {"last_visit": NAT, "birth": NAT, "last_value_time": NAT}
    return TwinState(
        **{
            f.name: np.full(shape(getattr(e, f.name)), fill.get(f.name, 0), getattr(e, f.name).dtype)
            for f in fields(TwinState)
        }
    )


def _absorb(model, events, subjects, prior, as_of_us, batch_size) -> TwinState:
    """The new state of ``subjects`` (each has events in ``events``, none at or before its state's
    last visit) from their stored ``prior``: their new visits featurized as a full pass would, the
    GRU resumed from the stored state, readings and traits merged, counts and digests summed."""
    f = model.featurizer_
    index = pd.DataFrame(
        {"subject_id": subjects, "prediction_time": np.full(subjects.size, np.datetime64(as_of_us, "us"))}
    )
    data = f.transform(events, index)
    n = subjects.size
    # the birth the whole record holds: the stored one once the state has a visit or a birth
    settled = (prior.last_visit != NAT) | (prior.birth != NAT)
    ev = EventArrays(events)
    birth = np.where(settled, prior.birth, _first_birth(ev, n))
    # visit features as the full pass computes them: the first new visit's gap is since the state's
    # last visit, and age counts from that birth
    has_row = data.row_subject >= 0
    sv = np.where(has_row[:, None], data.subject_visits[np.maximum(data.row_subject, 0)], 0)
    n_vis = sv[:, 1] - sv[:, 0]
    feats = data.visit_features.copy()
    v_idx = ragged_arange(sv[:, 0], n_vis)
    v_time = data.visit_time[v_idx]
    b = birth[np.repeat(np.arange(n), n_vis)]
    feats[v_idx, 2] = np.where(b != NAT, (v_time - np.where(b != NAT, b, v_time)) / _YEAR_US / 100.0, 0.0).astype(
        np.float32
    )
    firsts = sv[n_vis > 0, 0]
    prev = prior.last_visit[n_vis > 0]
    gap_days = np.where(prev != NAT, (data.visit_time[firsts] - np.where(prev != NAT, prev, 0)) / _DAY_US, 0.0)
    feats[firsts, 0] = (np.log1p(np.maximum(gap_days, 0.0)) / 5.0).astype(np.float32)
    data.visit_features = feats

    hidden = _resume_gru(model, data, prior.hidden, n_vis, batch_size)
    val, vtime = last_readings(data, f.last_value_codes_)
    seen = vtime != NAT
    digest = np.zeros(n, np.uint64)
    np.add.at(digest, ev.subject, event_hashes(events))
    care = (ev.time != NAT) & ~ev.codes_matching(codes=[BIRTH])
    last_new = data.visit_time[np.maximum(sv[:, 1] - 1, 0)] if data.visit_time.size else np.full(n, NAT)
    return TwinState(
        subject_id=subjects.astype(np.int64),
        hidden=hidden,
        last_visit=np.where(n_vis > 0, last_new, prior.last_visit).astype(np.int64),
        birth=birth.astype(np.int64),
        traits=(prior.traits + data.static[:, 2:]).astype(np.float32),
        last_value=np.where(seen, val, prior.last_value),
        last_value_time=np.where(seen, vtime, prior.last_value_time),
        as_of=np.full(n, as_of_us, np.int64),
        n_events=prior.n_events + np.bincount(ev.subject, minlength=n),
        n_care=prior.n_care + np.bincount(ev.subject[care], minlength=n),
        digest=prior.digest + digest,
    )


def _resume_gru(model, data, hidden, n_vis, batch_size) -> np.ndarray:
    """The GRU's state of each subject after its new visits (``n_vis`` of them), resumed from ``hidden``;
    subjects batched by their number of new visits."""
    hidden = hidden.copy()
    rows = np.flatnonzero(n_vis > 0)
    rows = rows[np.argsort(n_vis[rows], kind="stable")]
    net = model.net_
    net.eval()
    from ._sequence_model import _torch_threads

    with _torch_threads(model.n_threads), torch.inference_mode():
        for lo in range(0, rows.size, batch_size):
            r = rows[lo : lo + batch_size]
            batch = data.batch(r)
            uniq, inv = np.unique(data.row_subject[r], return_inverse=True)  # batch() orders subjects by rank
            order = np.empty(uniq.size, np.int64)
            order[inv] = r
            inputs = {
                k: torch.from_numpy(np.ascontiguousarray(batch[k]))
                for k in ("event_code", "event_value", "event_offsets", "visit_slot", "visit_features")
            }
            h0 = torch.from_numpy(np.ascontiguousarray(hidden[order].transpose(1, 0, 2)))
            h = net.advance(
                h0,
                **inputs,
                n_subjects=int(batch["n_subjects"]),
                width=int(batch["width"]),
                n_visits=torch.from_numpy(n_vis[order]),
            )
            hidden[order] = h.numpy().transpose(1, 0, 2)

    return hidden


def _first_birth(ev: EventArrays, n) -> np.ndarray:
    birth = np.full(n, NAT, np.int64)
    is_birth = ev.codes_matching(codes=[BIRTH])
    birth[ev.subject[is_birth][::-1]] = ev.time[is_birth][::-1]  # the first birth row wins, as for age
    return birth


def state_readout(model, state: TwinState, as_of_us: int):
    """The readout inputs of each state row at ``as_of_us`` (what :class:`RecordData`.batch gives a
    prediction row at that time): top-layer state, time since the last visit and last readings, static."""
    has = state.last_visit != NAT
    days = np.where(has, (as_of_us - state.last_visit) / _DAY_US, 0.0)
    gap = np.stack([np.log1p(np.maximum(days, 0.0)) / 5.0, (~has).astype(np.float64)], axis=1)
    if state.last_value.shape[1]:
        gap = np.concatenate([gap, last_value_features(state.last_value, state.last_value_time, as_of_us)], axis=1)
    static = np.zeros((len(state), state.traits.shape[1] + 2), np.float32)
    hb = state.birth != NAT
    static[:, 0] = np.where(hb, ((as_of_us - np.where(hb, state.birth, as_of_us)) / _YEAR_US).astype(np.float32), 0.0)
    static[:, 1] = np.where(hb, 0.0, 1.0)
    static[:, 2:] = state.traits
    static[:, 0] /= 100.0
    h = np.where(has[:, None], state.hidden[:, -1, :], 0.0).astype(np.float32)
    return h, gap.astype(np.float32), static


def state_risks(model, state: TwinState, as_of, *, calibrated: bool = True) -> pd.DataFrame:
    """Risk per label column of each state row at ``as_of`` (at or after each row's ``as_of``), as
    :meth:`RecordRiskModel.predict_risk` would give from the whole history."""
    from ._sequence_model import _torch_threads

    check_record_model(model, "state_risks")
    as_of_us = _us(as_of)
    if len(state) and (state.as_of > as_of_us).any():
        raise ConfigError(
            f"state_risks: as-of {pd.Timestamp(as_of_us, unit='us')} is before the state's "
            f"({pd.Timestamp(int(state.as_of.max()), unit='us')}): a state cannot be read in its past."
        )
    h, gap, static = state_readout(model, state, as_of_us)
    net = model.net_.eval()
    with _torch_threads(model.n_threads), torch.inference_mode():
        logits = net.head(net.read_out(torch.from_numpy(h), torch.from_numpy(gap), torch.from_numpy(static)))
        curve = calibrated_curve(logits, model.calibrator_, calibrated)
    index = pd.DataFrame(
        {"subject_id": state.subject_id, "prediction_time": np.full(len(state), np.datetime64(as_of_us, "us"))}
    )
    return curve_frame(index, curve, model.outcomes_, model.horizons_, model.label_columns_)
