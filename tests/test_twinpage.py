"""The twin page: one patient's record, risk, trajectories, plans and drivers on one offline HTML page."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from twinml.cli import app
from twinml.data import read_meds

from .conftest import NEEDS_CHROMIUM, TASK, chromium

SECTIONS = ("record", "risk", "trajectories", "whatif", "drivers")
FHIR_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "fhir"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A small record model (with its trajectory head) trained through the pipeline and registered."""
    from twinml.config import load_config
    from twinml.pipeline import train

    tmp = tmp_path_factory.mktemp("twinpage")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = load_config(
        {
            "name": "page",
            "data": {"path": str(tmp / "meds"), "simulator": {"n_subjects": 600}},
            "task": TASK,
            "evaluation": {"n_bootstrap": 10, "splits": ["held_out"]},
            "model": {
                "kind": "record",
                "params": {"d_model": 16, "max_epochs": 2, "batch_size": 32, "lr": 3e-3, "n_threads": 1},
                "calibration": "platt",
            },
            "tracking": {"uri": uri, "experiment": "twinpage-tests", "register_as": "page"},
        }
    )
    res = train(cfg)
    return tmp, uri, res


def _invoke(*args):
    return CliRunner().invoke(app, ["twin", *map(str, args)], env={"COLUMNS": "160"})


@pytest.fixture(scope="module")
def pages(registered, tmp_path_factory):
    """``twinml twin`` for a simulated patient and for a Synthea patient (the bundled FHIR sample, scored
    by the simulator-trained model: codes it never saw, a decades-long record, labs it does forecast)."""
    from twinml.ingest import ingest

    tmp, uri, res = registered
    synthea = tmp_path_factory.mktemp("synthea") / "meds"
    ingest("fhir", FHIR_SAMPLE, synthea, reference_time="2025-01-02")
    sim_id = int(res.cohort.labels.query("split == 'held_out'")["subject_id"].iloc[3])
    out = {}
    for name, meds, sid in (
        ("sim", tmp / "meds", sim_id),
        ("synthea", synthea, int(read_meds(synthea)["subject_id"].iloc[0])),
    ):
        page = tmp / f"page-{name}"
        r = _invoke(
            "--model", "models:/page/1", "--events", meds, "--subject", sid, "--out", page, "--tracking-uri", uri
        )
        out[name] = (page, meds, sid, r)
    return out


