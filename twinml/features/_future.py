"""What a trajectory forecast is scored against: the reading of a code nearest each horizon.

For a prediction row at time ``t``, a code and a horizon ``h`` days, the target is the code's reading
whose time is nearest ``t + h`` among the subject's readings in ``[t + h - w, t + h + w]`` with
``w = window * h`` (half the horizon by default), and strictly after ``t``. Rows without such a
reading have no target (NaN). These are outcomes, read from *after* the prediction time: training
targets and evaluation truth, never a model input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._arrays import NAT, EventArrays, events_upto
from ._common import prediction_queries

__all__ = ["readings_near_horizons"]

_DAY_US = 86_400 * 1_000_000


def _first_at_or_after(times, lo, hi, target):
    """Per query, the first index in ``[lo, hi)`` with ``times[i] >= target`` (``hi`` if none);
    ``times`` is sorted within each range. Vectorised bisection over all queries at once."""
    lo, hi = lo.astype(np.int64).copy(), hi.astype(np.int64).copy()
    active = np.flatnonzero(lo < hi)
    while active.size:
        mid = (lo[active] + hi[active]) // 2
        go = times[mid] < target[active]
        lo[active[go]] = mid[go] + 1
        hi[active[~go]] = mid[~go]
        active = active[lo[active] < hi[active]]
    return lo


def readings_near_horizons(
    events: pd.DataFrame, index: pd.DataFrame, codes, horizons_days=(90, 180, 365), *, window: float = 0.5
):
    """The reading of each code nearest each horizon after each row's prediction time.

    Parameters
    ----------
    events : MEDS events, sorted by subject then time
    index : frame with ``subject_id``, ``prediction_time``
    codes : sequence of str (numeric codes, e.g. ``LOINC/4548-4``)
    horizons_days : sequence of positive numbers
    window : float
        Half-width of the window around ``t + h``, as a fraction of ``h``.

    Returns
    -------
    values : float64 (n_rows, n_codes, n_horizons), NaN where no reading falls in the window
    times : int64 µs, same shape, ``NAT`` where none
    """
    codes, horizons = list(codes), np.asarray(horizons_days, np.float64)
    ev = EventArrays(events)
    q_rank, q_time = prediction_queries(ev, index)
    values = np.full((len(index), len(codes), horizons.size), np.nan)
    times = np.full(values.shape, NAT, np.int64)
    for j, code in enumerate(codes):  # a loop over codes and horizons; each step is vectorised over rows
        sel = np.flatnonzero(ev.codes_matching(codes=[code]) & (ev.time != NAT) & ~np.isnan(ev.value))
        if sel.size == 0:
            continue
        t, v = ev.time[sel], ev.value[sel].astype(np.float64)
        _, after, end = events_upto(ev.subject[sel], t, q_rank, q_time)  # readings after t: [after, end)
        for k, h in enumerate(horizons):
            target = q_time + np.int64(round(h * _DAY_US))
            half = np.int64(round(window * h * _DAY_US))
            i = _first_at_or_after(t, after, end, target)
            nxt = np.where(i < end, t[np.minimum(i, sel.size - 1)], NAT)
            prv = np.where(i > after, t[np.maximum(i - 1, 0)], NAT)
            d_nxt = np.where(nxt != NAT, nxt - target, np.iinfo(np.int64).max)
            d_prv = np.where(prv != NAT, target - prv, np.iinfo(np.int64).max)
            pick = np.where(d_prv < d_nxt, i - 1, i)  # ties go to the later reading
            ok = np.minimum(d_prv, d_nxt) <= half
            values[ok, j, k] = v[pick[ok]]
            times[ok, j, k] = t[pick[ok]]
    return values, times
