"""The whole-record GRU: one causal pass per subject, read out at each prediction time."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twinml.features import RecordFeaturizer
from twinml.models import RecordRiskModel

from .conftest import split_rows

SMALL = dict(d_model=16, max_epochs=4, batch_size=16, lr=3e-3, n_threads=1, random_state=7, trajectory_codes=None)


@pytest.fixture(scope="module")
def fitted(events, labels):
    return RecordRiskModel(calibration="platt", **SMALL).fit(
        events, split_rows(labels, "train"), tuning_labels=split_rows(labels, "tuning")
    )


def test_readout_is_the_last_visit_at_or_before_the_prediction_time_and_the_record_is_whole(events, labels):
    f = RecordFeaturizer(min_code_count=5).fit(events)
    held = split_rows(labels, "held_out")
    data = f.transform(events, held)
    ok = data.readout >= 0
    assert ok.mean() > 0.99
    assert (data.visit_time[data.readout[ok]] <= data.prediction_time[ok]).all()
    nxt = data.readout[ok] + 1  # the next visit, if the subject has one, is after the prediction time
    same = (nxt < data.visit_time.size) & (nxt < data.subject_visits[data.row_subject[ok], 1])
    assert (data.visit_time[nxt[same]] > data.prediction_time[ok][same]).all()
    dyn = events[events["time"].notna()]
    for i in range(0, len(held), 97):  # every event at or before t, from the subject's first: no cap
        s, pt = held.loc[i, "subject_id"], held.loc[i, "prediction_time"]
        expected = dyn[(dyn["subject_id"] == s) & (dyn["time"] <= pt)]
        assert data.hi[i] - data.lo[i] == len(expected)
        first_visit = data.subject_visits[data.row_subject[i], 0]
        assert data.visit_start[first_visit] == data.lo[i]
        assert data.visit_start[data.readout[i] + 1] == data.hi[i]


def test_one_pass_per_subject_equals_reading_each_row_from_its_own_truncated_record(events, labels, fitted):
    """The leakage rule for the whole-record model: a row's risk must be what the model says when
    every event after its prediction time is deleted, for rows early and late in a subject's record
    (so later rows of the same subject, read in the same pass, cannot leak into earlier ones)."""
    held = split_rows(labels, "held_out")
    subjects = held["subject_id"].drop_duplicates().iloc[:40]
    rows = held[held["subject_id"].isin(subjects)]
    picks = pd.concat([rows.groupby("subject_id").head(1), rows.groupby("subject_id").tail(1)]).drop_duplicates()
    picks = picks.reset_index(drop=True)
    together = fitted.predict_risk_curve(events, picks)
    assert np.unique(picks["subject_id"]).size < len(picks)  # some subjects are read at several times at once
    for i in range(len(picks)):
        s, pt = picks.loc[i, "subject_id"], picks.loc[i, "prediction_time"]
        own = events[(events["subject_id"] == s) & (events["time"].isna() | (events["time"] <= pt))]
        alone = fitted.predict_risk_curve(own.reset_index(drop=True), picks.iloc[[i]].reset_index(drop=True))
        np.testing.assert_allclose(alone[0], together[i], rtol=0, atol=1e-6, err_msg=f"row {i}")


def test_seeded_training_is_reproducible_to_the_last_digit(events, labels, fitted):
    b = RecordRiskModel(calibration="platt", **SMALL).fit(
        events, split_rows(labels, "train"), tuning_labels=split_rows(labels, "tuning")
    )
    assert [h["tuning_loss"] for h in fitted.history_] == [h["tuning_loss"] for h in b.history_]
    held = split_rows(labels, "held_out")
    pd.testing.assert_frame_equal(fitted.predict_risk(events, held), b.predict_risk(events, held))


def test_calibrated_curves_stay_monotone_and_learn_something(events, labels, fitted):
    from twinml.evaluation import evaluate_risks

    held = split_rows(labels, "held_out")
    curve = fitted.predict_risk_curve(events, held)
    assert curve.shape[1:] == (len(fitted.outcomes_), len(fitted.horizons_))
    assert (np.diff(curve, axis=-1) >= 0).all() and ((curve > 0) & (curve < 1)).all()
    metrics = evaluate_risks(held, fitted.predict_risk(events, held), columns=fitted.label_columns_, n_boot=0)
    assert metrics.set_index("label").loc["t2d_730d", "auroc"] > 0.6


def test_rows_of_subjects_without_events_get_the_initial_state(events, fitted):
    ghost = pd.DataFrame({"subject_id": [10**9, 10**9 + 1], "prediction_time": pd.to_datetime(["2015-01-01"] * 2)})
    curve = fitted.predict_risk_curve(events, ghost.astype({"prediction_time": "datetime64[us]"}))
    np.testing.assert_allclose(curve[0], curve[1])


def test_record_model_trains_through_the_pipeline_and_serves_as_pyfunc(tmp_path, monkeypatch):
    from .conftest import train_and_serve

    res, run = train_and_serve(
        tmp_path,
        {"kind": "record", "calibration": "platt", "params": {"d_model": 8, "max_epochs": 1, "n_threads": 1}},
        n_subjects=400,
    )
    assert "tuning/loss" in run.data.metrics and run.data.params["model.kind"] == "record"

    # batch scoring writes the trajectory forecasts beside the scores, long format, both files or neither
    import pyarrow.parquet as pq

    from twinml.data import read_meds
    from twinml.scoring import SCORED, read_score_metadata, score

    uri, as_of = f"sqlite:///{tmp_path / 'mlflow.db'}", "2017-01-01"
    report = score(
        res.model_uri,
        tmp_path / "meds",
        as_of,
        tmp_path / "scores.parquet",
        tracking_uri=uri,
        trajectories=tmp_path / "forecasts.parquet",
        subjects_per_slice=150,
    )
    scores, fc = pd.read_parquet(tmp_path / "scores.parquet"), pd.read_parquet(tmp_path / "forecasts.parquet")
    scored = scores.loc[scores["status"] == SCORED, "subject_id"].to_numpy()
    codes = res.model.trajectory_codes_
    assert len(fc) == scored.size * len(codes) * 3 and set(fc["subject_id"]) == set(scored)
    assert list(fc.columns) == [
        "subject_id",
        "code",
        "horizon_days",
        "forecast",
        "lower_80",
        "upper_80",
        "model_version",
    ]
    events = read_meds(tmp_path / "meds")
    index = pd.DataFrame({"subject_id": scored, "prediction_time": pd.Timestamp(as_of).as_unit("us")})
    want = res.model.predict_trajectory(events, index).sort_values(
        ["subject_id", "code", "horizon_days"], kind="stable"
    )
    np.testing.assert_allclose(fc["forecast"].to_numpy(), want["forecast"].to_numpy(), rtol=1e-5)
    assert read_score_metadata(tmp_path / "forecasts.parquet") == read_score_metadata(tmp_path / "scores.parquet")
    assert report.scored == scored.size and pq.read_metadata(tmp_path / "forecasts.parquet").num_rows == len(fc)
    with pytest.raises(FileExistsError, match="forecasts.parquet exists"):
        score(
            res.model_uri,
            tmp_path / "meds",
            as_of,
            tmp_path / "other.parquet",
            tracking_uri=uri,
            trajectories=tmp_path / "forecasts.parquet",
        )
    assert not (tmp_path / "other.parquet").exists()
    # both files or neither: the scores' rename fails after the forecasts' was done
    import os

    import twinml.scoring._score as scoring_module

    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name == "scores.parquet" and ".partial-" in Path(src).name:
            raise OSError("disk full (injected)")
        return real_replace(src, dst)

    before = {n: (tmp_path / n).read_bytes() for n in ("scores.parquet", "forecasts.parquet")}
    monkeypatch.setattr(scoring_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        score(
            res.model_uri,
            tmp_path / "meds",
            "2018-01-01",
            tmp_path / "scores.parquet",
            tracking_uri=uri,
            trajectories=tmp_path / "forecasts.parquet",
            overwrite=True,
        )
    monkeypatch.undo()
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # both as they were
    # the CLI
    from typer.testing import CliRunner

    from twinml.cli import app

    out = CliRunner().invoke(
        app,
        [
            "score",
            "--model",
            res.model_uri,
            "--events",
            str(tmp_path / "meds"),
            "--as-of",
            as_of,
            "--out",
            str(tmp_path / "cli.parquet"),
            "--trajectories",
            str(tmp_path / "cli-fc.parquet"),
            "--tracking-uri",
            uri,
        ],
    )
    assert out.exit_code == 0, out.output
    assert "trajectory forecasts:" in out.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cli-fc.parquet"), fc)
    assert sorted(p.name for p in tmp_path.glob(".*")) == []  # no temporary or backup file left


def test_parameters_are_checked(events, labels):
    from twinml._validation import ConfigError

    with pytest.raises(ConfigError, match="The 'batch_size' parameter of RecordRiskModel must be a positive int"):
        RecordRiskModel(**{**SMALL, "batch_size": 0}).fit(events, split_rows(labels, "train"))
    with pytest.raises(
        ConfigError,
        match=r"^The 'n_last_values' parameter of RecordRiskModel must be a non-negative int. Got -1 instead.$",
    ):
        RecordRiskModel(**{**SMALL, "n_last_values": -1}).fit(events, split_rows(labels, "train"))
    assert "max_len" not in RecordRiskModel().get_params()


def test_explanations_add_up_and_point_at_events_that_matter(events, labels, fitted):
    """shap's expected gradients on the whole record's event embeddings: per row, the attributions sum
    to the log-odds change from the content-free baseline (approximately: sampled), and removing the
    top-5 events' content moves the risk more than removing 5 random events'."""
    import torch

    from twinml.evaluation import explain_model, faithfulness
    from twinml.evaluation._explain import _cumulative_logit, _record_row
    from twinml.features._sequence import UNKNOWN

    held = split_rows(labels, "held_out").iloc[:12]
    attr = explain_model(fitted, events, held, label="t2d_730d", n_samples=64)
    assert attr.table["row"].nunique() == len(held) and "whole record" in attr.method
    data = fitted.featurizer_.transform(events, held)
    o, j = fitted.outcomes_.index("t2d"), fitted.horizons_.index(730)
    gaps, sums = [], attr.table.groupby("row")["attribution"].sum()
    with torch.inference_mode():
        for i in range(len(held)):
            b = _record_row(data, i)
            full = _cumulative_logit(fitted.net_(**b)[:, o, : j + 1]).item()
            empty = _cumulative_logit(
                fitted.net_(
                    **dict(
                        b,
                        event_code=torch.full_like(b["event_code"], UNKNOWN),
                        event_value=torch.zeros_like(b["event_value"]),
                    )
                )[:, o, : j + 1]
            ).item()
            gaps.append(full - empty)
    gaps = np.array(gaps)
    assert np.abs(sums.to_numpy() - gaps).mean() < 0.25 * np.abs(gaps).mean(), (sums.to_numpy(), gaps)
    faith = faithfulness(fitted, events, held, attr, k=5)
    assert faith["rows"] == len(held) and faith["ratio"] > 1.0, faith


def test_last_values_are_each_codes_last_reading_at_or_before_the_prediction_time(events, labels):
    f = RecordFeaturizer(min_code_count=5, n_last_values=4).fit(events)
    held = split_rows(labels, "held_out")
    data = f.transform(events, held)
    assert data.last_values.shape == (len(held), 12) and f.last_value_codes_.size == 4
    names = np.asarray(f.vocabulary_)[f.last_value_codes_ - 2]
    dyn = events[events["time"].notna() & events["numeric_value"].notna()]
    checked = 0
    for i in range(0, len(held), 53):
        s, pt = held.loc[i, "subject_id"], held.loc[i, "prediction_time"]
        for k, name in enumerate(names):
            seen = dyn[(dyn["subject_id"] == s) & (dyn["code"] == name) & (dyn["time"] <= pt)]
            assert data.last_values[i, 3 * k + 1] == (1.0 if len(seen) else 0.0)
            if len(seen):
                days = (pt - seen["time"].max()).total_seconds() / 86_400
                np.testing.assert_allclose(data.last_values[i, 3 * k + 2], np.log1p(days) / 5, rtol=1e-5)
                checked += 1
    assert checked > 20


def test_the_end_of_observation_marker_is_not_an_input(events, labels, fitted):
    """No label row sees an end-of-observation marker, so a score at or after one (a panel scored
    "now", a twin page at the last event) must not read it: it equals the score without the marker."""
    from twinml.features import END_OF_RECORD
    from twinml.models import SequenceRiskModel, TabularRiskModel

    is_end = events["code"].astype(str).isin(END_OF_RECORD).to_numpy()
    ends = events[is_end].groupby("subject_id")["time"].max()
    seen = labels["prediction_time"].to_numpy() >= labels["subject_id"].map(ends).to_numpy()
    assert is_end.sum() > 1000 and not seen.any()  # the premise: training never reads one
    held = split_rows(labels, "held_out")["subject_id"].unique()[:200]
    at_end = pd.DataFrame({"subject_id": held, "prediction_time": ends.reindex(held).to_numpy()})
    gru = SequenceRiskModel(calibration="platt", d_model=16, max_epochs=1, n_threads=1, trajectory_codes=None).fit(
        events, split_rows(labels, "train"), tuning_labels=split_rows(labels, "tuning")
    )
    tab = TabularRiskModel(kind="logistic").fit(events, split_rows(labels, "train"))
    for model in (fitted, gru, tab):
        with_end = model.predict_risk(events, at_end)
        without = model.predict_risk(events[~is_end].reset_index(drop=True), at_end)
        pd.testing.assert_frame_equal(with_end, without)
