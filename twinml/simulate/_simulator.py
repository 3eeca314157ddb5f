"""Run the simulated patient process and collect events plus the paths ground truth needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._codes import (
    MEASUREMENTS,
    OBSERVATION_PERIOD,
    OUTCOMES,
    SMOKER_CODE,
    THRESHOLD_DIAGNOSES,
    TREATMENTS,
    VISIT_CODES,
)
from ._process import (
    CKD,
    DEATH,
    DT,
    EFFECTS,
    MI,
    ONE_TIME,
    STEPS_PER_YEAR,
    STROKE,
    T2D,
    TREATMENT_NAMES,
    EventLog,
    Statics,
    draw_statics,
    expected_readings,
    hazards,
    readings,
)

# Code ids used inside the simulator (strings are attached when the table is built).
DYNAMIC_CODES = (
    [VISIT_CODES["outpatient"][0], VISIT_CODES["inpatient"][0]]
    + [c for c, _, _ in MEASUREMENTS.values()]
    + [c for c, _ in THRESHOLD_DIAGNOSES.values()]
    + [c for c, _, _ in TREATMENTS.values()]
    + [c for c, _, _ in OUTCOMES.values()]
    + [SMOKER_CODE[0], OBSERVATION_PERIOD["start"][0], OBSERVATION_PERIOD["end"][0]]
)
CODE_ID = {c: i for i, c in enumerate(DYNAMIC_CODES)}
# latent drift between visits: recent readings matter more than old ones
WALK_SD_PER_YEAR = 0.25
# a review's prescriptions follow its readings by a minute
RX_DELAY_YEARS = 60.0 / (365.0 * 86400.0)


@dataclass
class ProcessResult:
    statics: Statics
    log: EventLog
    z_untreated: np.ndarray  # (N, T_ext, K) float32, latent state without treatment
    on_treatment: np.ndarray  # (N, T_ext, D) bool, treatments active during each step
    hazard: np.ndarray  # (N, T_ext, 5) float32, realised hazards per year
    death_time: np.ndarray  # years after start (inf if alive at the end of the extended run)
    onset_time: np.ndarray  # (N, 5) first true occurrence time in years (inf if none)
    n_steps: int  # steps with recorded data (the rest only feeds ground truth)


@dataclass
class _Chart:
    """How the records are kept: the codes and outcomes recorded so far (updated in place), the diagnoses
    never recorded, each subject's entry step, the end of the records (years), the visit rate, the event
    log, and the prescribing policy's scale and whether treatments start at any visit."""

    coded: np.ndarray
    recorded: np.ndarray
    dropped: np.ndarray
    entry_step: np.ndarray
    end_years: float
    visit_rate: np.ndarray
    log: EventLog
    treatment_rate_scale: float = 1.0
    starts_at_visits: bool = True


