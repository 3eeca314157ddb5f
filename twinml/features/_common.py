"""What both featurizers share: code statistics fitted on training events, age and static traits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._arrays import NAT, EventArrays
from .._validation import input_error

YEAR_US = 365.25 * 86_400 * 1_000_000


@dataclass
class CodeStats:
    """Vocabulary and value statistics of dynamic codes, and the static-code vocabulary."""

    vocabulary: np.ndarray  # dynamic codes kept, sorted
    numeric: np.ndarray  # whether each carries numeric values (at least half its rows)
    value_mean: np.ndarray
    value_std: np.ndarray
    static_vocabulary: np.ndarray
    static_numeric: np.ndarray
    count: np.ndarray  # training rows of each kept dynamic code


def fit_code_stats(ev: EventArrays, *, min_code_count: int) -> CodeStats:
    """Count codes and their values in (training) events; keep codes seen at least ``min_code_count`` times."""
    n = ev.vocab.size
    dynamic = (ev.time != NAT) & ~ev.codes_matching(codes=["MEDS_BIRTH"])
    v = np.nan_to_num(ev.value[dynamic]).astype(np.float64)
    counts = np.bincount(ev.code[dynamic], minlength=n)
    with_value = np.bincount(ev.code[dynamic & ~np.isnan(ev.value)], minlength=n)
    sums = np.bincount(ev.code[dynamic], weights=v, minlength=n)
    squares = np.bincount(ev.code[dynamic], weights=v**2, minlength=n)
    idx = np.flatnonzero(counts >= min_code_count)
    idx = idx[np.argsort(ev.vocab[idx].astype(str))]
    k = np.maximum(with_value[idx], 1)
    mean = sums[idx] / k
    static = ev.time == NAT
    s_counts = np.bincount(ev.code[static], minlength=n)
    s_with_value = np.bincount(ev.code[static & ~np.isnan(ev.value)], minlength=n)
    s_idx = np.flatnonzero(s_counts >= min_code_count)
    s_idx = s_idx[np.argsort(ev.vocab[s_idx].astype(str))]
    return CodeStats(
        vocabulary=ev.vocab[idx].astype(str),
        numeric=with_value[idx] >= 0.5 * counts[idx],
        value_mean=mean,
        value_std=np.sqrt(np.maximum(squares[idx] / k - mean**2, 1e-12)),
        static_vocabulary=ev.vocab[s_idx].astype(str),
        static_numeric=s_with_value[s_idx] >= 0.5 * s_counts[s_idx],
        count=counts[idx],
    )


def prediction_queries(ev: EventArrays, index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction index; return each row's subject rank (-1: no events) and time in µs."""
    for col in ("subject_id", "prediction_time"):
        if col not in index:
            raise input_error(table="prediction index", column=col, rule="is required")
    q_rank = pd.Index(ev.subjects).get_indexer(index["subject_id"].to_numpy(np.int64))
    q_time = index["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)
    if (q_time == NAT).any():
        row = int(np.flatnonzero(q_time == NAT)[0])
        raise input_error(
            table="prediction index",
            column="prediction_time",
            rule="must not be null",
            example=f"row {row}, subject_id={index['subject_id'].iloc[row]}",
        )
    return q_rank, q_time


def static_entries(ev: EventArrays, q_rank, q_time, *, static_vocabulary, static_numeric):
    """Sparse entries (row, col, value) of age, age-missing and static traits per prediction row.

    Column 0 is age in years at the prediction time, 1 flags a missing birth date, 2.. are the
    static codes (their value if numeric, else 1). ``q_rank`` -1 marks subjects without events.
    """
    n_q = q_rank.size
    birth = np.full(ev.subjects.size + 1, NAT, np.int64)  # last slot: subjects without events
    is_birth = ev.codes_matching(codes=["MEDS_BIRTH"])
    birth[ev.subject[is_birth][::-1]] = ev.time[is_birth][::-1]  # the first birth row wins
    b = birth[q_rank]
    has = b != NAT
    rows = [np.arange(n_q, dtype=np.int32)]
    cols = [np.where(has, 0, 1).astype(np.int32)]
    vals = [np.where(has, (q_time - b) / YEAR_US, 1.0).astype(np.float32)]
    lookup = pd.Index(static_vocabulary).get_indexer(ev.vocab.astype(str))
    sv = lookup[ev.code]
    st = (ev.time == NAT) & (sv >= 0)
    if st.any():
        s_subj, s_col, s_val = ev.subject[st], sv[st], ev.value[st]
        order = np.argsort(s_subj, kind="stable")
        s_subj, s_col, s_val = s_subj[order], s_col[order], s_val[order]
        lo = np.where(q_rank < 0, 0, np.searchsorted(s_subj, q_rank, "left"))
        hi = np.where(q_rank < 0, 0, np.searchsorted(s_subj, q_rank, "right"))
        n = hi - lo
        e = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        rows.append(np.repeat(np.arange(n_q, dtype=np.int32), n))  # int32/float32: no upcast downstream
        cols.append((2 + s_col[e]).astype(np.int32))
        vals.append(np.where(static_numeric[s_col[e]], np.nan_to_num(s_val[e]), 1.0).astype(np.float32))
    return rows, cols, vals
