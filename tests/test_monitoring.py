"""Production monitoring: planted shifts are flagged in their group, no shift flags nothing, small cells
never show, the report is atomic and renders, the verdict sets the exit code."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from twinml._validation import ConfigError
from twinml.cli import app
from twinml.monitoring import MonitorPolicy, compare_panels, profile_events, profile_meds, run_monitor
from twinml.simulate import simulate

from .conftest import NEEDS_CHROMIUM, chromium

AS_OF = "2019-06-30"
N = 3000
SCENARIOS = {
    "none": None,
    "visits": {"from_year": 6, "visit_rate_ratio": 0.6},
    "lab": {"from_year": 6, "lab_offset": {"hba1c": 0.3}},
    "recode": {"from_year": 6, "recode": {"RxNorm/83367": "RxNorm/617312"}},  # a new atorvastatin code
}


@pytest.fixture(scope="module")
def panels(tmp_path_factory):
    """A reference panel (seed 1) and current panels (seed 2) with each planted shift, as MEDS datasets."""
    root = tmp_path_factory.mktemp("monitor")
    simulate(n_subjects=N, seed=1).write(root / "reference")
    for name, drift in SCENARIOS.items():
        simulate(n_subjects=N, seed=2, drift=drift).write(root / name)
    return root


@pytest.fixture(scope="module")
def reference(panels):
    return profile_meds(panels / "reference", AS_OF)


def _flagged(reference, current_dir, policy=None):
    comparison = compare_panels(reference, profile_meds(current_dir, AS_OF), policy or MonitorPolicy())
    return {g["group"]: g["flagged"] for g in comparison["groups"] if g["flagged"]}, comparison


def test_without_a_shift_nothing_is_flagged(panels, reference):
    flagged, comparison = _flagged(reference, panels / "none")
    assert flagged == {}
    assert comparison["unseen_codes"]["rate"] == 0.0
    assert len(comparison["features"]) >= 30  # demographics, activity, labs and codes were all tested


@pytest.mark.parametrize(
    ("scenario", "group", "feature"),
    [
        ("visits", "activity", "visit days in window"),
        ("lab", "labs", "LOINC/4548-4"),
        ("recode", "codes", "RxNorm/617312"),
    ],
)
def test_each_planted_shift_is_flagged_in_its_group(panels, reference, scenario, group, feature):
    flagged, comparison = _flagged(reference, panels / scenario)
    assert feature in flagged.get(group, []), flagged
    if scenario == "lab":  # an assay offset moves one lab and nothing else
        assert flagged == {"labs": ["LOINC/4548-4"]}
    if scenario == "recode":  # the new code was never seen before
        assert comparison["unseen_codes"]["codes"][0]["code"] == "RxNorm/617312"
        assert comparison["unseen_codes"]["rate"] > 0


def test_a_large_panel_needs_a_large_shift_as_well_as_a_small_p_value(panels, reference):
    """An effect under min_psi is not flagged however small its p-value."""
    _, comparison = _flagged(reference, panels / "lab", MonitorPolicy(min_psi=10.0))
    hba1c = next(f for f in comparison["features"] if f["feature"] == "LOINC/4548-4")
    assert hba1c["p_adjusted"] < 0.01 and not hba1c["flagged"]


def _events(rows):
    df = pd.DataFrame(rows, columns=["subject_id", "time", "code", "numeric_value"])
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[us]")
    return pa.Table.from_pandas(df.astype({"numeric_value": "float32"}), preserve_index=False)


def test_the_profile_is_the_window_of_the_living_panel():
    rows = [
        (1, None, "GENDER//F", None),
        (1, "1960-06-30", "MEDS_BIRTH", None),
        (1, "2019-01-10", "VISIT", None),
        (1, "2019-01-10", "LAB/A", 5.0),
        (1, "2019-03-01", "LAB/A", 7.0),
        (1, "2017-01-01", "LAB/A", 100.0),  # before the window
        (2, "1950-01-01", "MEDS_BIRTH", None),
        (2, "2019-02-01", "VISIT", None),
        (2, "2019-05-01", "MEDS_DEATH", None),  # died before the as-of time: not in the panel
        (3, "1970-01-01", "MEDS_BIRTH", None),
        (3, "2016-01-01", "VISIT", None),  # no record in the window: not in the panel
    ]
    later = [(1, "2019-08-01", "LAB/A", 50.0), (1, "2019-09-01", "NEW", None)]
    p = profile_events(_events(rows), AS_OF)
    assert p.n_subjects == 1
    assert p.numeric[("demographics", "age")] == pytest.approx([59.0], abs=0.01)
    assert p.numeric[("activity", "events in window")].tolist() == [3.0]
    assert p.numeric[("activity", "visit days in window")].tolist() == [2.0]
    assert p.numeric[("labs", "LAB/A")].tolist() == [6.0]
    assert p.categorical[("demographics", "GENDER")].tolist() == ["F"]
    assert p.code_subjects.to_dict() == {"LAB/A": 1, "VISIT": 1}
    # the leakage rule: events after the as-of time change nothing
    q = profile_events(_events(rows + later), AS_OF)
    assert q.numeric.keys() == p.numeric.keys()
    assert all(np.array_equal(q.numeric[k], p.numeric[k]) for k in p.numeric)
    assert q.code_events.to_dict() == p.code_events.to_dict() and "NEW" not in q.vocabulary


def _with_tiny_race(src, dst, n=5):
    """Copy a MEDS dataset, moving ``n`` subjects of the window's panel into a new race group ``Tiny``."""
    shutil.copytree(src, dst)
    files = sorted((dst / "data").rglob("*.parquet"))
    table = pq.read_table(files[0])
    df = table.to_pandas()
    recent = df.loc[df["time"] > pd.Timestamp("2019-01-01"), "subject_id"].unique()[:n]
    hit = df["code"].astype(str).str.startswith("RACE//") & df["subject_id"].isin(recent)
    df["code"] = df["code"].astype(str).where(~hit, "RACE//Tiny")
    pq.write_table(pa.Table.from_pandas(df, schema=table.schema, preserve_index=False), files[0])