def run_process(
    *,
    n_subjects,
    years,
    extra_steps,
    rng,
    visit_rate_per_year,
    follow_up_loss_per_year,
    bias_group,
    underdiagnosis_rate,
    visit_rate_ratio,
    treatment_effect_scale,
    treatment_rate_scale=1.0,
    treatment_decisions="visits",
    drift=None,
):
    """Simulate ``years`` of records plus ``extra_steps`` of unrecorded future for ground truth.

    ``treatment_decisions``: ``visits`` (treatments may start at any outpatient visit and act from the
    next step) or ``yearly_review`` (every followed subject has a review visit at each whole year; only
    there may treatments start, prescribed a minute after the review's readings and acting at once).
    ``drift`` (a :class:`~twinml.simulate._drift.Drift`): from its ``from_year`` on, visits come
    ``visit_rate_ratio`` times as often and each outcome's hazard is multiplied by its ``hazard_ratio``.
    """
    n = n_subjects
    st = draw_statics(n, rng, bias_group=bias_group, follow_up_loss_per_year=follow_up_loss_per_year)
    n_steps = years * STEPS_PER_YEAR
    t_ext = n_steps + extra_steps
    k = st.mu.shape[1]
    z_u = np.empty((n, t_ext, k), np.float32)
    on_hist = np.zeros((n, t_ext, len(TREATMENT_NAMES)), bool)
    lam_hist = np.empty((n, t_ext, 5), np.float32)
    effects = EFFECTS * np.float32(treatment_effect_scale)

    if treatment_decisions not in ("visits", "yearly_review"):
        raise ValueError(f"treatment_decisions must be 'visits' or 'yearly_review'; got {treatment_decisions!r}")
    reviews = treatment_decisions == "yearly_review"
    walk = np.zeros((n, k))
    on = np.zeros((n, len(TREATMENT_NAMES)), bool)
    alive = np.ones(n, bool)
    death_time = np.full(n, np.inf)
    onset_time = _prevalent_onsets(st, rng)
    chart = _new_chart(
        st, years, rng, underdiagnosis_rate, visit_rate_per_year, visit_rate_ratio, treatment_rate_scale, reviews
    )
    coded, recorded, end_years, log = chart.coded, chart.recorded, chart.end_years, chart.log

    shift_step = n_steps + extra_steps if drift is None else int(np.ceil(drift.from_year / DT - 1e-9))
    for s in range(t_ext):
        t0 = s * DT
        age = st.age0 + t0
        z_u[:, s] = st.mu + st.slope * (age[:, None] - 50.0) / 10.0 + walk
        walk += WALK_SD_PER_YEAR * np.sqrt(DT) * rng.standard_normal((n, k))
        on_hist[:, s] = on  # before any decision of this step: the ground truth's starting point
        if reviews and s % STEPS_PER_YEAR == 0 and 0 < s < n_steps:
            z = z_u[:, s] + on.astype(np.float32) @ effects
            _review(t0, st, end_years, alive, z, age, on, coded, recorded, rng, log, treatment_rate_scale)
        z = z_u[:, s] + on.astype(np.float32) @ effects
        lam = _drifted(s, shift_step, drift, chart, hazards(z, age, st.male, st.deprivation, st.smoker))
        lam_hist[:, s] = lam
        if not alive.any():
            continue
        clock, dies, t_death, occurs = _draw_step(lam, alive, onset_time, death_time, t0, rng)
        if s < n_steps:
            _record_step(s, t0, st, z, age, occurs, clock, t_death, alive, on, onset_time, chart, rng)
        alive &= ~dies
    _observation_periods(st, death_time, end_years, log)
    return ProcessResult(st, log, z_u, on_hist, lam_hist, death_time, onset_time, n_steps)


def _drifted(s, shift_step, drift, chart, lam):
    """From the drift's first step on: visits at the new rate (changed once, at that step), hazards multiplied."""
    if s == shift_step:
        chart.visit_rate = chart.visit_rate * drift.visit_rate_ratio
    return lam * drift.hazard_multipliers() if s >= shift_step else lam


def _new_chart(st, years, rng, underdiagnosis_rate, visit_rate_per_year, visit_rate_ratio, rate_scale, reviews):
    """Empty records; in the bias group, diagnoses of one-time outcomes (not MI or stroke) may never be
    recorded, and visits come at ``visit_rate_ratio`` times the rate."""
    n = st.age0.size
    dropped = st.in_bias_group[:, None] & (rng.random((n, 5)) < underdiagnosis_rate)
    dropped[:, [MI, STROKE, DEATH]] = False
    visit_mult = np.where(st.in_bias_group, visit_rate_ratio, 1.0)
    return _Chart(
        coded=np.zeros((n, len(THRESHOLD_DIAGNOSES)), bool),
        recorded=np.zeros((n, 5), bool),
        dropped=dropped,
        entry_step=np.floor(st.entry / DT).astype(np.int64),
        end_years=float(years),
        visit_rate=visit_rate_per_year * visit_mult,
        log=EventLog(),
        treatment_rate_scale=rate_scale,
        starts_at_visits=not reviews,
    )


def _prevalent_onsets(st, rng) -> np.ndarray:
    """Onset times (years; -1 for prevalent at the start, inf for none yet), (subjects, outcomes): T2D and
    CKD prevalent with the probability of the hazard accumulated since age 30."""
    n = st.age0.size
    onset_time = np.full((n, 5), np.inf)
    z0 = st.mu + st.slope * (st.age0[:, None] - 50.0) / 10.0
    lam0 = hazards(z0, st.age0, st.male, st.deprivation, st.smoker)
    for o in (T2D, CKD):
        prevalent = rng.random(n) < 1.0 - np.exp(-0.5 * lam0[:, o] * (st.age0 - 30.0))
        onset_time[prevalent, o] = -1.0
    return onset_time


