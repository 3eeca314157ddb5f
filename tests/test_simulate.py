import glob

import meds
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from twinml._validation import ConfigError
from twinml.cohort import TaskDefinition, build_labels
from twinml.simulate import simulate
from twinml.simulate._truth import cumulative_incidence


def test_output_validates_against_the_meds_schemas(meds_dir):
    files = glob.glob(str(meds_dir / "data" / "*" / "*.parquet"))
    assert {f.split("/")[-2] for f in files} == {"train", "tuning", "held_out"}
    for f in files:
        meds.DataSchema.validate(pq.read_table(f))
    meds.CodeMetadataSchema.validate(pq.read_table(meds_dir / "metadata" / "codes.parquet"))
    meds.SubjectSplitSchema.validate(pq.read_table(meds_dir / "metadata" / "subject_splits.parquet"))


def test_deterministic_by_seed():
    a, b = simulate(n_subjects=300, seed=5), simulate(n_subjects=300, seed=5)
    assert a.events.equals(b.events)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not simulate(n_subjects=300, seed=6).events.equals(a.events)


def test_codes_carry_their_namespaces(small_cohort):
    codes = set(small_cohort.events.column("code").unique().to_pylist())
    assert {"MEDS_BIRTH", "LOINC/4548-4", "SNOMED/44054006", "RxNorm/6809", "GENDER//F"} <= codes
    assert all(
        c.split("/")[0]
        in {"LOINC", "SNOMED", "RxNorm", "MEDS_BIRTH", "MEDS_DEATH", "GENDER", "RACE", "SDOH", "OBSERVATION_PERIOD"}
        for c in codes
    )


def test_cumulative_incidence_matches_monte_carlo():
    """The closed form is the law the simulator draws from: check it by simulation."""
    rng = np.random.default_rng(0)
    lam = np.array([[[0.3, 0.2, 0.1, 0.05, 0.4]] * 6], dtype=np.float32)  # 6 steps, per-year hazards
    lam[0, 3:, 1] = 0.6  # a hazard that changes mid-way
    exact = cumulative_incidence(lam, [90, 180])[0]  # (5, 2)
    n = 400_000
    dt = 1 / 12
    for h_i, h in enumerate([90, 180]):
        steps = h * 12 / 365
        first = np.full((n, 5), np.inf)
        alive = np.ones(n, bool)
        for s in range(int(np.ceil(steps))):
            width = min(1.0, steps - s) * dt
            clock = rng.exponential(size=(n, 5)) / lam[0, s]
            t_death = np.where(clock[:, 4] < width, clock[:, 4], np.inf)
            hit = alive[:, None] & (clock < width) & (clock <= t_death[:, None]) & np.isinf(first)
            first[hit] = s
            alive &= ~(clock[:, 4] < width)
        mc = np.isfinite(first).mean(axis=0)
        np.testing.assert_allclose(mc, exact[:, h_i], atol=4e-3)


def test_truth_is_calibrated_against_realised_labels():
    """True risks average to the observed label rate (the oracle is honest)."""
    sim = simulate(n_subjects=6000, seed=2)
    task = TaskDefinition(
        name="t",
        outcomes={"mi": {"codes": ["SNOMED/22298006"]}, "death": {"codes": ["MEDS_DEATH"]}},
        horizons_days=[365],
        prediction_times={"start": "2012-01-01"},
        split={"strategy": "random"},
    )
    labels = build_labels(sim.events.to_pandas(), task=task).labels
    truth = sim.truth[sim.truth["plan"] == "observed"]
    m = labels.merge(truth, on=["subject_id", "prediction_time"], suffixes=("", "_true"))
    assert len(m) == len(labels)
    for c in ("mi_365d", "death_365d"):
        k = m[c].notna()
        observed, expected = m.loc[k, c].astype(float).mean(), m.loc[k, f"{c}_true"].mean()
        se = np.sqrt(expected * (1 - expected) / k.sum())
        assert abs(observed - expected) < 4 * se, (c, observed, expected)


def test_truth_is_monotone_in_horizon_and_plans_act_where_they_should(small_cohort):
    t = small_cohort.truth
    for o in ("t2d", "mi", "stroke", "ckd", "death"):
        a, b, c, d = (t[f"{o}_{h}d"].to_numpy() for h in (90, 180, 365, 730))
        ok = ~np.isnan(a)
        assert (a[ok] <= b[ok] + 1e-7).all() and (b[ok] <= c[ok] + 1e-7).all() and (c[ok] <= d[ok] + 1e-7).all()
    mean = t.groupby("plan", observed=True)[["mi_365d", "t2d_365d"]].mean()
    assert mean.loc["start_statin", "mi_365d"] < mean.loc["no_new_treatment", "mi_365d"]
    assert mean.loc["start_metformin", "t2d_365d"] < mean.loc["no_new_treatment", "t2d_365d"]


