"""Public entry point of the simulator: ``simulate(...)`` -> :class:`SimulatedCohort`."""

from __future__ import annotations

import json
import time as _time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .._arrays import tie_keys
from .._validation import ConfigError, check_positive_int
from ._codes import OUTCOMES, PLANS, RACE_GROUPS, STATIC_CODES, code_descriptions
from ._drift import load_drift, recorded_with_drift
from ._process import DT, EFFECTS, ONE_TIME, OUTCOME_NAMES, TREATMENT_NAMES, hazards
from ._simulator import DYNAMIC_CODES, run_process
from ._truth import cumulative_incidence, steps_needed

TRUTH_FILE = "truth/ground_truth.parquet"
READINGS_TRUTH_FILE = "truth/readings.parquet"

DEFAULT_HORIZONS = (90, 180, 365, 730)
_US = 1_000_000
_EPOCH_1900_S = int(pd.Timestamp("1900-01-01").value // 1_000_000_000)


@dataclass
class SimulatedCohort:
    """What the simulator produces.

    Attributes
    ----------
    events : pyarrow.Table
        MEDS events (``subject_id``, ``time``, ``code``, ``numeric_value``), sorted by subject then time,
        subjects grouped by split.
    subject_splits : pandas.DataFrame
        ``subject_id``, ``split`` (train / tuning / held_out).
    truth : pandas.DataFrame
        Ground truth: ``subject_id``, ``prediction_time``, ``plan`` and one column ``{outcome}_{h}d`` per
        outcome and horizon with the true probability (NaN where a one-time outcome already happened).
        ``plan == "observed"`` is the risk under the policy the records followed.
    subjects : pandas.DataFrame
        Per-subject traits and true event dates (simulated, so safe to keep).
    config : dict
        The arguments the cohort was simulated with.
    readings : pandas.DataFrame or None
        The trajectory oracle: one row per lab/vital reading in ``events`` (``subject_id``, ``time``,
        ``code``) with ``expected_value``, the noise-free value of the latent state it reads (the
        recorded ``numeric_value`` is this plus measurement noise, rounded to 0.1).
    """

    events: pa.Table
    subject_splits: pd.DataFrame
    truth: pd.DataFrame
    subjects: pd.DataFrame
    config: dict
    readings: pd.DataFrame | None = None

    def write(self, out_dir, *, overwrite: bool = False, shard_size: int = 50_000):
        """Write the MEDS dataset, with ``truth/`` (ground truth, subject traits, config) beside it."""
        from .._version import __version__
        from ..data import write_meds

        codes = pc.unique(self.events.column("code")).to_pylist()
        extra = {
            "truth/ground_truth.parquet": lambda p: self.truth.to_parquet(p, index=False),
            "truth/subjects.parquet": lambda p: self.subjects.to_parquet(p, index=False),
            "truth/simulator.json": lambda p: p.write_text(json.dumps(self.config, indent=2)),
        }
        readings = self.readings
        if readings is not None:
            extra[READINGS_TRUTH_FILE] = lambda p: readings.to_parquet(p, index=False)
        return write_meds(
            out_dir,
            events=self.events,
            subject_splits=self.subject_splits,
            codes=code_table(sorted(codes)),
            dataset_name="twinml-simulator",
            etl_name="twinml.simulate",
            etl_version=__version__,
            shard_size=shard_size,
            overwrite=overwrite,
            extra=extra,
        )


def simulate(
    *,
    n_subjects: int,
    seed: int = 0,
    years: int = 10,
    start: str = "2010-01-01",
    horizons_days=DEFAULT_HORIZONS,
    truth_start_year: int = 2,
    visit_rate_per_year: float = 1.3,
    follow_up_loss_per_year: float = 0.04,
    bias_group: str | None = None,
    underdiagnosis_rate: float = 0.0,
    visit_rate_ratio: float = 1.0,
    treatment_effect_scale: float = 1.0,
    treatment_rate_scale: float = 1.0,
    treatment_decisions: str = "visits",
    split_fractions=(0.8, 0.1, 0.1),
    drift=None,
    progress=None,
) -> SimulatedCohort:
    """Simulate a cohort of patients whose true risks are known.

    Parameters
    ----------
    n_subjects : int
        Number of patients.
    seed : int
        Everything is deterministic given the seed.
    years : int
        Length of the recorded period, starting at ``start``.
    horizons_days : sequence of int
        Horizons of the ground-truth risks.
    truth_start_year : int
        Ground truth is given at ``start + y * 365 days`` for ``y = truth_start_year .. years - 1``.
    bias_group : str, optional
        A group code (``"RACE//Black"``, ``"GENDER//F"``, ...) that the bias knobs apply to.
    underdiagnosis_rate : float
        In ``bias_group``, the share of type 2 diabetes and CKD diagnoses that are never recorded.
    visit_rate_ratio : float
        In ``bias_group``, visits (and so measurements) happen this many times as often.
    treatment_effect_scale : float
        Multiplies every treatment's effect (0 makes treatments inert).
    treatment_rate_scale : float
        Multiplies the prescribing policy's start probabilities (capped at 1): more treated patients,
        the same confounding (who gets treated still depends on what was observed).
    treatment_decisions : {"visits", "yearly_review"}
        ``visits``: treatments may start at any outpatient visit (acting from the next month).
        ``yearly_review``: every followed subject has a review visit at each whole year after ``start``
        (the ground-truth times); treatments start only there, prescribed one minute after the review's
        readings and acting at once, so the ground-truth plans are exactly the decisions the records show.
    drift : dict or path of a YAML file, optional
        Shifts planted from ``from_year`` years after ``start`` on, for testing a monitor:
        ``visit_rate_ratio`` (visits this many times as often), ``hazard_ratio`` (``{outcome: ratio}``;
        the ground truth includes it), ``lab_offset`` (``{lab name or LOINC code: offset}`` added to
        recorded values: a new assay), ``recode`` (``{old code: new code}``, a new coding practice,
        for a ``recode_share`` of the old code's events). The truth readings stay noise-free values.

    Examples
    --------
    >>> cohort = simulate(n_subjects=200, seed=1)
    >>> cohort.events.column_names[:4]
    ['subject_id', 'time', 'code', 'numeric_value']
    >>> sorted(cohort.truth["plan"].unique())[:2]
    ['no_new_treatment', 'observed']
    """
    config = dict(
        n_subjects=n_subjects,
        seed=seed,
        years=years,
        start=start,
        horizons_days=list(horizons_days),
        truth_start_year=truth_start_year,
        visit_rate_per_year=visit_rate_per_year,
        follow_up_loss_per_year=follow_up_loss_per_year,
        bias_group=bias_group,
        underdiagnosis_rate=underdiagnosis_rate,
        visit_rate_ratio=visit_rate_ratio,
        treatment_effect_scale=treatment_effect_scale,
        treatment_rate_scale=treatment_rate_scale,
        treatment_decisions=treatment_decisions,
        split_fractions=list(split_fractions),
    )
    planted = _check_settings(**config, drift=drift)
    config |= {"drift": planted.model_dump()} if planted is not None else {}
    say = progress or (lambda msg: None)
    rng = np.random.default_rng(seed)
    t = _time.perf_counter()
    res = run_process(
        n_subjects=n_subjects,
        years=years,
        extra_steps=steps_needed(horizons_days),
        rng=rng,
        visit_rate_per_year=visit_rate_per_year,
        follow_up_loss_per_year=follow_up_loss_per_year,
        bias_group=bias_group,
        underdiagnosis_rate=underdiagnosis_rate,
        visit_rate_ratio=visit_rate_ratio,
        treatment_effect_scale=treatment_effect_scale,
        treatment_rate_scale=treatment_rate_scale,
        treatment_decisions=treatment_decisions,
        drift=planted,
    )
    say(f"simulated {n_subjects:,} subjects over {years} years in {_time.perf_counter() - t:.1f}s")
    return _cohort(res, rng, config, say)


def _check_settings(
    *,
    n_subjects,
    years,
    horizons_days,
    underdiagnosis_rate,
    treatment_rate_scale,
    treatment_decisions,
    visit_rate_ratio,
    bias_group,
    split_fractions,
    drift=None,
    **_,
):
    """The simulator's settings, each checked with a message naming it; returns the planted drift (or None)."""
    check_positive_int(n_subjects, name="n_subjects", owner="simulate")
    check_positive_int(years, name="years", owner="simulate")
    for h in horizons_days:
        check_positive_int(h, name="horizons_days", owner="simulate")
    if not 0.0 <= underdiagnosis_rate <= 1.0:
        raise ConfigError(
            f"The 'underdiagnosis_rate' parameter of simulate must be in [0, 1]. Got {underdiagnosis_rate!r} instead."
        )
    if treatment_rate_scale < 0:
        raise ConfigError(
            f"The 'treatment_rate_scale' parameter of simulate must be >= 0. Got {treatment_rate_scale!r} instead."
        )
    if treatment_decisions not in ("visits", "yearly_review"):
        raise ConfigError(
            f"The 'treatment_decisions' parameter of simulate must be 'visits' or 'yearly_review'. "
            f"Got {treatment_decisions!r} instead."
        )
    if visit_rate_ratio <= 0:
        raise ConfigError(
            f"The 'visit_rate_ratio' parameter of simulate must be > 0. Got {visit_rate_ratio!r} instead."
        )
    if (underdiagnosis_rate > 0 or visit_rate_ratio != 1.0) and not bias_group:
        raise ConfigError("simulate: a bias knob is set but 'bias_group' is not; name the group, e.g. 'RACE//Black'.")
    if len(split_fractions) != 3 or abs(sum(split_fractions) - 1.0) > 1e-9 or min(split_fractions) < 0:
        raise ConfigError(
            "The 'split_fractions' parameter of simulate must be three non-negative shares summing to 1. Got "
            f"{split_fractions!r} instead."
        )
    return load_drift(drift, dynamic_codes=DYNAMIC_CODES)


def _cohort(res, rng, config: dict, say) -> SimulatedCohort:
    """The simulated process as a MEDS cohort: events, splits (drawn from ``rng`` after the process),
    ground truth, subject traits and readings."""
    n_subjects, years, split_fractions = config["n_subjects"], config["years"], config["split_fractions"]
    truth_start_year, horizons_days = config["truth_start_year"], config["horizons_days"]
    treatment_effect_scale = config["treatment_effect_scale"]
    start_s = int(pd.Timestamp(config["start"]).value // 1_000_000_000)
    split_names = np.array(["train", "tuning", "held_out"])
    split_idx = np.searchsorted(np.cumsum(split_fractions)[:-1], rng.random(n_subjects), side="right")
    # Subjects are laid out split by split, ids ascending inside each split.
    order = np.lexsort((np.arange(n_subjects), split_idx))
    position = np.empty(n_subjects, np.int64)
    position[order] = np.arange(n_subjects)
    subject_ids = 1_000_000 + np.arange(n_subjects, dtype=np.int64)
    t = _time.perf_counter()
    drift = load_drift(config.get("drift"), dynamic_codes=DYNAMIC_CODES)
    drift_rng = np.random.default_rng([config["seed"], 1])  # its own stream: other outputs do not move
    events = _events_table(res, start_s=start_s, position=position, subject_ids=subject_ids, drift=(drift, drift_rng))
    say(f"built {events.num_rows:,} MEDS events in {_time.perf_counter() - t:.1f}s")
    splits = pd.DataFrame({"subject_id": subject_ids[order], "split": split_names[split_idx[order]]})
    truth = _truth_table(
        res,
        start_s=start_s,
        years=years,
        truth_start_year=truth_start_year,
        horizons_days=tuple(horizons_days),
        subject_ids=subject_ids,
        effect_scale=treatment_effect_scale,
    )
    subjects = _subjects_table(res, start_s=start_s, subject_ids=subject_ids, years=years)
    return SimulatedCohort(
        events, splits, truth, subjects, config, _readings_table(res, start_s=start_s, subject_ids=subject_ids)
    )


def code_table(codes) -> pd.DataFrame:
    """MEDS ``codes.parquet`` rows for the simulator codes in ``codes``."""
    desc = code_descriptions()
    return pd.DataFrame(
        {"code": list(codes), "description": [desc.get(c) for c in codes], "parent_codes": [[] for _ in codes]}
    )


def _events_table(res, *, start_s, position, subject_ids, drift=(None, None)) -> pa.Table:
    st = res.statics
    n = st.age0.size
    sid, years, code, value = res.log.arrays()
    dyn_time_s = start_s + np.round(years * 365.0 * 86400.0).astype(np.int64)
    # Static facts (time null) and birth; the codes a planted recoding writes come last.
    all_codes = list(DYNAMIC_CODES) + list(STATIC_CODES)
    code, value, all_codes = recorded_with_drift(years, code, value, drift[0], all_codes, drift[1])
    cid = {c: i for i, c in enumerate(all_codes)}
    subj = np.arange(n, dtype=np.int32)
    sex_code = np.where(st.male, cid["GENDER//M"], cid["GENDER//F"])
    race_code = np.array([cid[f"RACE//{r}"] for r in RACE_GROUPS])[st.race]
    birth_s = start_s - np.round(st.age0 * 365.25 * 86400.0).astype(np.int64)
    s_sid = np.concatenate([subj, subj, subj, subj])
    s_code = np.concatenate(
        [sex_code, race_code, np.full(n, cid["SDOH//DEPRIVATION_INDEX"]), np.full(n, cid["MEDS_BIRTH"])]
    )
    s_value = np.concatenate([np.full(2 * n, np.nan), np.round(st.deprivation, 3), np.full(n, np.nan)]).astype(
        np.float32
    )
    s_time = np.concatenate([np.zeros(3 * n, np.int64), birth_s])
    s_null = np.concatenate([np.ones(3 * n, bool), np.zeros(n, bool)])

    all_sid = np.concatenate([s_sid, sid])
    all_time = np.concatenate([s_time, dyn_time_s])
    all_null = np.concatenate([s_null, np.zeros(sid.size, bool)])
    all_code = np.concatenate([s_code.astype(np.int16), code])
    all_value = np.concatenate([s_value, value])
    rel = np.where(all_null, 0, all_time - _EPOCH_1900_S + 1)
    key = position[all_sid] * (1 << 35) + rel
    # simultaneous events in (code text, value) order: the order every sequence model canonicalises to
    o = np.lexsort((*tie_keys(all_code, all_codes, all_value), key))
    used = np.unique(all_code)
    remap = np.full(len(all_codes), -1, np.int32)
    remap[used] = np.arange(used.size)
    names = pa.array([all_codes[i] for i in used], pa.string())
    code_arr = pa.DictionaryArray.from_arrays(pa.array(remap[all_code[o]]), names).cast(pa.string())
    val = all_value[o]
    return pa.table(
        {
            "subject_id": pa.array(subject_ids[all_sid[o]], pa.int64()),
            "time": pa.array(all_time[o] * _US, type=pa.timestamp("us"), mask=all_null[o]),
            "code": code_arr,
            "numeric_value": pa.array(val, pa.float32(), mask=np.isnan(val)),
        }
    )


def _readings_table(res, *, start_s, subject_ids) -> pd.DataFrame:
    sid, years, code, _ = res.log.arrays()
    expected = res.log.expected_values()
    keep = np.flatnonzero(~np.isnan(expected))
    time_s = start_s + np.round(years[keep] * 365.0 * 86400.0).astype(np.int64)  # as the events' times
    o = np.lexsort((code[keep], time_s, subject_ids[sid[keep]]))
    keep, time_s = keep[o], time_s[o]
    return pd.DataFrame(
        {
            "subject_id": subject_ids[sid[keep]],
            "time": (time_s * _US).astype("datetime64[us]"),
            "code": pd.Categorical.from_codes(
                code[keep].astype(np.int64), categories=list(DYNAMIC_CODES)
            ).remove_unused_categories(),
            "expected_value": expected[keep],
        }
    )


def _truth_table(res, *, start_s, years, truth_start_year, horizons_days, subject_ids, effect_scale):
    st = res.statics
    h_steps = steps_needed(horizons_days)
    effects = EFFECTS * np.float32(effect_scale)
    cols = [f"{o}_{h}d" for o in OUTCOME_NAMES for h in horizons_days]
    frames = []
    for y in range(truth_start_year, years):
        s_p = 12 * y
        t = s_p * DT
        idx = np.flatnonzero((st.entry <= t) & (st.censor > t) & (res.death_time > t))
        if idx.size == 0:
            continue
        done = ONE_TIME[None, :] & (res.onset_time[idx] <= t)  # (n, 5)
        steps = slice(s_p, s_p + h_steps)
        age = st.age0[idx, None] + (s_p + np.arange(h_steps))[None, :] * DT
        plans = {"observed": res.hazard[idx, steps]}
        for plan, drug in PLANS.items():
            on_p = res.on_treatment[idx, s_p].copy()
            if drug is not None:
                on_p[:, TREATMENT_NAMES.index(drug)] = True
            z = res.z_untreated[idx, steps] + (on_p.astype(np.float32) @ effects)[:, None, :]
            plans[plan] = hazards(z, age, st.male[idx, None], st.deprivation[idx, None], st.smoker[idx, None])
        pt = np.datetime64(start_s + y * 365 * 86400, "s").astype("datetime64[us]")
        for plan, lam in plans.items():
            risk = cumulative_incidence(lam, horizons_days)  # (n, 5, H)
            risk[np.broadcast_to(done[:, :, None], risk.shape)] = np.nan
            df = pd.DataFrame(risk.reshape(idx.size, -1), columns=cols)
            df.insert(0, "plan", plan)
            df.insert(0, "prediction_time", pt)
            df.insert(0, "subject_id", subject_ids[idx])
            frames.append(df)
    truth = pd.concat(frames, ignore_index=True)
    truth["plan"] = truth["plan"].astype("category")
    return truth.sort_values(["plan", "subject_id", "prediction_time"], kind="stable").reset_index(drop=True)


def _subjects_table(res, *, start_s, subject_ids, years):
    st = res.statics

    def date(years_after):
        out = pd.to_datetime(start_s + np.round(np.minimum(years_after, 1e4) * 365 * 86400), unit="s")
        return out.where(np.isfinite(years_after) & (years_after < years))

    return pd.DataFrame(
        {
            "subject_id": subject_ids,
            "sex": np.where(st.male, "M", "F"),
            "race_group": np.array(RACE_GROUPS)[st.race],
            "deprivation": st.deprivation,
            "age_at_start": st.age0,
            "entry_date": date(st.entry),
            "lost_to_follow_up_date": date(st.censor),
            "death_date": date(res.death_time),
            "in_bias_group": st.in_bias_group,
            "smoker": st.smoker,
            **{
                f"true_{o}_onset": date(np.maximum(res.onset_time[:, i], 0.0))  # prevalent: on or before start
                for i, o in enumerate(OUTCOMES)
                if o != "death"
            },
        }
    )


def simulate_to(out, *, overwrite: bool = False, **kwargs) -> SimulatedCohort:
    """:func:`simulate` with ``kwargs`` and write the cohort to ``out`` (``twinml simulate``).

    ``out`` is refused before the simulation (not after it) when it exists and ``overwrite`` is False.
    """
    from .._io import refuse_existing

    refuse_existing(out, overwrite=overwrite)
    cohort = simulate(**kwargs)
    cohort.write(out, overwrite=overwrite)
    return cohort