def _review(t0, st, end_years, alive, z, age, on, coded, recorded, rng, log, rate_scale) -> None:
    """A yearly review visit of every followed subject at ``t0``; treatments started there act at once."""
    n = alive.size
    idx = np.flatnonzero(alive & _observed(np.full(n, t0), st, end_years))
    start = _visit(
        idx,
        np.full(idx.size, t0),
        z,
        age,
        on,
        coded,
        recorded,
        rng,
        log,
        rate_scale=rate_scale,
        rx_delay=RX_DELAY_YEARS,
    )
    on[idx] |= start  # acts from this step on, as the ground truth's plans do


def _draw_step(lam, alive, onset_time, death_time, t0, rng):
    """One step's competing events from the hazards ``lam``: each outcome's clock, who dies and when,
    which outcomes occur (one-time outcomes once); first onsets and deaths are written in place."""
    clock = rng.exponential(size=lam.shape) / lam
    dies = alive & (clock[:, DEATH] < DT)
    t_death = np.where(dies, clock[:, DEATH], np.inf)
    occurs = alive[:, None] & (clock < DT) & (clock < t_death[:, None])
    occurs[:, DEATH] = dies
    occurs &= ~(ONE_TIME[None, :] & np.isfinite(onset_time))
    first = occurs & ~np.isfinite(onset_time)
    onset_time[first] = (t0 + clock)[first]
    death_time[dies] = t0 + t_death[dies]
    return clock, dies, t_death, occurs


def _observation_periods(st, death_time, end_years, log) -> None:
    """Each entered subject's observation period; those who die before they would have entered never
    enter the records."""
    follow_end = np.minimum(np.minimum(st.censor, death_time), end_years)
    entered = np.flatnonzero(st.entry < follow_end)
    log.add(entered, st.entry[entered], CODE_ID[OBSERVATION_PERIOD["start"][0]])
    log.add(entered, follow_end[entered], CODE_ID[OBSERVATION_PERIOD["end"][0]])


def _observed(years, st, end_years):
    return (years >= st.entry) & (years < np.minimum(st.censor, end_years))


def _record_step(s, t0, st, z, age, occurs, clock, t_death, alive, on, onset_time, chart: _Chart, rng):
    """Write this step's recorded events and let the treatment policy act at visits."""
    coded, recorded, dropped, entry_step, end_years = (
        chart.coded,
        chart.recorded,
        chart.dropped,
        chart.entry_step,
        chart.end_years,
    )
    visit_rate, log, treatment_rate_scale, starts_at_visits = (
        chart.visit_rate,
        chart.log,
        chart.treatment_rate_scale,
        chart.starts_at_visits,
    )
    # Prevalent or pre-entry onsets are recorded at entry as history.
    entering = np.flatnonzero(entry_step == s)
    for o in (T2D, CKD):
        hist = entering[(onset_time[entering, o] <= st.entry[entering]) & ~dropped[entering, o]]
        log.add(hist, st.entry[hist], CODE_ID[OUTCOMES[list(OUTCOMES)[o]][0]])
        recorded[hist, o] = True

    # Outcome events at their own times (an MI or stroke comes with a hospital admission).
    for o, name in enumerate(OUTCOMES):
        t = t0 + clock[:, o]
        idx = np.flatnonzero(occurs[:, o] & ~dropped[:, o] & _observed(t, st, end_years))
        if o in (MI, STROKE):
            log.add(idx, t[idx], CODE_ID[VISIT_CODES["inpatient"][0]])
        log.add(idx, t[idx], CODE_ID[OUTCOMES[name][0]])
        recorded[idx, o] = True

    # Outpatient visits: informative (sicker -> more often); always one at entry.
    sick = 0.35 * (z[:, 0] + z[:, 1] + z[:, 3]) / np.sqrt(3.0) + 0.15 * (age - 60.0) / 10.0
    rate = visit_rate * np.exp(sick + 0.25 * coded.sum(axis=1) / 2.0)
    at_entry = entry_step == s
    visit = alive & ((rng.random(alive.size) < 1.0 - np.exp(-rate * DT)) | at_entry)
    vt = np.where(at_entry, st.entry, t0 + rng.random(alive.size) * DT)
    visit &= (vt < t0 + t_death) & _observed(vt, st, end_years)
    idx = np.flatnonzero(visit)
    if idx.size == 0:
        return
    vt = vt[idx]
    first_visit = at_entry[idx] & st.smoker[idx] & st.smoking_recorded[idx]
    start = _visit(
        idx,
        vt,
        z,
        age,
        on,
        coded,
        recorded,
        rng,
        log,
        first_visit=first_visit,
        rate_scale=treatment_rate_scale if starts_at_visits else None,
    )
    on[idx] |= start  # acts from the next step on


