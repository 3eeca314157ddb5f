"""Vectorised helpers over sorted arrays and offsets (no Python loop per subject)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._validation import MEDSValidationError

NAT = np.iinfo(np.int64).min


class EventArrays:
    """Numpy views of a MEDS events frame, sorted by subject then time.

    Attributes
    ----------
    subject_id : int64 array
    subject : int64 array
        Rank of each row's subject in ``subjects`` (0..n_subjects-1), non-decreasing.
    subjects : int64 array
        Subject ids in the order they appear (each subject's rows are contiguous).
    time : int64 array
        Microseconds since the epoch; ``NAT`` for static rows.
    code : int32 array
        Index into ``vocab`` (the frame's categories).
    vocab : object array of str
    value : float32 array (NaN where no numeric value)
    """

    def __init__(self, events: pd.DataFrame):
        self.subject_id = events["subject_id"].to_numpy(np.int64)
        new = np.r_[True, self.subject_id[1:] != self.subject_id[:-1]] if len(events) else np.zeros(0, bool)
        self.subject = np.cumsum(new) - 1
        self.subjects = self.subject_id[new]
        t = events["time"]
        self.time = np.where(t.isna().to_numpy(), NAT, t.to_numpy("datetime64[us]").astype(np.int64))
        _check_layout(self.subjects, self.subject, self.time)
        code = events["code"]
        if not isinstance(code.dtype, pd.CategoricalDtype):
            code = code.astype("category")
        self.code = code.cat.codes.to_numpy().astype(np.int32)
        self.vocab = np.asarray(code.cat.categories, dtype=object)
        self.value = (
            events["numeric_value"].to_numpy(np.float32, na_value=np.nan)
            if "numeric_value" in events
            else np.full(len(events), np.nan, np.float32)
        )

    def __len__(self):
        return self.subject_id.size

    def order_ties(self) -> EventArrays:
        """Put events that share a subject and a time in (code text, value) order, in place.

        Storage order of simultaneous events is arbitrary (a Spark shuffle or another ETL may
        change it); a sequence model must see one order, so every path canonicalises here.
        Costs one O(n) check when the events are already in this order (as twinml writes them).
        """
        perm = tie_order(self.subject, self.time, self.code, self.vocab, self.value)
        if perm is not None:
            for name in ("subject_id", "subject", "time", "code", "value"):
                setattr(self, name, getattr(self, name)[perm])
        return self

    def codes_matching(self, *, codes=(), prefixes=()) -> np.ndarray:
        """Boolean mask over rows whose code is in ``codes`` or starts with one of ``prefixes``."""
        vocab = self.vocab.astype(str)
        hit = np.isin(vocab, list(codes))
        for p in prefixes:
            hit |= np.char.startswith(vocab, p)
        return hit[self.code]


def tie_keys(code, vocab, value) -> tuple[np.ndarray, np.ndarray]:
    """Sort keys of the canonical order among simultaneous events: (value with NaN last, code text rank)."""
    rank = np.empty(len(vocab), np.int64)
    rank[np.argsort(np.asarray(vocab, dtype=object).astype(str), kind="stable")] = np.arange(len(vocab))
    r = rank[code] if len(vocab) else np.zeros(np.shape(code), np.int64)
    return np.where(np.isnan(value), np.inf, value), r  # NaN after every number, as np.lexsort puts it


def tie_order(subject, time, code, vocab, value) -> np.ndarray | None:
    """Permutation sorting rows by (subject, time, code text, value; NaN last); None if already sorted.

    ``subject`` and ``time`` must already be in order (contiguous subjects, non-decreasing time).
    """
    if subject.size < 2:
        return None
    v, r = tie_keys(code, vocab, value)
    same = (subject[1:] == subject[:-1]) & (time[1:] == time[:-1])
    bad = same & ((r[1:] < r[:-1]) | ((r[1:] == r[:-1]) & (v[1:] < v[:-1])))
    if not bad.any():
        return None
    return np.lexsort((v, r, time, subject))


def _check_layout(subjects, subject, time):
    if np.unique(subjects).size != subjects.size:
        _, first = np.unique(subjects, return_index=True)
        dup = subjects[np.setdiff1d(np.arange(subjects.size), first)[0]]
        raise MEDSValidationError(
            f"events: column 'subject_id' must keep each subject's rows together "
            f"(example: subject_id={dup}). Sort by subject_id, then time."
        )
    back = np.flatnonzero((subject[1:] == subject[:-1]) & (time[1:] < time[:-1]))
    if back.size:
        raise MEDSValidationError(
            f"events: column 'time' must not decrease within a subject "
            f"(example: subject_id={subjects[subject[back[0]]]}). Sort by subject_id, then time."
        )


def segment_bounds(seg_sorted: np.ndarray, n_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of each segment id 0..n_segments-1 in a sorted id array."""
    ids = np.arange(n_segments)
    return np.searchsorted(seg_sorted, ids, "left"), np.searchsorted(seg_sorted, ids, "right")


def ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + c)`` for each pair, vectorised."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.int64)
    offsets = np.repeat(starts.astype(np.int64) - np.cumsum(counts) + counts, counts)
    return offsets + np.arange(total, dtype=np.int64)


def per_subject_reduce(subject, values, mask, n_subjects, how):
    """min/max of ``values[mask]`` per subject rank (``NAT`` for subjects with no masked row)."""
    out = np.full(n_subjects, NAT, np.int64)
    s, v = subject[mask], values[mask]
    if s.size:
        red = pd.Series(v).groupby(s).agg(how)
        out[red.index.to_numpy()] = red.to_numpy()
    return out


_US = 1_000_000


@dataclass
class Segments:
    """Events in (subject, code, time) order with their segment boundaries."""

    time: np.ndarray  # int64 microseconds
    value: np.ndarray  # float32, NaN where absent
    start: np.ndarray  # first event of each segment
    end: np.ndarray  # one past the last event
    subject: np.ndarray  # subject rank of each segment
    code: np.ndarray  # vocabulary index of each segment
    key: np.ndarray  # monotone int64 key: segment * span + seconds
    t0: int  # seconds origin of the key
    span: int
    whole_seconds: bool  # every event time is a whole second
    order: np.ndarray  # positions of the input events in segment order


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
    return Segments(
        time,
        value,
        start,
        end.astype(np.int64),
        subject[start],
        code[start],
        key,
        t0,
        span,
        not (time % _US).any(),
        order,
    )


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


def events_upto(subject, time, q_rank, q_time):
    """Per query (subject rank, time), over events sorted by (subject, time) with no null time:
    the subject's first event, one past its last event with ``time <= q_time``, and one past
    its last event (all 0 for a subject without events). Exact to the microsecond.
    """
    start = np.zeros(q_rank.size, np.int64)
    pos, end = start.copy(), start.copy()
    if subject.size == 0:
        return start, pos, end
    # one segment per subject; events are already in (subject, time) order, so positions carry over
    seg = make_segments(subject, time, np.zeros(subject.size, np.int64), np.zeros(subject.size, np.float32), 1)
    seg_of = np.minimum(np.searchsorted(seg.subject, q_rank), seg.subject.size - 1)
    has = (q_rank >= 0) & (seg.subject[seg_of] == q_rank)
    order = np.lexsort((q_time, seg_of))
    q = order[has[order]]  # sorted needles keep the search fast
    pos[q] = count_upto(seg, seg_of[q], q_time[q])
    start[q], end[q] = seg.start[seg_of[q]], seg.end[seg_of[q]]
    return start, pos, end


def prior_and_next(o_subj, o_time, subj, pt):
    """Per query (subject rank, time ``pt``), over the rows of one code (or code family) sorted by
    (subject, time): whether one occurs at or before ``pt``, and the time of the first after (NAT if none).

    A code on a static row (no time) counts as prior at every query time.
    """
    timed = o_time != NAT
    start, pos, end = events_upto(o_subj[timed], o_time[timed], subj, pt)
    prior = (pos > start) | np.isin(subj, o_subj[~timed])
    t = o_time[timed]
    nxt = np.where(pos < end, t[np.minimum(pos, max(t.size - 1, 0))] if t.size else NAT, NAT)
    return prior, nxt
