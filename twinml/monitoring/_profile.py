"""A panel's profile at an as-of time: what the monitor compares, one value per subject per feature.

The panel is every subject with a record of care (not birth) in the lookback window before the as-of
time and no death before it. Per subject, in feature groups:

- ``demographics``: age at the as-of time, each static trait (``GENDER//F`` -> trait ``GENDER``,
  category ``F``; a static code with a value, like a deprivation index, is a number);
- ``activity``: events and distinct visit days in the window (sequence length and visit rate);
- ``codes``: whether each code was recorded in the window (a lab's presence counts: ordering a lab
  is itself information);
- ``labs``: the subject's mean value of each numeric code in the window.

Also the number of window events per code, so the monitor can measure codes never seen before.
Computed from sorted arrays over all subjects at once; shard files are read one at a time, keeping
only the window's rows, so memory follows the panel's window, not its whole history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._validation import ConfigError

__all__ = ["PanelProfile", "profile_events", "profile_meds"]

BIRTH, DEATH = "MEDS_BIRTH", "MEDS_DEATH"
_DAY_US = 86_400_000_000


@dataclass
class PanelProfile:
    """Per-subject features of one panel (see the module docstring)."""

    as_of: pd.Timestamp
    lookback_days: int
    n_subjects: int
    numeric: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (group, feature) -> values
    categorical: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (group, trait) -> categories
    code_subjects: pd.Series = field(default_factory=lambda: pd.Series(dtype=np.int64))  # code -> subjects with it
    code_events: pd.Series = field(default_factory=lambda: pd.Series(dtype=np.int64))  # code -> window events
    vocabulary: set[str] = field(default_factory=set)  # every code recorded up to the as-of time

    def merge(self, other: PanelProfile) -> PanelProfile:
        """The profile of two disjoint sets of subjects (two shards) as one."""

        def both(a: dict, b: dict, fill):
            # a feature one part lacks: labs have no values there, traits are missing for its subjects
            parts = lambda d, n, k: d[k] if k in d else np.full(0 if k[0] == "labs" else n, fill)  # noqa: E731
            return {
                k: np.concatenate([parts(a, self.n_subjects, k), parts(b, other.n_subjects, k)]) for k in {**a, **b}
            }

        numeric = both(self.numeric, other.numeric, np.nan)
        cat = both(self.categorical, other.categorical, "(none)")
        return PanelProfile(
            self.as_of,
            self.lookback_days,
            self.n_subjects + other.n_subjects,
            numeric,
            cat,
            self.code_subjects.add(other.code_subjects, fill_value=0).astype(np.int64),
            self.code_events.add(other.code_events, fill_value=0).astype(np.int64),
            self.vocabulary | other.vocabulary,
        )


def profile_events(table: pa.Table, as_of, *, lookback_days: int = 365) -> PanelProfile:
    """The profile of the subjects in ``table`` (MEDS events, whole subjects, any order) at ``as_of``."""
    as_of = pd.Timestamp(as_of)
    t_end = int(np.datetime64(as_of.as_unit("us").to_datetime64(), "us").astype(np.int64))
    t_start = t_end - lookback_days * _DAY_US
    sid = table.column("subject_id").to_numpy().astype(np.int64)
    time_col = table.column("time").cast(pa.timestamp("us"))
    static = time_col.is_null().to_numpy(zero_copy_only=False)
    t = time_col.cast(pa.int64()).fill_null(0).to_numpy()
    code_dict = pc.dictionary_encode(table.column("code")).combine_chunks()
    names = np.asarray(code_dict.dictionary.to_pylist(), dtype=object)
    code = code_dict.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    value = table.column("numeric_value").cast(pa.float64()).fill_null(np.nan).to_numpy()
    is_birth, is_death = names[code] == BIRTH, names[code] == DEATH
    dynamic = ~static & ~is_birth & (t <= t_end)
    window = dynamic & (t > t_start)
    subjects = np.unique(sid[window & ~is_death])
    dead = np.unique(sid[is_death & ~static & (t < t_end)])
    subjects = subjects[~np.isin(subjects, dead)]
    profile = PanelProfile(as_of, lookback_days, int(subjects.size))
    profile.vocabulary = set(names[np.unique(code[dynamic | static])])
    if subjects.size == 0:
        return profile
    row = np.searchsorted(subjects, sid)
    row[row >= subjects.size] = 0
    member = subjects[row] == sid
    _demographics(profile, subjects, row, member, static, is_birth, t, t_end, names, code, value)
    w = window & member
    _activity_and_codes(profile, subjects.size, row[w], t[w], code[w], value[w], names)
    return profile


def _demographics(profile, subjects, row, member, static, is_birth, t, t_end, names, code, value) -> None:
    birth = np.full(subjects.size, np.nan)
    b = is_birth & member & ~static
    birth[row[b]] = t[b]
    profile.numeric[("demographics", "age")] = (t_end - birth) / (365.25 * _DAY_US)
    s = static & member
    for c in np.unique(code[s]):
        name = str(names[c])
        rows = s & (code == c)
        if np.isfinite(value[rows]).any():
            v = np.full(subjects.size, np.nan)
            v[row[rows]] = value[rows]
            profile.numeric[("demographics", name)] = v
            continue
        trait, _, category = name.partition("//")
        key = ("demographics", trait)
        cats = profile.categorical.setdefault(key, np.full(subjects.size, "(none)", dtype=object))
        cats[row[rows]] = category or name


def _activity_and_codes(profile, n, row, t, code, value, names) -> None:
    counts = np.bincount(row, minlength=n)
    profile.numeric[("activity", "events in window")] = counts.astype(np.float64)
    day = np.unique(row * (1 << 20) + (t // _DAY_US - t.min() // _DAY_US))  # t spans < 2**20 days
    profile.numeric[("activity", "visit days in window")] = np.bincount(day >> 20, minlength=n).astype(np.float64)
    profile.code_events = pd.Series(np.bincount(code, minlength=names.size), index=names).loc[lambda s: s > 0]
    pairs = np.unique(code * n + row)
    present = np.bincount(pairs // n, minlength=names.size)
    profile.code_subjects = pd.Series(present, index=names).loc[lambda s: s > 0]
    # each subject's mean of each numeric code: one sort of the (code, subject) pairs, then a slice per code
    num = np.flatnonzero(np.isfinite(value))
    keys, inverse = np.unique(code[num] * n + row[num], return_inverse=True)
    means = np.bincount(inverse, weights=value[num]) / np.bincount(inverse)
    of_code = keys // n
    starts = np.flatnonzero(np.r_[True, of_code[1:] != of_code[:-1]]) if keys.size else np.zeros(0, np.int64)
    for lo, hi in zip(starts, np.r_[starts[1:], keys.size]):
        profile.numeric[("labs", str(names[of_code[lo]]))] = means[lo:hi]


def profile_meds(path, as_of=None, *, lookback_days: int = 365, progress=None) -> PanelProfile:
    """The profile of a MEDS dataset's panel, one shard file at a time (only each shard's window is kept).

    ``as_of`` defaults to the dataset's last event time.
    """
    say = progress or (lambda msg: None)
    files = sorted((Path(path) / "data").rglob("*.parquet"))
    if not files:
        raise ConfigError(f"monitor: {path} has no data/*.parquet files (is it a MEDS dataset?)")
    if as_of is None:
        as_of = max(pc.max(pq.read_table(f, columns=["time"]).column("time")).as_py() for f in files)
    as_of = pd.Timestamp(as_of)
    start = as_of - pd.Timedelta(days=lookback_days)
    start_time = pa.scalar(start.as_unit("us").to_datetime64(), pa.timestamp("us"))
    end_time = pa.scalar(as_of.as_unit("us").to_datetime64(), pa.timestamp("us"))
    profile = PanelProfile(as_of, lookback_days, 0)
    for i, f in enumerate(files):
        table = pq.read_table(f, columns=["subject_id", "time", "code", "numeric_value"])
        time_col = table.column("time").cast(pa.timestamp("us"))
        recorded = pc.fill_null(pc.less_equal(time_col, end_time), True)
        vocabulary = set(pc.unique(table.column("code").filter(recorded)).to_pylist())
        keep = pc.or_(
            pc.or_kleene(pc.is_null(time_col), pc.greater(time_col, start_time)),
            pc.is_in(table.column("code"), pa.array([BIRTH, DEATH])),
        )
        part = profile_events(table.filter(pc.fill_null(keep, True)), as_of, lookback_days=lookback_days)
        part.vocabulary = vocabulary
        profile = part if i == 0 else profile.merge(part)
        if (i + 1) % max(1, len(files) // 4) == 0 or i + 1 == len(files):
            say(f"profiled {path}: {i + 1}/{len(files)} shards, {profile.n_subjects:,} subjects in the window so far")
    return profile