def test_inert_treatments_give_identical_plans():
    t = simulate(n_subjects=300, seed=1, treatment_effect_scale=0.0).truth
    a = t[t["plan"] == "no_new_treatment"].filter(like="_365d").to_numpy()
    b = t[t["plan"] == "start_statin"].filter(like="_365d").to_numpy()
    np.testing.assert_array_equal(a, b)


def test_underdiagnosis_knob_hides_diagnoses_in_the_group():
    kw = dict(n_subjects=4000, seed=3, bias_group="RACE//Black")
    fair, biased = simulate(**kw), simulate(**kw, underdiagnosis_rate=0.8)

    def recorded_t2d_rate(sim):
        ev = sim.events.to_pandas()
        group = sim.subjects.loc[sim.subjects["in_bias_group"], "subject_id"]
        t2d = ev[(ev["code"] == "SNOMED/44054006") & ev["subject_id"].isin(group)]["subject_id"].nunique()
        return t2d / len(group)

    assert recorded_t2d_rate(biased) < 0.4 * recorded_t2d_rate(fair)


def test_bad_arguments_get_clear_errors():
    with pytest.raises(
        ConfigError, match=r"The 'n_subjects' parameter of simulate must be a positive int. Got -3 instead."
    ):
        simulate(n_subjects=-3)
    with pytest.raises(ConfigError, match="bias knob is set but 'bias_group' is not"):
        simulate(n_subjects=10, underdiagnosis_rate=0.5)
    with pytest.raises(ValueError, match="'bias_group' must be one of"):
        simulate(n_subjects=10, bias_group="RACE//Martian", underdiagnosis_rate=0.5)


def test_drift_knobs_shift_what_they_name_from_their_date_and_nothing_before():
    """Process shifts move the truth too; recording shifts only what is written; before the date nothing moves."""
    base = simulate(n_subjects=1500, seed=4)
    knobs = {
        "from_year": 5,
        "hazard_ratio": {"t2d": 3.0},
        "lab_offset": {"hba1c": 0.5},
        "recode": {"RxNorm/83367": "RxNorm/617312"},
    }
    drifted = simulate(n_subjects=1500, seed=4, drift=knobs)
    ev0, ev1 = base.events.to_pandas(), drifted.events.to_pandas()
    cut = pd.Timestamp("2015-01-01")  # start 2010-01-01 + 5 years
    early0, early1 = ev0[ev0["time"] < cut - pd.Timedelta(days=2)], ev1[ev1["time"] < cut - pd.Timedelta(days=2)]
    order = lambda ev: ev.sort_values(["subject_id", "time", "code"], kind="stable").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(order(early0), order(early1))  # (the split draws follow the process, so rows move)
    late = ev1[ev1["time"] >= cut]
    assert (late["code"] == "RxNorm/83367").sum() == 0 and (late["code"] == "RxNorm/617312").sum() > 0
    hba1c = lambda ev: ev.loc[(ev["time"] >= cut) & (ev["code"] == "LOINC/4548-4"), "numeric_value"].mean()  # noqa: E731
    assert hba1c(ev1) - hba1c(ev0) > 0.3  # (the hazard change also moves who is measured: not exactly 0.5)

    def truth(cohort, year):
        t = cohort.truth
        return t.loc[(t["plan"] == "observed") & (t["prediction_time"].dt.year == year), "t2d_365d"].mean()

    assert truth(drifted, 2013) == pytest.approx(truth(base, 2013))  # the truth before the shift's horizon is untouched
    assert truth(drifted, 2016) > 2.0 * truth(base, 2016)
    assert drifted.config["drift"]["hazard_ratio"] == {"t2d": 3.0} and "drift" not in base.config
    with pytest.raises(ConfigError, match="hazard_ratio: unknown outcome 'diabetes'"):
        simulate(n_subjects=10, drift={"from_year": 2, "hazard_ratio": {"diabetes": 2.0}})
    with pytest.raises(ConfigError, match="recode: the new code 'SNOMED/22298006' is already a simulator code"):
        simulate(n_subjects=10, drift={"from_year": 2, "recode": {"RxNorm/83367": "SNOMED/22298006"}})
    with pytest.raises(ConfigError, match="from_year"):
        simulate(n_subjects=10, drift={"visit_rate_ratio": 2.0})
