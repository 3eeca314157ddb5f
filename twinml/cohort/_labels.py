"""Labels for a task: one row per (subject, prediction_time), one column per outcome x horizon.

Rules (the same for every task):

- **Prediction time** ``t``: from ``prediction_times`` (yearly index dates, or visit times).
  A row is kept only if the subject has at least ``min_history_days`` of records before
  ``t`` (first non-static event other than birth), is alive at ``t`` (no ``MEDS_DEATH`` at or
  before ``t``), has a record after ``t`` (still followed), and is at least ``min_age_years``.
- **Label** ``{outcome}_{h}d`` is True when an outcome code occurs in ``(t, t + h days]``.
- **Prior outcome**: with ``exclude_prior``, a subject with an outcome code at or before ``t``
  gets no label for that outcome (null), not a negative.
- **Censoring**: a label needs the subject followed through the window end: a record at or
  after ``t + h``, or death at or before ``t + h``. Otherwise the label is null (excluded),
  never a negative, for positives and negatives alike. Follow-up ends at the subject's last
  record, so datasets should carry an end-of-observation record (the simulator writes
  ``OBSERVATION_PERIOD//END``, as OMOP's observation_period does). Without one, sparse
  visits make survivors look lost while deaths are always seen, and the positive rate is
  inflated (measured on the simulator: 1-year death 1.85% observed vs 1.47% true).
  Death inside the window without the outcome is a negative (death competes; the
  simulator's truth agrees).
- **Leakage guards**: labels look only after ``t``; features (``twinml.features``) look only at
  or before ``t``; splits are by subject so no subject is in two splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._arrays import NAT, EventArrays, per_subject_reduce, prior_and_next
from .._validation import ConfigError
from ._meds_labels import read_label_files
from ._task import TaskDefinition

__all__ = ["Cohort", "build_labels", "to_meds_labels"]

_DAY_US = 86_400 * 1_000_000


@dataclass
class Cohort:
    """Labels plus how the cohort was arrived at.

    Attributes
    ----------
    labels : DataFrame
        ``subject_id``, ``prediction_time``, ``split``, then one nullable boolean column per
        outcome x horizon (see ``TaskDefinition.label_columns``).
    attrition : DataFrame
        ``step``, ``rows``, ``subjects`` after each eligibility rule, in order.
    label_counts : DataFrame
        Per label column: ``n`` labelled, ``positives``, ``excluded_prior``, ``censored``.
    """

    labels: pd.DataFrame
    attrition: pd.DataFrame
    label_counts: pd.DataFrame


def build_labels(
    events: pd.DataFrame, *, task: TaskDefinition, subject_splits: pd.DataFrame | None = None, at=None
) -> Cohort:
    """Build the labels of ``task`` from MEDS events, vectorised over all subjects.

    ``at`` (``subject_id``, ``prediction_time``) replaces the task's prediction times with these rows
    (e.g. the times a panel was scored at); the eligibility, label and censoring rules are the same.

    Examples
    --------
    >>> from twinml.simulate import simulate
    >>> from twinml.cohort import TaskDefinition
    >>> sim = simulate(n_subjects=300, seed=3)
    >>> task = TaskDefinition(name="mi", outcomes={"mi": {"codes": ["SNOMED/22298006"]}},
    ...                       horizons_days=[365], prediction_times={"start": "2012-01-01"})
    >>> cohort = build_labels(sim.events.to_pandas(), task=task, subject_splits=sim.subject_splits)
    >>> list(cohort.labels.columns)
    ['subject_id', 'prediction_time', 'split', 'mi_365d']
    """
    if task.labels is not None:
        return _cohort_from_files(events, task, subject_splits)
    ev = EventArrays(events)
    n_subj = ev.subjects.size
    dynamic = (ev.time != NAT) & ~ev.codes_matching(codes=["MEDS_BIRTH"])
    first = per_subject_reduce(ev.subject, ev.time, dynamic, n_subj, "min")
    last = per_subject_reduce(ev.subject, ev.time, dynamic, n_subj, "max")
    birth = per_subject_reduce(ev.subject, ev.time, ev.codes_matching(codes=["MEDS_BIRTH"]), n_subj, "min")
    death = per_subject_reduce(ev.subject, ev.time, ev.codes_matching(codes=["MEDS_DEATH"]), n_subj, "min")

    subj, pt = _candidate_times(ev, task, first, last, dynamic) if at is None else _given_times(ev, at)
    steps = [("candidate prediction times", subj)]
    keep = (first[subj] != NAT) & (first[subj] <= pt - task.min_history_days * _DAY_US)
    subj, pt = subj[keep], pt[keep]
    steps.append((f"at least {task.min_history_days} days of history", subj))
    keep = ((death[subj] == NAT) | (death[subj] > pt)) & (last[subj] > pt)
    subj, pt = subj[keep], pt[keep]
    steps.append(("alive and still followed at prediction time", subj))
    if task.min_age_years is not None:
        age_ok = (birth[subj] != NAT) & (pt - birth[subj] >= task.min_age_years * 365.25 * _DAY_US)
        subj, pt = subj[age_ok], pt[age_ok]
        steps.append((f"age at least {task.min_age_years:g} years", subj))

    split = _splits(ev.subjects, subj, task, subject_splits, pt.astype("datetime64[us]"))
    if task.split.strategy == "temporal":
        inside = split != None  # noqa: E711 (elementwise)
        subj, pt, split = subj[inside], pt[inside], split[inside]
        steps.append((_temporal_step(task), subj))
    labels = pd.DataFrame({"subject_id": ev.subjects[subj], "prediction_time": pt.astype("datetime64[us]")})
    labels["split"] = split
    counts = []
    for name, outcome in task.outcomes.items():
        hit = ev.codes_matching(codes=outcome.codes, prefixes=outcome.prefixes)
        prior, nxt = prior_and_next(ev.subject[hit], ev.time[hit], subj, pt)
        for h in task.horizons_days:
            end = pt + h * _DAY_US
            positive = (nxt != NAT) & (nxt <= end)
            died_in_window = (death[subj] != NAT) & (death[subj] <= end)
            censored = (last[subj] < end) & ~died_in_window
            excluded = prior & outcome.exclude_prior
            col = pd.array(positive, dtype="boolean")
            col[censored | excluded] = pd.NA
            labels[f"{name}_{h}d"] = col
            counts.append(
                {
                    "label": f"{name}_{h}d",
                    "n": int((~(censored | excluded)).sum()),
                    "positives": int((positive & ~excluded & ~censored).sum()),
                    "excluded_prior": int(excluded.sum()),
                    "censored": int((censored & ~excluded).sum()),
                }
            )
    attrition = pd.DataFrame([{"step": s, "rows": int(x.size), "subjects": int(np.unique(x).size)} for s, x in steps])
    return Cohort(labels.reset_index(drop=True), attrition, pd.DataFrame(counts))


def _cohort_from_files(events, task, subject_splits) -> Cohort:
    """The rows of MEDS label files (``task.labels``), with splits from the dataset or ``task.split``."""
    labels = read_label_files(task.labels, events=events, horizon_days=task.horizons_days[0])
    subjects = pd.unique(events["subject_id"].to_numpy(np.int64))
    rank = pd.Index(subjects).get_indexer(labels["subject_id"].to_numpy(np.int64))
    split = _splits(subjects, rank, task, subject_splits, labels["prediction_time"].to_numpy("datetime64[us]"))
    labels.insert(2, "split", split)
    steps = []
    for name, path in task.labels.items():
        known = labels[f"{name}_{task.horizons_days[0]}d"].notna().to_numpy()
        steps.append(
            {
                "step": f"label file {path} ({name})",
                "rows": int(known.sum()),
                "subjects": int(labels.loc[known, "subject_id"].nunique()),
            }
        )
    steps.append(
        {"step": "prediction rows (files joined)", "rows": len(labels), "subjects": int(labels["subject_id"].nunique())}
    )
    if task.split.strategy == "temporal":
        labels = labels[split != None].reset_index(drop=True)  # noqa: E711 (elementwise)
        steps.append(
            {"step": _temporal_step(task), "rows": len(labels), "subjects": int(labels["subject_id"].nunique())}
        )
    counts = []
    for name in task.labels:
        col = labels[f"{name}_{task.horizons_days[0]}d"]
        # the files' producer made its own exclusions and censoring: twinml excludes nothing more
        counts.append(
            {
                "label": col.name,
                "n": int(col.notna().sum()),
                "positives": int(col.sum()),
                "excluded_prior": 0,
                "censored": 0,
            }
        )
    return Cohort(labels, pd.DataFrame(steps), pd.DataFrame(counts))


def _temporal_step(task) -> str:
    return f"in the temporal split's periods (before {task.split.train_before} or from {task.split.test_from})"


def _given_times(ev, at: pd.DataFrame):
    """Rows of ``at`` as (subject rank, time in µs); a subject without events is an error."""
    order = np.argsort(ev.subjects, kind="stable")
    sid = at["subject_id"].to_numpy(np.int64)
    pos = np.searchsorted(ev.subjects[order], sid).clip(0, max(ev.subjects.size - 1, 0))
    found = ev.subjects.size > 0 and ev.subjects[order][pos] == sid
    if not np.all(found):
        missing = sid[~np.asarray(found, bool)] if ev.subjects.size else sid
        raise ConfigError(f"labels at given times: subject {missing[0]} has no events ({missing.size} such rows)")
    return order[pos], at["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)


def _candidate_times(ev, task, first, last, dynamic):
    spec = task.prediction_times
    has = np.flatnonzero(first != NAT)
    if spec.strategy == "yearly":
        if spec.start is not None:
            start = int(np.datetime64(spec.start, "us").astype(np.int64))
        else:
            start = int(first[has].min()) + task.min_history_days * _DAY_US if has.size else 0
            start = (start // _DAY_US + 1) * _DAY_US  # the next midnight
        stop = int(last[has].max()) if has.size else start
        times = np.arange(start, stop + 1, spec.every_days * _DAY_US, dtype=np.int64)
        subj = np.repeat(has, times.size)
        pt = np.tile(times, has.size)
        return subj, pt
    mask = dynamic & (ev.codes_matching(prefixes=spec.visit_prefixes) if spec.visit_prefixes else True)
    pairs = pd.DataFrame({"s": ev.subject[mask], "t": ev.time[mask]}).drop_duplicates()
    if spec.max_per_subject is not None:
        rng = np.random.default_rng(spec.seed)
        pairs["r"] = rng.random(len(pairs))
        pairs = pairs.sort_values(["s", "r"])
        pairs = pairs[pairs.groupby("s").cumcount() < spec.max_per_subject].sort_values(["s", "t"])
    return pairs["s"].to_numpy(np.int64), pairs["t"].to_numpy(np.int64)


def _splits(subject_ids, subj, task, subject_splits, prediction_time):
    """Each row's split: its subject's, or under ``strategy: temporal`` the temporal rule's (None: left out)."""
    spec = task.split
    by_subject = _subject_splits(
        subject_ids, subj, spec.subjects if spec.strategy == "temporal" else spec.strategy, spec, subject_splits
    )
    if spec.strategy != "temporal":
        return by_subject
    return temporal_splits(by_subject, prediction_time, spec.train_before, spec.test_from)


