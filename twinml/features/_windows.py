"""Windowed aggregates per (prediction row, code), vectorised over every subject at once.

Events are put in (subject, code, time) order once, so each (subject, code) pair is a
contiguous *segment* sorted by time. A prediction row meets the segments of its subject;
for each such pair the events inside ``(t - w, t]`` are a contiguous range ``[lo, hi)``
found by binary search on sorted keys. Counts and means come from prefix sums, minima and
maxima from a sparse table, the last value from ``hi - 1``. Nothing loops over subjects.
"""

from __future__ import annotations

import numpy as np

from .._arrays import Segments, ragged_arange, segment_bounds

__all__ = ["RangeMinMax", "pairs_for_queries"]


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
            np.minimum(self.mins[k - 1, : n - half], self.mins[k - 1, half:], out=self.mins[k, : n - half])
            np.maximum(self.maxs[k - 1, : n - half], self.maxs[k - 1, half:], out=self.maxs[k, : n - half])

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
