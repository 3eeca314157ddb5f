"""Batch scoring: a registered model over a whole panel, atomically, locally and on Spark."""

import os
import signal
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from twinml._validation import ConfigError
from twinml.config import load_config
from twinml.data import read_meds
from twinml.pipeline import train
from twinml.scoring import NO_EVENTS, SCORED, read_score_metadata, score
from twinml.scoring._spark import spark_available
from twinml.tracking import AUDIT_PASSED_TAG, promote

from .conftest import TASK, running_mlflow_server

AS_OF = "2011-03-31"  # subjects enter the records over 2010-2012: some have none yet
NAME = "panel-risk"


def _config(root, name=NAME):
    return load_config(
        {
            "name": "scoring",
            "seed": 3,
            "data": {"source": "simulator", "path": str(root / "meds"), "simulator": {"n_subjects": 600, "seed": 5}},
            "task": TASK,
            "features": {"min_code_count": 1},
            "model": {"kind": "gru", "params": {"d_model": 16, "max_epochs": 2, "trajectory_codes": None}},
            "evaluation": {"splits": ["held_out"], "n_bootstrap": 0},
            "tracking": {"experiment": "scoring-tests", "register_as": name},
        }
    )


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    res = train(_config(root), tracking_uri=uri)
    return root, uri, res


@pytest.fixture(scope="module")
def scored(registered):
    root, uri, _ = registered
    out = root / "scores.parquet"
    report = score(f"models:/{NAME}/1", root / "meds", AS_OF, out, tracking_uri=uri)
    return report, out


def test_every_subject_is_scored_or_reported_and_scores_match_the_model(registered, scored):
    root, uri, res = registered
    report, out = scored
    events = read_meds(root / "meds")
    df = pq.read_table(out).to_pandas()
    assert len(df) == report.subjects == events["subject_id"].nunique()
    assert report.scored + report.no_events_before_as_of == report.subjects
    assert df["subject_id"].is_monotonic_increasing and set(df["status"]) == {SCORED, NO_EVENTS}
    timed = events.dropna(subset=["time"])
    timed = timed[timed["code"] != "MEDS_BIRTH"]
    early = set(timed.loc[timed["time"] <= pd.Timestamp(AS_OF), "subject_id"])
    assert set(df.loc[df["status"] == SCORED, "subject_id"]) == early
    label_cols = list(res.model.label_columns_)
    assert df.loc[df["status"] == NO_EVENTS, label_cols].isna().all().all()
    assert df.loc[df["status"] == SCORED, label_cols].notna().all().all()
    # the scores are the model's own predictions at the as-of time (events after it unseen)
    some = df[df["status"] == SCORED].head(50)
    ev = events[events["subject_id"].isin(some["subject_id"])].reset_index(drop=True)
    index = pd.DataFrame(
        {
            "subject_id": some["subject_id"].to_numpy(),
            "prediction_time": np.full(len(some), pd.Timestamp(AS_OF).to_datetime64()),
        }
    )
    direct = res.model.predict_risk(ev, index)
    np.testing.assert_allclose(some[label_cols].to_numpy(), direct[label_cols].to_numpy(), rtol=0, atol=1e-6)
    assert (df["model_version"] == "1").all()


def test_run_facts_are_stored_with_the_scores(scored):
    report, out = scored
    meta = read_score_metadata(out)
    assert meta["model_name"] == NAME and meta["model_version"] == "1" and meta["as_of"].startswith(AS_OF)
    assert meta["subjects"] == report.subjects and meta["input_fingerprint"] == report.input_fingerprint
    assert meta["events_read"] > 0


def test_rerun_writes_the_same_bytes_whatever_the_slice_size(registered, scored, tmp_path):
    root, uri, _ = registered
    _, out = scored
    again = tmp_path / "again.parquet"
    score(f"models:/{NAME}/1", root / "meds", AS_OF, again, tracking_uri=uri, subjects_per_slice=37)
    assert read_score_metadata(out) == read_score_metadata(again)
    pd.testing.assert_frame_equal(pq.read_table(out).to_pandas(), pq.read_table(again).to_pandas())
    score(f"models:/{NAME}/1", root / "meds", AS_OF, again, tracking_uri=uri, overwrite=True)
    third = tmp_path / "third.parquet"
    os.replace(again, third)
    score(f"models:/{NAME}/1", root / "meds", AS_OF, again, tracking_uri=uri)
    assert again.read_bytes() == third.read_bytes()