def events_for_fit(events: pd.DataFrame, task: TaskDefinition) -> pd.DataFrame:
    """The events a model may learn from: under ``strategy: temporal`` only those before ``train_before``
    (and the static rows), so neither its vocabulary, its value scaling nor a forecast target reads the later
    years; otherwise every event. Labels are built from every event (a training label window may run past
    ``train_before``, never to ``test_from``), and the test rows are scored on every event."""
    if task.split.strategy != "temporal":
        return events
    t = events["time"]
    return events[(t.isna() | (t < pd.Timestamp(task.split.train_before))).to_numpy()].reset_index(drop=True)


def temporal_splits(by_subject, prediction_time, train_before, test_from) -> np.ndarray:
    """Split names under the temporal rule (see :class:`SplitDefinition`): ``train``/``tuning`` subjects
    before ``train_before``, ``held_out`` subjects from ``test_from`` on (``held_out``) and before
    ``train_before`` (``held_out_same_period``); None for every other row."""
    t = np.asarray(prediction_time, dtype="datetime64[us]")
    before = t < np.datetime64(pd.Timestamp(train_before), "us")
    after = t >= np.datetime64(pd.Timestamp(test_from), "us")
    held = by_subject == "held_out"
    out = np.full(t.size, None, dtype=object)
    out[before & ~held] = by_subject[before & ~held]
    out[before & held] = "held_out_same_period"
    out[after & held] = "held_out"
    return out


