"""Vectorised helpers over sorted arrays and offsets (no Python loop per subject)."""

from __future__ import annotations

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
        self.value = events["numeric_value"].to_numpy(np.float32, na_value=np.nan) \
            if "numeric_value" in events else np.full(len(events), np.nan, np.float32)

    def __len__(self):
        return self.subject_id.size

    def codes_matching(self, *, codes=(), prefixes=()) -> np.ndarray:
        """Boolean mask over rows whose code is in ``codes`` or starts with one of ``prefixes``."""
        vocab = self.vocab.astype(str)
        hit = np.isin(vocab, list(codes))
        for p in prefixes:
            hit |= np.char.startswith(vocab, p)
        return hit[self.code]


def _check_layout(subjects, subject, time):
    if np.unique(subjects).size != subjects.size:
        _, first = np.unique(subjects, return_index=True)
        dup = subjects[np.setdiff1d(np.arange(subjects.size), first)[0]]
        raise MEDSValidationError(f"events: column 'subject_id' must keep each subject's rows together "
                                  f"(example: subject_id={dup}). Sort by subject_id, then time.")
    back = np.flatnonzero((subject[1:] == subject[:-1]) & (time[1:] < time[:-1]))
    if back.size:
        raise MEDSValidationError(f"events: column 'time' must not decrease within a subject "
                                  f"(example: subject_id={subjects[subject[back[0]]]}). Sort by subject_id, then time.")


def dense_keys(seg_a, t_a, seg_b, t_b):
    """Monotone int64 keys for (segment, time) pairs of two arrays, exact to the microsecond.

    Times are replaced by their dense rank among all times of both arrays, so the key
    ``segment * n_times + rank`` orders pairs exactly like (segment, time) does.
    """
    uniq, inv = np.unique(np.concatenate([t_a, t_b]), return_inverse=True)
    n = np.int64(uniq.size)
    top = max(int(seg_a.max(initial=0)), int(seg_b.max(initial=0))) + 1
    if top * int(n) >= 2**62:
        raise OverflowError(f"too many segments x distinct times ({top} x {int(n)}) for int64 keys")
    ka = seg_a.astype(np.int64) * n + inv[: t_a.size]
    kb = seg_b.astype(np.int64) * n + inv[t_a.size:]
    return ka, kb


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