def _visit(idx, vt, z, age, on, coded, recorded, rng, log, *, first_visit=None, rate_scale=1.0, rx_delay=0.0):
    """An outpatient encounter of subjects ``idx`` at ``vt``: readings, new diagnoses, prescriptions.

    ``rate_scale`` None: no new treatment is started here. Otherwise the confounded policy may start
    treatments; returns the (len(idx), D) start mask. Prescriptions are written ``rx_delay`` years
    after the encounter's other events.
    """
    log.add(idx, vt, CODE_ID[VISIT_CODES["outpatient"][0]])
    if first_visit is not None:
        log.add(idx[first_visit], vt[first_visit], CODE_ID[SMOKER_CODE[0]])
    mean = expected_readings(z[idx], age[idx])
    read = readings(z[idx], age[idx], rng, expected=mean)
    u = rng.random((idx.size, 4))
    measured = {
        "sbp": np.ones(idx.size, bool),
        "dbp": np.ones(idx.size, bool),
        "bmi": np.ones(idx.size, bool),
        "hba1c": u[:, 0] < 0.25 + 0.45 * (coded[idx, 2] | recorded[idx, T2D]),
        "glucose": u[:, 1] < 0.45,
        "ldl": u[:, 2] < 0.3 + 0.3 * on[idx, 1],
        "egfr": u[:, 3] < 0.35 + 0.3 * (coded[idx, 0] | recorded[idx, CKD]),
    }
    for name, (code, _, _) in MEASUREMENTS.items():
        m = measured[name]
        log.add(idx[m], vt[m], CODE_ID[code], np.round(read[name][m], 1), expected=mean[name][m])

    hits = np.stack(
        [
            measured["sbp"] & (read["sbp"] >= 140.0),
            measured["ldl"] & (read["ldl"] >= 160.0),
            measured["hba1c"] & (read["hba1c"] >= 5.7) & (read["hba1c"] < 6.5),
            measured["bmi"] & (read["bmi"] >= 30.0),
        ],
        axis=1,
    )
    new_dx = hits & ~coded[idx]
    for j, (code, _) in enumerate(THRESHOLD_DIAGNOSES.values()):
        log.add(idx[new_dx[:, j]], vt[new_dx[:, j]], CODE_ID[code])
    coded[idx] |= new_dx

    start = np.zeros((idx.size, len(TREATMENT_NAMES)), bool)
    if rate_scale is not None:
        # Confounded policy: what was just observed (and past outcomes) drives treatment starts.
        p = np.stack(
            [
                np.where(recorded[idx, T2D], 0.5, np.where(measured["hba1c"] & (read["hba1c"] >= 6.0), 0.2, 0.0)),
                np.where(
                    measured["ldl"] & (read["ldl"] >= 160.0),
                    0.35,
                    np.where(measured["ldl"] & (read["ldl"] >= 130.0) & (age[idx] >= 55.0), 0.15, 0.0),
                )
                + 0.6 * recorded[idx, MI],
                np.where(read["sbp"] >= 140.0, 0.35, 0.0) + 0.5 * recorded[idx, STROKE],
            ],
            axis=1,
        )
        if rate_scale != 1.0:
            p = np.minimum(p * rate_scale, 1.0)
        start = ~on[idx] & (rng.random(p.shape) < p)
    for d, name in enumerate(TREATMENT_NAMES):
        # a prescription at every visit while on the drug (start included)
        given = on[idx, d] | start[:, d]
        log.add(idx[given], vt[given] + rx_delay, CODE_ID[TREATMENTS[name][0]])
    return start
