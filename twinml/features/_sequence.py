"""Sequence features: the last ``max_len`` events at or before each prediction time.

For every prediction row only events with ``time <= prediction_time`` enter (the leakage
rule); the row keeps offsets ``[lo, hi)`` into one event array, and padded batches are
gathered on demand, vectorised, so memory stays flat whatever the number of rows.
Code ids: 0 = padding, 1 = a code not in the training vocabulary, 2.. = vocabulary.

The end-of-observation marker (:data:`END_OF_RECORD`) is not an input: it marks where the data
stop, not something that happened to the patient. No training row sees one (a row after the
end of observation has no labels), so a score at or after it would read an event the network never
learned; leaving it out makes such a score the score of the same record at that time without the
marker (ages and times before the prediction still count from the prediction time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._arrays import NAT, EventArrays, events_upto
from .._validation import NON_NEGATIVE_INT, POSITIVE_INT, check_params
from ._common import fit_code_stats, prediction_queries, static_entries
from ._text import fit_text_codes, with_text_codes

__all__ = ["SequenceFeaturizer", "SequenceData", "END_OF_RECORD"]

END_OF_RECORD = ("OBSERVATION_PERIOD//END",)  # as the simulator and the OMOP ingest write it

_DAY_US = 86_400 * 1_000_000
PAD, UNKNOWN = 0, 1


@dataclass
class SequenceData:
    """Event arrays plus, per prediction row, the slice of its events and its static vector."""

    code: np.ndarray  # int32 (n_events,)
    value: np.ndarray  # float32 normalised value, 0 where none
    has_value: np.ndarray  # float32 0/1
    time: np.ndarray  # int64 microseconds
    lo: np.ndarray  # int64 (n_rows,) first event of each row's window
    hi: np.ndarray  # one past the last event at or before the prediction time
    prediction_time: np.ndarray  # int64 microseconds
    static: np.ndarray  # float32 (n_rows, n_static)
    end: np.ndarray | None = None  # one past the subject's last event (future readings: training targets only)

    def __len__(self) -> int:
        return self.lo.size

    @property
    def lengths(self) -> np.ndarray:
        return self.hi - self.lo

    def batch(self, rows) -> dict[str, np.ndarray]:
        """Right-padded arrays for ``rows``; the last real event of row i sits at ``lengths[i] - 1``."""
        rows = np.asarray(rows)
        length = self.lengths[rows]
        width = max(int(length.max(initial=0)), 1)
        pos = np.arange(width)
        valid = pos[None, :] < length[:, None]
        if self.code.size:
            idx = np.where(valid, self.lo[rows, None] + pos[None, :], 0)
            code, value, has, t = self.code[idx], self.value[idx], self.has_value[idx], self.time[idx]
        else:  # no events at all: every slot is padding
            code = value = has = t = np.zeros(valid.shape, np.int64)
        code = np.where(valid, code, PAD).astype(np.int64)
        value = np.where(valid, value, 0).astype(np.float32)
        has = np.where(valid, has, 0).astype(np.float32)
        days = np.where(valid, (self.prediction_time[rows, None] - t) / _DAY_US, 0.0)
        return {
            "code": code,
            "value": value,
            "has_value": has,
            "log_days": np.log1p(np.maximum(days, 0.0)).astype(np.float32),
            "mask": valid,
            "length": np.maximum(length, 1),
            "static": self.static[rows],
        }


class SequenceFeaturizer(TransformerMixin, BaseEstimator):
    """Last-N event sequences before each prediction time, with train-fitted vocabulary and value scaling.

    Parameters
    ----------
    max_len : int
        Events kept per row (the most recent ones).
    min_code_count : int
        Codes seen fewer times in the training events map to the unknown id.
    value_clip : float
        Normalised values are clipped to ``[-value_clip, value_clip]``.
    min_text_subjects : int
        A text answer recorded for at least this many distinct training subjects is an event code of
        its own, ``code//text`` (:func:`~twinml.features.with_text_codes`); 0: text is ignored.
    """

    min_text_subjects = 0  # featurizers pickled before this parameter: no text codes

    def __init__(self, max_len=256, min_code_count=10, value_clip=5.0, min_text_subjects=0):
        self.max_len = max_len
        self.min_code_count = min_code_count
        self.value_clip = value_clip
        self.min_text_subjects = min_text_subjects

    def fit(self, events: pd.DataFrame, y=None):
        check_params(self, {"max_len": POSITIVE_INT, "min_text_subjects": NON_NEGATIVE_INT})
        self.text_codes_ = fit_text_codes(events, min_subjects=self.min_text_subjects)
        stats = fit_code_stats(
            EventArrays(with_text_codes(events, self.text_codes_)), min_code_count=self.min_code_count
        )
        self.vocabulary_, self.numeric_ = stats.vocabulary, stats.numeric
        self.value_mean_, self.value_std_ = stats.value_mean, stats.value_std
        self.static_vocabulary_, self.static_numeric_ = stats.static_vocabulary, stats.static_numeric
        self.code_count_ = stats.count
        self.n_codes_ = self.vocabulary_.size + 2
        self.n_static_ = self.static_vocabulary_.size + 2
        return self

    def transform(self, events: pd.DataFrame, index: pd.DataFrame) -> SequenceData:
        data, _ = self._encode(events, index)
        data.lo = np.maximum(data.lo, data.hi - self.max_len)  # the last ``max_len`` events at or before t
        return data

    def _encode(self, events, index) -> tuple[SequenceData, dict]:
        """Every dynamic event (vocabulary ids, normalised values) with each row's whole-history slice
        ``[subject start, hi)``, plus what a whole-record encoder also needs (subject ranks, birth times)."""
        check_is_fitted(self, "vocabulary_")
        events = with_text_codes(events, getattr(self, "text_codes_", ()))  # none in older pickles
        ev = EventArrays(events).order_ties()  # simultaneous events in one order, whatever the storage
        q_rank, q_time = prediction_queries(ev, index)
        rows, cols, vals = static_entries(
            ev, q_rank, q_time, static_vocabulary=self.static_vocabulary_, static_numeric=self.static_numeric_
        )
        static = (
            sp.coo_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(len(index), self.n_static_)
            )
            .toarray()
            .astype(np.float32)
        )
        static[:, 0] /= 100.0  # age in centuries keeps inputs near unit scale
        dyn = np.flatnonzero((ev.time != NAT) & ~ev.codes_matching(codes=END_OF_RECORD))
        lookup = pd.Index(self.vocabulary_).get_indexer(ev.vocab.astype(str))
        vc = lookup[ev.code[dyn]]
        code = np.where(vc >= 0, vc + 2, UNKNOWN).astype(np.int32)
        raw = ev.value[dyn]
        has = ~np.isnan(raw) & (vc >= 0)
        safe = np.maximum(vc, 0)
        z = (raw - self.value_mean_[safe]) / self.value_std_[safe]
        value = np.where(has, np.clip(z, -self.value_clip, self.value_clip), 0.0).astype(np.float32)
        start, hi, end = events_upto(ev.subject[dyn], ev.time[dyn], q_rank, q_time)
        birth = np.full(ev.subjects.size, NAT, np.int64)
        is_birth = ev.codes_matching(codes=["MEDS_BIRTH"])
        birth[ev.subject[is_birth][::-1]] = ev.time[is_birth][::-1]  # the first birth row wins, as for age
        extra = {"subject": ev.subject[dyn], "n_subjects": ev.subjects.size, "birth": birth, "q_rank": q_rank}
        return SequenceData(code, value, has.astype(np.float32), ev.time[dyn], start, hi, q_time, static, end), extra

    def forecast_codes(self, max_codes: int = 32) -> np.ndarray:
        """Ids of the numeric codes whose next reading :meth:`future_readings` returns: the
        ``max_codes`` most frequent in training, in vocabulary order."""
        check_is_fitted(self, "vocabulary_")
        numeric = np.flatnonzero(self.numeric_)
        top = numeric[np.argsort(-self.code_count_[numeric], kind="stable")[:max_codes]]
        return (np.sort(top) + 2).astype(np.int32)

    @staticmethod
    def future_readings(data: SequenceData, codes: np.ndarray, horizon_days: float = 365.0):
        """Training targets from *after* each prediction time: per row and code, the normalised value
        of the code's first reading in ``(prediction_time, prediction_time + horizon_days]``.

        Returns ``(values, observed)``, both float32 (n_rows, len(codes)); ``observed`` is 0 where
        no such reading exists (value 0 there). For an auxiliary loss only; never a model input.
        """
        if data.end is None:
            raise ValueError("future_readings needs SequenceData built by SequenceFeaturizer.transform")
        n = len(data)
        values = np.zeros((n, codes.size), np.float32)
        observed = np.zeros((n, codes.size), np.float32)
        limit = data.prediction_time + np.int64(horizon_days * _DAY_US)
        for j, c in enumerate(codes):  # a loop over codes; every step is vectorised over rows
            pos = np.flatnonzero((data.code == c) & (data.has_value > 0))
            if pos.size == 0:
                continue
            k = np.searchsorted(pos, data.hi)  # the first reading at or after each row's next event
            nxt = pos[np.minimum(k, pos.size - 1)]
            ok = (k < pos.size) & (nxt < data.end) & (data.time[nxt] <= limit)
            values[ok, j], observed[ok, j] = data.value[nxt[ok]], 1.0
        return values, observed