def _subject_splits(subject_ids, subj, source, spec, subject_splits):
    if source == "meds":
        if subject_splits is None:
            key, other = (
                ("subjects", "subjects: random") if spec.strategy == "temporal" else ("strategy", "strategy: random")
            )
            raise ConfigError(
                f"task.split.{key}: 'meds' needs the dataset's metadata/subject_splits.parquet; "
                f"none was given (use {other} to draw splits)."
            )
        mapping = pd.Series(subject_splits["split"].to_numpy(), index=subject_splits["subject_id"].to_numpy())
        out = mapping.reindex(subject_ids[subj]).to_numpy()
        if pd.isna(out).any():
            missing = subject_ids[subj][pd.isna(out)][0]
            raise ConfigError(
                f"metadata/subject_splits.parquet: column 'subject_id' lacks subject {missing} "
                "that has events; every subject needs a split."
            )
        return out.astype(object)
    rng = np.random.default_rng(spec.seed)
    draw = rng.random(subject_ids.size)
    names = np.array(["train", "tuning", "held_out"], dtype=object)
    return names[np.searchsorted(np.cumsum(spec.fractions)[:-1], draw, side="right")][subj]


def to_meds_labels(labels: pd.DataFrame, column: str) -> pd.DataFrame:
    """One label column in the strict MEDS label schema (unlabelled rows dropped)."""
    kept = labels[labels[column].notna()]
    return pd.DataFrame(
        {
            "subject_id": kept["subject_id"].astype("int64"),
            "prediction_time": kept["prediction_time"],
            "boolean_value": kept[column].astype(bool),
        }
    ).reset_index(drop=True)
