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
