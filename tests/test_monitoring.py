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


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="needs Chromium (Debian package 'chromium'); .ci/run installs it")
def test_report_renders_in_headless_chromium(panels, tmp_path):
    res = run_monitor(
        panels / "reference", panels / "lab", out=tmp_path / "r", reference_as_of=AS_OF, current_as_of=AS_OF
    )
    proc = subprocess.run(
        [
            _chromium(),
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
