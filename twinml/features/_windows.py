"""Windowed aggregates per (prediction row, code), vectorised over every subject at once.

Events are put in (subject, code, time) order once, so each (subject, code) pair is a
contiguous *segment* sorted by time. A prediction row meets the segments of its subject;
for each such pair the events inside ``(t - w, t]`` are a contiguous range ``[lo, hi)``
found by binary search on sorted keys. Counts and means come from prefix sums, minima and
maxima from a sparse table, the last value from ``hi - 1``. Nothing loops over subjects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._arrays import ragged_arange, segment_bounds

_US = 1_000_000


@dataclass
class Segments:
    """Events in (subject, code, time) order with their segment boundaries."""

    time: np.ndarray       # int64 microseconds
    value: np.ndarray      # float32, NaN where absent
    start: np.ndarray      # first event of each segment
    end: np.ndarray        # one past the last event
    subject: np.ndarray    # subject rank of each segment
    code: np.ndarray       # vocabulary index of each segment
    key: np.ndarray        # monotone int64 key: segment * span + seconds
    t0: int                # seconds origin of the key
    span: int
    whole_seconds: bool    # every event time is a whole second
    order: np.ndarray      # positions of the input events in segment order


def make_segments(subject, time, code, value, n_codes) -> Segments:
    """Group events already sorted by (subject, time) into (subject, code) segments."""
    order = np.argsort(subject * np.int64(n_codes) + code, kind="stable")
    subject, time, code, value = subject[order], time[order], code[order], value[order]
    segkey = subject * np.int64(n_codes) + code
    new = np.r_[True, segkey[1:] != segkey[:-1]] if segkey.size else np.zeros(0, bool)
    start = np.flatnonzero(new)
    end = np.r_[start[1:], segkey.size].astype(np.int64)
    seg = np.cumsum(new) - 1
    secs = time // _US
    t0 = int(secs.min()) - 1 if secs.size else 0
    span = (int(secs.max()) - t0 + 2) if secs.size else 2
    if (start.size + 1) * span >= 2**62:
        raise OverflowError(f"{start.size} segments x {span} seconds do not fit int64 keys")
    key = seg * np.int64(span) + (secs - t0)
    return Segments(time, value, start, end.astype(np.int64), subject[start], code[start], key, t0, span,
                    not (time % _US).any(), order)


def count_upto(seg: Segments, pair_seg, t_query):
    """For each (segment, time) pair, the index one past the last event with ``time <= t_query``.

    ``pair_seg`` must be non-decreasing and times non-decreasing within a segment (fast search).
    Exact to the microsecond: keys are in whole seconds, then events later in the same second
    are stepped back over.
    """
    rel = np.clip(t_query // _US - seg.t0, 0, seg.span - 1)
    pos = np.searchsorted(seg.key, pair_seg * np.int64(seg.span) + rel, side="right")
    if seg.whole_seconds and not (t_query % _US).any():
        return pos  # keys are exact when every time is a whole second
    lo = seg.start[pair_seg]
    while True:
        back = (pos > lo) & (seg.time[np.maximum(pos - 1, 0)] > t_query)
        if not back.any():
            return pos
        pos = pos - back


class RangeMinMax:
    """Sparse tables answering min and max of ``values[lo:hi]`` in O(1), ignoring NaN.

    Level ``k`` holds the min (max) of each run of ``2**k`` values; the levels are stacked in one
    2-D array (padded with the neutral value) so a query is two gathers, whatever its length.
    """

    def __init__(self, values: np.ndarray, max_len: int):
        n = values.size
        levels = max(int(max_len), 1).bit_length()
        self.mins = np.full((levels, n), np.inf, np.float32)
        self.maxs = np.full((levels, n), -np.inf, np.float32)
        self.mins[0] = np.where(np.isnan(values), np.inf, values)
        self.maxs[0] = np.where(np.isnan(values), -np.inf, values)
        for k in range(1, levels):
            half = 1 << (k - 1)
            np.minimum(self.mins[k - 1, :n - half], self.mins[k - 1, half:], out=self.mins[k, :n - half])
            np.maximum(self.maxs[k - 1, :n - half], self.maxs[k - 1, half:], out=self.maxs[k, :n - half])

    def query(self, lo, hi):
        k = np.frexp(np.maximum(hi - lo, 1).astype(np.float64))[1].astype(np.int64) - 1  # floor(log2(length))
        far = hi - (np.int64(1) << k)
        mn = np.minimum(self.mins[k, lo], self.mins[k, far])
        mx = np.maximum(self.maxs[k, lo], self.maxs[k, far])
        return mn, mx


def pairs_for_queries(seg: Segments, q_subject_sorted, n_subjects):
    """(query, segment) pairs, segment-major, queries sorted by (subject, time) within a segment."""
    q_lo, q_hi = segment_bounds(q_subject_sorted, n_subjects)
    n_q = (q_hi - q_lo)[seg.subject]
    pair_q = ragged_arange(q_lo[seg.subject], n_q)
    pair_seg = np.repeat(np.arange(seg.start.size, dtype=np.int64), n_q)
    return pair_q, pair_seg