def _offline(text):
    """Every src/href is a data: URI or an in-page anchor, and the page forbids fetching anything else."""
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]?([^'" >]+)""", text, flags=re.I)
    assert all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith("data:")][:3]
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "<script" not in text.lower()


def test_cli_writes_a_page_whose_numbers_are_the_models(registered, pages):
    tmp, uri, res = registered
    out, meds, sid, r = pages["sim"]
    assert r.exit_code == 0, r.output
    assert "drivers: explained 3 labels" in r.output
    text = (out / "twin.html").read_text()
    for key in SECTIONS:
        assert f"<section id='{key}'>" in text
    assert text.count("data:image/png;base64,") >= 5  # timeline, labs, risk, trajectories, drivers
    _offline(text)

    events = read_meds(meds)
    mine = events[events["subject_id"] == sid].reset_index(drop=True)
    t = mine["time"].max()
    index = pd.DataFrame({"subject_id": [sid], "prediction_time": [t]})
    expect = res.model.predict_risk(mine, index)
    risk = pd.read_csv(out / "risk.csv")
    assert list(risk["label"]) == res.model.label_columns_
    np.testing.assert_allclose(risk["risk"], expect[res.model.label_columns_].to_numpy()[0], rtol=1e-6)
    # each band is the Wilson interval of the risk's tenth on the tuning rows: ordered, and inside [0, 1]
    assert (risk["band_lo"] <= risk["band_hi"]).all() and risk["band_lo"].ge(0).all() and risk["band_hi"].le(1).all()
    bands = res.model.risk_bands_
    for row in risk.itertuples():
        lo, hi = bands.interval(row.label, [row.risk])
        assert (lo[0], hi[0]) == pytest.approx((row.band_lo, row.band_hi))
    traj = pd.read_csv(out / "trajectory.csv")
    want = res.model.predict_trajectory(mine, index)
    assert list(traj["code"]) == list(want["code"])
    np.testing.assert_allclose(
        traj[["forecast", "lower_80", "upper_80"]], want[["forecast", "lower_80", "upper_80"]], rtol=1e-5
    )
    drivers = pd.read_csv(out / "drivers.csv")
    assert set(drivers["label"]) == {"t2d_730d", "mi_730d", "death_730d"}  # each outcome at its longest horizon
    assert drivers.groupby("outcome").size().max() <= 8 and set(drivers["direction"]) <= {"raises", "lowers"}
    assert set(drivers["code"]) <= set(mine["code"].astype(str))  # only codes of this patient's record
    assert not (out / "whatif.csv").exists() and "compares no treatment plans" in text


def test_a_synthea_patient_gets_a_page_too(pages):
    out, meds, sid, r = pages["synthea"]
    assert r.exit_code == 0, r.output
    text = (out / "twin.html").read_text()
    for key in SECTIONS:
        assert f"<section id='{key}'>" in text
    assert "SNOMED" in text and "LOINC/8480-6" in text  # its own codes on the timeline, its blood pressure forecast
    assert "LOINC/8480-6" in set(pd.read_csv(out / "trajectory.csv")["code"])
    _offline(text)


def test_bad_input_is_one_line_exit_2_and_writes_nothing(registered, tmp_path):
    tmp, uri, res = registered
    common = ("--model", "models:/page/1", "--events", tmp / "meds", "--tracking-uri", uri)
    out = tmp_path / "page"
    r = _invoke(*common, "--subject", 987654321, "--out", out)
    assert r.exit_code == 2 and "subject 987654321 has no events in" in r.output and not out.exists()
    sid = int(res.cohort.labels["subject_id"].iloc[0])
    r = _invoke(*common, "--subject", sid, "--out", out, "--at", "not-a-date")
    assert r.exit_code == 2 and "--at" in r.output and "not-a-date" in r.output and not out.exists()
    r = _invoke(*common, "--subject", sid, "--out", out, "--at", "1900-01-01")
    assert r.exit_code == 2 and "before subject" in r.output and not out.exists()
    r = _invoke(
        *common,
        "--subject",
        sid,
        "--out",
        out,
        "--plans",
        Path(__file__).resolve().parents[1] / "configs" / "plans.yaml",
    )
    assert r.exit_code == 2 and "not a what-if model" in r.output and not out.exists()
    out.mkdir()
    r = _invoke(*common, "--subject", sid, "--out", out)
    # the one message every writer gives (twinml._io.refuse_existing)
    assert r.exit_code == 2 and not any(out.iterdir())
    assert f"error: {out} exists; pass overwrite=True (CLI: --overwrite) to replace it." in r.output


def test_a_tabular_model_page_says_why_it_has_no_trajectories(events, labels):
    from twinml.models import TabularRiskModel
    from twinml.twinpage import render_twin_html, twin_page

    from .conftest import split_rows

    model = TabularRiskModel(kind="logistic").fit(
        events, split_rows(labels, "train"), tuning_labels=split_rows(labels, "tuning")
    )
    sid = int(split_rows(labels, "held_out")["subject_id"].iloc[0])
    mine = events[events["subject_id"] == sid]
    shuffled = mine.sample(frac=1.0, random_state=0)  # the Python API takes any order
    hostile = {str(c): "<script>alert(1)</script> $x$ & co" for c in mine["code"].astype(str).unique()}
    page = twin_page(model, shuffled, np.int64(sid), at="2016-06-30", code_descriptions=hostile)
    sorted_page = twin_page(model, mine, sid, at="2016-06-30")
    pd.testing.assert_frame_equal(page.risk, sorted_page.risk)
    assert page.events["time"].dropna().is_monotonic_increasing
    assert page.prediction_time == pd.Timestamp("2016-06-30")
    assert page.events["time"].max() <= pd.Timestamp("2016-06-30")  # nothing after the prediction time is shown
    assert page.trajectory is None and "TabularRiskModel does not forecast them" in page.notes["trajectory"]
    assert page.drivers is not None and len(page.drivers) and page.risk["band_lo"].notna().all()
    text = render_twin_html(page)  # the descriptions' markup and dollars are text, not HTML or mathematics
    assert all(f"<section id='{k}'>" in text for k in SECTIONS)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    _offline(text)


def test_risk_bands_give_no_band_to_a_risk_that_is_not_a_number_and_read_meds_checks_subjects(meds_dir):
    from twinml._validation import MEDSValidationError
    from twinml.models import RiskBands

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.5, 1000)
    bands = RiskBands.fit(pd.DataFrame({"x_365d": p}), pd.DataFrame({"x_365d": (rng.uniform(size=1000) < p) * 1.0}))
    lo, hi = bands.interval("x_365d", [np.nan, 0.2, np.inf])
    assert np.isnan(lo[[0, 2]]).all() and np.isnan(hi[[0, 2]]).all() and lo[1] < 0.2 < hi[1]
    assert np.isnan(bands.interval("other_365d", [0.2])[0]).all()  # a label without a band
    ids = read_meds(meds_dir)["subject_id"].unique()[[0, -1]]  # the first and the last shard's subjects
    some = read_meds(meds_dir, subjects=(int(i) for i in ids))  # a generator: read once, not spent on shard 1
    assert set(some["subject_id"]) == set(ids)
    for bad in ("123", 123, [], [1.5]):
        with pytest.raises(MEDSValidationError, match="'subjects' must be a non-empty list of integer subject ids"):
            read_meds(meds_dir, subjects=bad)


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason=NEEDS_CHROMIUM)
@pytest.mark.parametrize("name", ["sim", "synthea"])
def test_pages_render_in_headless_chromium(pages, name, tmp_path):
    from matplotlib.image import imread

    page, _, _, r = pages[name]
    assert r.exit_code == 0, r.output
    html_uri = (page / "twin.html").resolve().as_uri()
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html_uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    for key in SECTIONS:  # every section is in the DOM Chromium built
        assert f'<section id="{key}">' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,3000",
            html_uri,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    img = imread(shot)[..., :3]
    assert img.std() > 0.05  # not blank: text, tables and figures drawn
    assert (img[1500:] < 0.9).mean() > 0.01  # the lower half is drawn too, not only a header