@pytest.mark.slow
def test_a_killed_run_leaves_no_output_and_the_rerun_is_byte_identical(registered, tmp_path):
    root, uri, _ = registered
    out = tmp_path / "scores.parquet"
    cmd = [
        sys.executable,
        "-m",
        "twinml.cli",
        "score",
        "--model",
        f"models:/{NAME}/1",
        "--events",
        str(root / "meds"),
        "--as-of",
        AS_OF,
        "--out",
        str(out),
        "--tracking-uri",
        uri,
        "--subjects-per-slice",
        "3",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    for line in proc.stdout:  # wait until it is midway through the panel
        if "subjects scored" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    clean = tmp_path / "clean.parquet"
    score(f"models:/{NAME}/1", root / "meds", AS_OF, clean, tracking_uri=uri, subjects_per_slice=3)
    assert out.read_bytes() == clean.read_bytes()


def test_promotion_needs_a_passed_audit_or_a_recorded_override(registered):
    _, uri, _ = registered
    with pytest.raises(
        ConfigError,
        match=r"promote: panel-risk version 1 cannot become @champion: it has no audit "
        r"result \(tag twinml.audit.passed=None\)",
    ):
        promote(NAME, 1, "champion", tracking_uri=uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(NAME, "champion")
    res = promote(NAME, 1, "champion", override_reason="pilot before the audit exists", tracking_uri=uri)
    assert res["override"]
    mv = client.get_model_version_by_alias(NAME, "champion")
    assert (
        str(mv.version) == "1"
        and mv.tags["twinml.promotion.champion.override_reason"] == "pilot before the audit exists"
    )
    client.set_model_version_tag(NAME, "1", AUDIT_PASSED_TAG, "true")
    assert not promote(NAME, 1, "production", tracking_uri=uri)["override"]
    assert client.get_model_version_by_alias(NAME, "production").tags["twinml.promotion.production"] == "audit passed"


def test_cli_refuses_promotion_and_unknown_models_in_one_line(registered):
    from typer.testing import CliRunner

    from twinml.cli import app

    root, uri, _ = registered
    runner = CliRunner()
    mlflow.MlflowClient(tracking_uri=uri).set_model_version_tag(NAME, "1", AUDIT_PASSED_TAG, "false")
    res = runner.invoke(app, ["promote", NAME, "--version", "1", "--alias", "canary", "--tracking-uri", uri])
    assert res.exit_code == 2 and "cannot become @canary: its audit failed" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(
        app,
        [
            "score",
            "--model",
            "models:/no-such-model@champion",
            "--events",
            str(root / "meds"),
            "--as-of",
            AS_OF,
            "--out",
            str(root / "x.parquet"),
            "--tracking-uri",
            uri,
        ],
    )
    assert res.exit_code == 2 and "error: MLflow:" in res.output and "no-such-model" in res.output, res.output
    assert not (root / "x.parquet").exists()


def test_bad_inputs_are_named(registered, tmp_path):
    root, uri, _ = registered
    with pytest.raises(ConfigError, match=r"score: 'engine' must be one of \['local', 'spark'\]. Got 'dask' instead."):
        score(f"models:/{NAME}/1", root / "meds", AS_OF, tmp_path / "x.parquet", engine="dask", tracking_uri=uri)
    with pytest.raises(ConfigError, match=r"score: 'as_of' must be a date or timestamp"):
        score(f"models:/{NAME}/1", root / "meds", "soon", tmp_path / "x.parquet", tracking_uri=uri)
    with pytest.raises(ConfigError, match=r"score --trajectories: .* has no trajectory forecasts"):
        score(
            f"models:/{NAME}/1",
            root / "meds",
            AS_OF,
            tmp_path / "x.parquet",
            tracking_uri=uri,
            trajectories=tmp_path / "t.parquet",
        )
    with pytest.raises(ConfigError, match="local engine without a twin state only"):
        score(
            f"models:/{NAME}/1",
            root / "meds",
            AS_OF,
            tmp_path / "x.parquet",
            tracking_uri=uri,
            engine="spark",
            trajectories=tmp_path / "t.parquet",
        )
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "t.parquet").exists()


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.skipif(spark_available() is not None, reason=f"Spark cannot run here: {spark_available()}")
def test_spark_engine_gives_the_local_scores(registered, scored, tmp_path):
    root, uri, res = registered
    _, local_out = scored
    out = tmp_path / "spark.parquet"
    report = score(
        f"models:/{NAME}/1", root / "meds", AS_OF, out, engine="spark", spark_master="local[2]", tracking_uri=uri
    )
    a, b = pq.read_table(local_out).to_pandas(), pq.read_table(out).to_pandas()
    assert report.engine == "spark" and len(a) == len(b)
    pd.testing.assert_frame_equal(
        a[["subject_id", "status", "model_version"]], b[["subject_id", "status", "model_version"]]
    )
    cols = list(res.model.label_columns_)
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=0, atol=1e-6)


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied artifacts), stopped afterwards."""
    with running_mlflow_server(tmp_path) as url:
        yield url


@pytest.mark.slow
@pytest.mark.server
def test_train_register_promote_and_score_through_a_real_tracking_server(mlflow_server, tmp_path):
    res = train(_config(tmp_path, name="served-risk"), tracking_uri=mlflow_server)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    assert client.get_run(res.run_id).info.status == "FINISHED"
    assert promote("served-risk", 1, "champion", override_reason="integration test", tracking_uri=mlflow_server)[
        "override"
    ]
    report = score(
        "models:/served-risk@champion",
        tmp_path / "meds",
        AS_OF,
        tmp_path / "scores.parquet",
        tracking_uri=mlflow_server,
    )
    assert report.model_name == "served-risk" and report.model_version == "1"
    df = pq.read_table(tmp_path / "scores.parquet").to_pandas()
    assert len(df) == report.subjects and (df["model_version"] == "1").all()
    assert read_score_metadata(tmp_path / "scores.parquet")["model_uri"] == "models:/served-risk@champion"


def test_a_tabular_model_scores_through_the_same_function(events, task, splits):
    from twinml.cohort import build_labels
    from twinml.models import TabularRiskModel
    from twinml.scoring import score_events

    labels = build_labels(events, task=task, subject_splits=splits).labels
    model = TabularRiskModel(kind="logistic").fit(events, labels[labels["split"] == "train"])
    some = events[events["subject_id"].isin(events["subject_id"].unique()[:40])].reset_index(drop=True)
    out = score_events(model, some, "2016-01-01")
    assert len(out) == 40 and (out["status"] == SCORED).all()
    index = pd.DataFrame({"subject_id": out["subject_id"], "prediction_time": pd.Timestamp("2016-01-01")})
    index["prediction_time"] = index["prediction_time"].astype("datetime64[us]")
    direct = model.predict_risk(some, index)
    np.testing.assert_allclose(out[model.label_columns_].to_numpy(), direct[model.label_columns_].to_numpy())
