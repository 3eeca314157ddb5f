"""Whole-record features: every event of a subject, grouped into visits, read out at each prediction time.

A visit is the set of a subject's events that share one timestamp, so a prediction time falls
between visits, never inside one: the row's readout is the last visit at or before its
prediction time (the leakage rule), and a causal encoder run once over a subject's visits serves
every prediction row of that subject. Visits after a subject's last prediction time are dropped
(no row can read them). Arrays are sorted by (subject, time) with offsets; batches of subjects
are gathered on demand, vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._arrays import NAT, ragged_arange, segment_bounds
from ._sequence import SequenceData, SequenceFeaturizer

__all__ = ["RecordFeaturizer", "RecordData", "last_readings", "last_value_features"]

_DAY_US = 86_400 * 1_000_000
_YEAR_US = 365.25 * _DAY_US


@dataclass(kw_only=True)
class RecordData(SequenceData):
    """:class:`SequenceData` (each row's slice ``[lo, hi)`` is its whole history) plus visits.

    ``visit_start`` indexes the event arrays (a visit's events are ``visit_start[v]:visit_start[v + 1]``);
    ``subject_visits`` gives each subject's visits ``[start, end)`` (only those some row reads);
    ``row_subject`` is each row's subject rank (-1: no events) and ``readout`` its last visit at or
    before the prediction time (-1: none).
    """

    visit_start: np.ndarray  # int64 (n_visits + 1,)
    visit_time: np.ndarray  # int64 µs
    visit_features: np.ndarray  # float32 (n_visits, 3): log gap days, log events, age / 100
    subject_visits: np.ndarray  # int64 (n_subjects, 2)
    row_subject: np.ndarray
    readout: np.ndarray
    last_values: np.ndarray | None = None  # float32 (n_rows, 3 * n codes): value, seen, log days since

    def subjects_of(self, rows) -> np.ndarray:
        return np.unique(self.row_subject[np.asarray(rows)])

    def batch(self, rows) -> dict[str, np.ndarray]:
        """Net inputs for ``rows``: the flat events of every visit of their subjects (``event_code``,
        ``event_value``, ``event_offsets`` each visit's first event), visit features, the padded layout
        ``(n_subjects, width)`` and each row's readout slot (-1: before any visit) and traits."""
        rows = np.asarray(rows)
        subj = self.row_subject[rows]
        uniq, pos = np.unique(subj, return_inverse=True)
        has = uniq >= 0
        sv = np.where(has[:, None], self.subject_visits[np.maximum(uniq, 0)], 0)
        n_vis = sv[:, 1] - sv[:, 0]
        width = max(int(n_vis.max(initial=0)), 1)
        visits = ragged_arange(sv[:, 0], n_vis)
        slot = np.repeat(np.arange(uniq.size) * width, n_vis) + ragged_arange(np.zeros(uniq.size, np.int64), n_vis)
        n_ev = self.visit_start[visits + 1] - self.visit_start[visits]
        events = ragged_arange(self.visit_start[visits], n_ev)
        local = self.readout[rows] - sv[pos, 0]
        readout = np.where(self.readout[rows] >= 0, pos * width + local, -1)
        # (no visit at all in the data: every row reads the initial state)
        read_at = (
            self.visit_time[np.maximum(self.readout[rows], 0)] if self.visit_time.size else self.prediction_time[rows]
        )
        days = np.where(self.readout[rows] >= 0, (self.prediction_time[rows] - read_at) / _DAY_US, 0.0)
        gap = np.stack([np.log1p(np.maximum(days, 0.0)) / 5.0, (self.readout[rows] < 0).astype(np.float64)], axis=1)
        if self.last_values is not None and self.last_values.shape[1]:
            gap = np.concatenate([gap, self.last_values[rows]], axis=1)
        return {
            "event_code": self.code[events].astype(np.int64),
            "event_value": self.value[events] * self.has_value[events],
            "event_offsets": (np.cumsum(n_ev) - n_ev).astype(np.int64),
            "visit_slot": slot,
            "visit_features": self.visit_features[visits],
            "n_subjects": np.int64(uniq.size),
            "width": np.int64(width),
            "readout": readout,
            "readout_features": gap.astype(np.float32),
            "static": self.static[rows],
        }


class RecordFeaturizer(SequenceFeaturizer):
    """Each subject's whole record as visits (events sharing a timestamp), with the vocabulary and
    value scaling of :class:`SequenceFeaturizer` (fitted the same way, on training events).

    Parameters
    ----------
    min_code_count : int
        Codes seen fewer times in the training events map to the unknown id.
    value_clip : float
        Normalised values are clipped to ``[-value_clip, value_clip]``.
    n_last_values : int
        For this many numeric codes (the most frequent in training), each row also carries the code's
        last normalised reading at or before the prediction time, whether there is one, and the log
        days since it (``last_values``, read out beside the recurrent state). 0: none.
    min_text_subjects : int
        As for :class:`SequenceFeaturizer`: text answers of at least this many training subjects are codes.
    """

    max_len = 1  # not a parameter: the whole record is kept (SequenceFeaturizer.fit checks this field)

    def __init__(self, min_code_count=10, value_clip=5.0, n_last_values=0, min_text_subjects=0):
        self.min_code_count = min_code_count
        self.value_clip = value_clip
        self.n_last_values = n_last_values
        self.min_text_subjects = min_text_subjects

    def fit(self, events: pd.DataFrame, y=None):
        super().fit(events, y)
        n = self.n_last_values
        self.last_value_codes_ = self.forecast_codes(n) if n else np.empty(0, np.int32)
        return self

    @staticmethod
    def _last_values(base, codes) -> np.ndarray:
        """Per row and code: the last reading in the row's ``[lo, hi)`` (value, 1, log1p(days since) / 5),
        zeros where there is none."""
        return last_value_features(*last_readings(base, codes), base.prediction_time)

    def transform(self, events: pd.DataFrame, index: pd.DataFrame) -> RecordData:
        base, extra = self._encode(events, index)
        subject, n_subj = extra["subject"], extra["n_subjects"]
        t = base.time
        new = np.r_[True, (subject[1:] != subject[:-1]) | (t[1:] != t[:-1])] if t.size else np.zeros(0, bool)
        visit_start = np.flatnonzero(new)
        visit_of = np.cumsum(new) - 1
        v_subj, v_time = subject[visit_start], t[visit_start]
        n_ev = np.diff(np.r_[visit_start, t.size])
        # the readout: the visit of the row's last event at or before t (-1: none, or no events at all)
        q_rank = extra["q_rank"]
        readout = np.where(
            (q_rank >= 0) & (base.hi > base.lo), visit_of[np.maximum(base.hi - 1, 0)] if t.size else -1, -1
        )
        first, _ = segment_bounds(v_subj, n_subj)
        last = np.full(n_subj, -1, np.int64)  # each subject's last visit any row reads
        np.maximum.at(last, q_rank[readout >= 0], readout[readout >= 0])
        subject_visits = np.stack([first, np.where(last >= 0, last + 1, first)], axis=1).astype(np.int64)
        prev = np.r_[NAT, v_time[:-1]]
        gap_days = np.where((np.r_[True, v_subj[1:] != v_subj[:-1]]) | (prev == NAT), 0.0, (v_time - prev) / _DAY_US)
        birth = extra["birth"][v_subj] if v_subj.size else np.zeros(0, np.int64)
        age = np.where(birth != NAT, (v_time - birth) / _YEAR_US / 100.0, 0.0)
        feats = np.stack([np.log1p(np.maximum(gap_days, 0.0)) / 5.0, np.log1p(n_ev) / 3.0, age], axis=1)
        row_subject = np.where(q_rank >= 0, q_rank, -1)
        return RecordData(
            **{f: getattr(base, f) for f in SequenceData.__dataclass_fields__},
            visit_start=np.r_[visit_start, t.size].astype(np.int64),
            visit_time=v_time,
            visit_features=feats.astype(np.float32),
            subject_visits=subject_visits,
            row_subject=row_subject.astype(np.int64),
            readout=readout.astype(np.int64),
            last_values=self._last_values(base, getattr(self, "last_value_codes_", np.empty(0, np.int32))),
        )


def last_readings(data, codes) -> tuple[np.ndarray, np.ndarray]:
    """Per row and code, the last normalised reading in the row's ``[lo, hi)`` and its time in µs
    (``NAT``: none). One searchsorted per code over all rows."""
    val = np.zeros((data.lo.size, codes.size), np.float32)
    vtime = np.full((data.lo.size, codes.size), NAT, np.int64)
    for k, c in enumerate(codes):
        at = np.flatnonzero((data.code == c) & (data.has_value > 0))
        i = np.searchsorted(at, data.hi) - 1
        ok = (i >= 0) & (data.hi > data.lo)
        ok[ok] = at[i[ok]] >= data.lo[ok]
        q = at[i[ok]]
        val[ok, k] = data.value[q]
        vtime[ok, k] = data.time[q]
    return val, vtime


def last_value_features(val, vtime, prediction_time) -> np.ndarray:
    """The readout of :func:`last_readings` at each row's prediction time: per code the value, whether
    there is one, and log1p(days since) / 5 (zeros where there is none); float32 (n_rows, 3 * codes)."""
    seen = vtime != NAT
    out = np.zeros((val.shape[0], 3 * val.shape[1]), np.float32)
    out[:, 0::3] = np.where(seen, val, 0.0)
    out[:, 1::3] = seen
    pt = np.broadcast_to(np.asarray(prediction_time, np.int64).reshape(-1, 1), vtime.shape)
    days = np.maximum((pt - np.where(seen, vtime, pt)) / _DAY_US, 0.0)
    out[:, 2::3] = np.where(seen, np.log1p(days) / 5.0, 0.0)
    return out