def test_a_group_of_five_never_appears_as_a_number(panels, tmp_path):
    _with_tiny_race(panels / "none", tmp_path / "tiny")
    res = run_monitor(
        panels / "reference", tmp_path / "tiny", out=tmp_path / "report", current_as_of=AS_OF, reference_as_of=AS_OF
    )
    race = next(f for f in res.report["features"] if f["feature"] == "RACE")
    tiny = race["bins"].index("Tiny")
    assert race["current_counts"][tiny] is None and race["reference_counts"][tiny] == 0
    assert race["current_counts"].count(None) == 2  # and the next smallest: the total would give it away
    assert all(
        c is None or c >= 10 for f in res.report["features"] for c in f["current_counts"] + f["reference_counts"] if c
    )
    saved = json.loads((tmp_path / "report" / "monitor.json").read_text())
    assert saved["features"] == res.report["features"]


def test_cli_exit_code_follows_the_gates_and_the_report_is_atomic(panels, tmp_path):
    runner = CliRunner()
    base = ["monitor", "--reference", str(panels / "reference"), "--reference-as-of", AS_OF, "--current-as-of", AS_OF]
    ok = runner.invoke(app, [*base, "--current", str(panels / "none"), "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["monitor.json", "report.html"]
    bad = runner.invoke(app, [*base, "--current", str(panels / "visits"), "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "activity" in bad.output
    again = runner.invoke(app, [*base, "--current", str(panels / "none"), "--out", str(tmp_path / "ok")])
    assert again.exit_code == 2 and "exists" in again.output
    with pytest.raises(ConfigError, match="neither a MEDS dataset directory nor a scores"):
        run_monitor(panels / "reference", tmp_path / "missing", out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason=NEEDS_CHROMIUM)
def test_report_renders_in_headless_chromium(panels, tmp_path):
    res = run_monitor(
        panels / "reference", panels / "lab", out=tmp_path / "r", reference_as_of=AS_OF, current_as_of=AS_OF
    )
    proc = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            (res.out_dir / "report.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "twinml monitoring report" in proc.stdout and "FAILED" in proc.stdout
    assert proc.stdout.count("<img") == 1 and "LOINC/4548-4" in proc.stdout


# ---- performance over time and recalibration, against a real registry --------------------------------


@pytest.fixture(scope="module")
def degraded(tmp_path_factory):
    """A population whose T2D hazard triples from 2014; LightGBM trained on the rows before 2013 and
    registered; the held-out half scored every year."""
    from twinml.config import load_config
    from twinml.pipeline import train
    from twinml.scoring import score

    root = tmp_path_factory.mktemp("degraded")
    knobs = {"from_year": 4, "hazard_ratio": {"t2d": 3.0}}
    simulate(n_subjects=4000, seed=11, years=12, drift=knobs, split_fractions=(0.45, 0.05, 0.5)).write(root / "meds")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    config = {
        "name": "watch",
        "data": {"source": "meds", "path": str(root / "meds")},
        "task": {
            "name": "t2d",
            "outcomes": {"t2d": {"codes": ["SNOMED/44054006"]}},
            "horizons_days": [365],
            "prediction_times": {"strategy": "yearly", "start": "2012-01-01", "every_days": 91},
            "split": {"strategy": "temporal", "train_before": "2013-01-01", "test_from": "2014-01-01"},
        },
        "model": {"kind": "lightgbm"},
        "evaluation": {"splits": ["held_out_same_period"], "n_bootstrap": 0},
        "tracking": {"experiment": "watch", "register_as": "t2d-watch"},
    }
    train(load_config(config), tracking_uri=uri)
    history = []
    for year in range(2012, 2021, 2):
        history.append(root / f"scores-{year}.parquet")
        score("models:/t2d-watch/1", root / "meds", f"{year}-07-01", history[-1], tracking_uri=uri)
    return root, uri, history


def test_performance_over_time_shows_the_planted_drop_and_recommends_recalibration(degraded, tmp_path):
    import mlflow

    root, uri, history = degraded
    policy = MonitorPolicy(period="quarter", n_bootstrap=50)
    res = run_monitor(
        history=history, outcomes=root / "meds", model_uri="models:/t2d-watch/1", policy=policy,
        tracking_uri=uri, out=tmp_path / "perf",
    )  # fmt: skip
    rows = {r["period"]: r for r in res.report["performance"]["rows"]}
    assert list(rows) == ["2012Q3", "2014Q3", "2016Q3", "2018Q3", "2020Q3"]
    before, after = rows["2012Q3"], rows["2018Q3"]
    assert before["oe_lo"] <= 1.25 and before["oe_hi"] >= 0.8  # calibrated before the shift
    assert after["oe_lo"] > 1.25  # the tripled hazard: credibly more events than predicted
    assert after["auroc_lo"] < after["auroc"] < after["auroc_hi"]
    (rec,) = res.report["performance"]["recommendations"]
    assert rec["action"] == "recalibrate" and rec["period"] == "2020Q3"
    assert not res.passed and any(g["name"].startswith("O/E t2d_365d") and not g["passed"] for g in res.report["gates"])
    version = mlflow.MlflowClient(tracking_uri=uri).get_model_version("t2d-watch", "1")
    assert version.tags["twinml.monitor.passed"] == "false"
    assert "Performance over time" in (tmp_path / "perf" / "report.html").read_text()
    (first, *_) = res.report["performance"]["attrition"]  # what became of each file's scored subjects
    assert first["not_in_outcomes"] == 0 and first["scored"] >= first["eligible"] >= first["labelled t2d_365d"] > 0


def test_recalibration_registers_a_new_version_that_restores_calibration(degraded):
    import mlflow

    from twinml.cohort import TaskDefinition
    from twinml.data import read_meds
    from twinml.models import RecalibratedModel, cloglog_update
    from twinml.monitoring import label_scores, recalibrate
    from twinml.scoring import score
    from twinml.tracking import load_registered_model

    root, uri, history = degraded
    # the last year whose outcomes are all in by the 2019-07-01 scoring
    report = recalibrate("models:/t2d-watch/1", root / "meds", start="2017-07-01", end="2018-06-30", tracking_uri=uri)
    assert report.version == "2" and report.parent_version == "1"
    (update,) = report.updates
    assert update["hazard_ratio"] > 1.5 and abs(update["oe_after"] - 1.0) < 0.05
    tags = mlflow.MlflowClient(tracking_uri=uri).get_model_version("t2d-watch", "2").tags
    assert tags["twinml.recalibrated_from"] == "models:/t2d-watch/1"
    assert tags["twinml.recalibration.window"] == "2017-07-01..2018-06-30"
    loaded = load_registered_model("models:/t2d-watch/2", tracking_uri=uri)
    assert isinstance(loaded.model, RecalibratedModel)
    events = read_meds(root / "meds")
    index = pd.DataFrame(
        {"subject_id": events["subject_id"].unique()[:50], "prediction_time": pd.Timestamp("2019-07-01")}
    )
    base = loaded.model.base
    np.testing.assert_allclose(
        loaded.model.predict_risk(events, index)["t2d_365d"],
        cloglog_update(base.predict_risk(events, index)["t2d_365d"].to_numpy(), update["a"], 1.0),
    )
    raw = loaded.model.predict_risk(events, index, calibrated=False)  # the audit's "before calibration"
    pd.testing.assert_frame_equal(raw, base.predict_risk(events, index, calibrated=False))
    assert not hasattr(loaded.model, "predict_risk_curve")  # nothing hands out un-updated risks
    # judged after the window, on the later scores of the same panel by both versions (pooled: ~200 events)
    task = TaskDefinition.model_validate(
        {"name": "t2d", "outcomes": {"t2d": {"codes": ["SNOMED/44054006"]}}, "horizons_days": [365]}
    )
    oe = {}
    for v in ("1", "2"):
        files = [root / f"v{v}-{d}.parquet" for d in ("2019-01-01", "2019-07-01", "2020-01-01", "2020-07-01")]
        for f in files:
            score(f"models:/t2d-watch/{v}", root / "meds", f.stem[3:], f, tracking_uri=uri)
        rows = label_scores(files, events, task)
        oe[v] = rows["outcome"].sum() / rows["risk"].sum()
    assert oe["1"] > 1.5 and 0.7 < oe["2"] < 1.3 and abs(oe["2"] - 1.0) < abs(oe["1"] - 1.0) / 2, oe


def test_the_cloglog_update_recovers_a_hazard_ratio():
    from twinml.models import cloglog_update, fit_cloglog

    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.2, 200_000)
    y = rng.random(p.size) < 1 - (1 - p) ** 2  # the cumulative hazard doubled
    a, b = fit_cloglog(y, p)
    assert np.exp(a) == pytest.approx(2.0, rel=0.03) and b == 1.0
    assert cloglog_update(np.array([0.1]), np.log(2.0), 1.0)[0] == pytest.approx(0.19)
    curve = cloglog_update(np.array([0.05, 0.1, 0.2]), 0.3, 0.7)
    assert np.all(np.diff(curve) > 0)  # a monotone map: risk curves stay ordered by horizon


def test_output_drift_compares_two_scores_files(degraded, tmp_path):
    root, _, history = degraded
    table = pq.read_table(history[-1])
    risk = table.column("t2d_365d").to_numpy()
    doubled = table.set_column(table.schema.get_field_index("t2d_365d"), "t2d_365d", pa.array(np.minimum(risk * 2, 1)))
    pq.write_table(doubled.replace_schema_metadata(table.schema.metadata), tmp_path / "doubled.parquet")
    same = run_monitor(history[-1], history[-1])
    assert same.passed and [g["group"] for g in same.report["groups"]] == ["predicted risk"]
    from twinml.scoring import read_score_metadata

    assert same.report["current"]["subjects"] == read_score_metadata(history[-1])["scored"] > 0
    moved = run_monitor(history[-1], tmp_path / "doubled.parquet")
    assert moved.report["groups"][0]["flagged"] == ["t2d_365d"] and moved.report["unseen_codes"] is None
    assert [g["name"] for g in moved.report["gates"] if not g["passed"]] == ["no output drift"]
    with pytest.raises(ConfigError, match="was scored as of"):
        run_monitor([root / "meds", history[0]], history[-1], reference_as_of="2001-01-01")


def test_recalibrate_cli_refuses_an_empty_window(degraded):
    root, uri, _ = degraded
    args = ["recalibrate", "--model", "models:/t2d-watch/1", "--events", str(root / "meds"), "--tracking-uri", uri]
    res = CliRunner().invoke(app, [*args, "--from", "2018-01-01", "--to", "2017-01-01"])
    assert res.exit_code == 2 and "must come before its end" in res.output


def test_secondary_suppression_hides_the_cell_a_total_would_reveal():
    from twinml.monitoring._run import suppress_counts

    assert suppress_counts([5, 900, 40], 10) == [None, 900, None]
    assert suppress_counts([5, 3, 900], 10) == [None, None, 900]
    assert suppress_counts([0, 900, 40], 10) == [0, 900, 40]
    assert suppress_counts([4, 0], 10) == [None, 0]


def test_the_shipped_policy_is_the_defaults_and_errors_name_the_key(tmp_path):
    from pathlib import Path

    from twinml.monitoring import load_monitor_policy

    shipped = Path(__file__).resolve().parents[1] / "configs" / "monitor_policy.yaml"
    assert load_monitor_policy(shipped) == MonitorPolicy()
    with pytest.raises(ConfigError, match="alpha: .*between 0 and 1"):
        load_monitor_policy({"alpha": 2})
    bad = tmp_path / "bad.yaml"
    bad.write_text("alpha: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line 2, column 1\)"):
        load_monitor_policy(bad)


def test_with_the_model_the_report_says_which_codes_it_cannot_read(degraded):
    import mlflow

    root, uri, _ = degraded
    res = run_monitor(
        root / "meds", root / "meds", model_uri="models:/t2d-watch/1", tracking_uri=uri,
        reference_as_of="2012-12-31", current_as_of="2020-06-30",
    )  # fmt: skip
    unseen = res.report["unseen_codes"]
    assert unseen["rate"] == 0.0  # the same population: no code is new to the reference
    assert 0.0 <= unseen["outside_model_vocabulary"] < 0.05
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(res.mlflow_run_id)
    assert run.data.tags["twinml.monitor.model_version"] == "1"
    assert {"monitor/flagged_features", "monitor/unseen_code_rate"} <= set(run.data.metrics)
    assert not any("subject" in k for k in run.data.params)  # aggregates only


def test_retrain_only_when_the_drop_is_credible_against_both_periods_uncertainty():
    from twinml.monitoring._performance import recommendations

    def period(name, auroc, lo, hi, oe=(1.0, 0.9, 1.1)):
        return {"label": "t2d", "period": name, "suppressed": False, "auroc": auroc, "auroc_lo": lo,
                "auroc_hi": hi, "observed_expected": oe[0], "oe_lo": oe[1], "oe_hi": oe[2]}  # fmt: skip

    def action(*rows):
        return recommendations(list(rows), min_oe=0.8, max_oe=1.25, max_auroc_drop=0.05)[0]["action"]

    shifted = (2.0, 1.7, 2.3)
    # a wide first period: the drop of 0.14 could be 0.03 -> recalibrate (the incidence moved)
    assert action(period("2012Q3", 0.73, 0.65, 0.82), period("2020Q3", 0.59, 0.51, 0.65, shifted)) == "recalibrate"
    # tight intervals: the same drop is credibly more than 0.05 -> retrain, whatever O/E says
    assert action(period("2012Q3", 0.73, 0.72, 0.74), period("2020Q3", 0.59, 0.58, 0.60, shifted)) == "retrain"
    assert action(period("2012Q3", 0.73, 0.72, 0.74), period("2020Q3", 0.72, 0.71, 0.73)) == "none"
    nan = float("nan")  # no bootstrap: no claim of a drop
    assert action(period("2012Q3", 0.73, nan, nan), period("2020Q3", 0.50, nan, nan, shifted)) == "recalibrate"
