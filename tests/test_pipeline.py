"""End to end through a real MLflow tracking store (SQLite in a temp dir)."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from twinml._validation import ConfigError
from twinml.config import load_config
from twinml.pipeline import evaluate, train
from twinml.tracking import as_pyfunc_input

from .conftest import TASK


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = load_config(
        {
            "name": "unit",
            "seed": 1,
            "data": {"source": "simulator", "path": str(root / "meds"), "simulator": {"n_subjects": 900, "seed": 4}},
            "task": TASK,
            "model": {"kind": "hist_gb", "params": {"max_iter": 25}},
            "evaluation": {"splits": ["tuning", "held_out"], "n_bootstrap": 20},
            "tracking": {"experiment": "unit-tests"},
        }
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return train(cfg, tracking_uri=uri), cfg, uri


def test_one_run_with_params_metrics_artifacts_and_model(trained):
    res, cfg, uri = trained
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(res.run_id)
    assert run.data.params["model.kind"] == "hist_gb"
    assert run.data.params["task.horizons_days"] == "[365, 730]"
    assert "held_out/mi_365d/auroc" in run.data.metrics and "tuning/t2d_730d/ece" in run.data.metrics
    assert {"twinml.data_fingerprint", "twinml.config_hash", "twinml.code_version"} <= set(run.data.tags)
    arts = {a.path for a in client.list_artifacts(res.run_id)} | {
        a.path for d in ("cohort", "evaluation") for a in client.list_artifacts(res.run_id, d)
    }
    assert {"cohort/attrition.csv", "evaluation/held_out_metrics.csv", "evaluation/reliability_held_out.png"} <= arts


def test_no_subject_level_data_in_params_or_input_example(trained, events):
    res, _, uri = trained
    run = MlflowClient(tracking_uri=uri).get_run(res.run_id)
    ids = {str(s) for s in res.cohort.labels["subject_id"].unique()}
    assert not any(i in v for v in run.data.params.values() for i in ids)
    mlflow.set_tracking_uri(uri)
    example = mlflow.models.Model.load(res.model_uri).load_input_example(
        mlflow.artifacts.download_artifacts(res.model_uri)
    )
    assert set(example["subject_id"]) == {0}


def test_pyfunc_takes_meds_events_and_matches_the_model(trained):
    res, cfg, uri = trained
    from twinml.data import read_meds

    events = read_meds(cfg.data.path)
    some = events[events["subject_id"].isin(events["subject_id"].unique()[:7])].reset_index(drop=True)
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model(res.model_uri)
    out = pyfunc.predict(as_pyfunc_input(some), params={"prediction_time": "2016-06-01"})
    index = pd.DataFrame(
        {"subject_id": some["subject_id"].unique(), "prediction_time": pd.Timestamp("2016-06-01").as_unit("us")}
    )
    expected = res.model.predict_risk(some, index)
    pd.testing.assert_frame_equal(out.reset_index(drop=True), expected, check_dtype=False)


def test_evaluate_reproduces_the_logged_metric(trained):
    res, cfg, uri = trained
    table = evaluate(res.model_uri, meds_dir=cfg.data.path, task=cfg.task, tracking_uri=uri, n_boot=20, seed=cfg.seed)
    logged = MlflowClient(tracking_uri=uri).get_run(res.run_id).data.metrics["held_out/mi_365d/auroc"]
    assert table.set_index("label").loc["mi_365d", "auroc"] == pytest.approx(logged)


def test_a_lightgbm_sweep_logs_each_trial_as_a_nested_run(tmp_path):
    cfg = load_config(
        {
            "name": "sweep",
            "seed": 0,
            "data": {
                "source": "simulator",
                "path": str(tmp_path / "meds"),
                "simulator": {"n_subjects": 900, "seed": 4},
            },
            "task": {**TASK, "outcomes": {"mi": TASK["outcomes"]["mi"]}, "horizons_days": [365]},
            "model": {"kind": "lightgbm", "params": {"n_estimators": 50}, "search": {"n_trials": 3}},
            "evaluation": {"splits": ["held_out"], "n_bootstrap": 0},
            "tracking": {"experiment": "sweep"},
        }
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = train(cfg, tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    children = client.search_runs(
        [client.get_experiment_by_name("sweep").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{res.run_id}'",
    )
    trials = res.model.search_trials_["mi_365d"]
    assert len(children) == len(trials) == 3
    logged = sorted(r.data.metrics["tuning/log_loss"] for r in children)
    assert logged == pytest.approx(sorted(t["eval_log_loss"] for t in trials))
    assert {"learning_rate", "num_leaves", "label"} <= set(children[0].data.params)


def test_a_temporal_split_scores_the_later_period_beside_the_same_one(tmp_path, meds_dir):
    split = {"strategy": "temporal", "train_before": "2014-06-01", "test_from": "2016-06-01"}
    cfg = load_config(
        {
            "name": "temporal",
            "data": {"source": "meds", "path": str(meds_dir)},
            "task": {**TASK, "split": split},
            "model": {"kind": "logistic"},
            "evaluation": {"n_bootstrap": 10},
            "tracking": {"experiment": "temporal-tests"},
        }
    )
    res = train(cfg, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert list(res.metrics) == ["held_out_same_period", "held_out"]  # one fit, both figures
    labels = res.cohort.labels
    for name, table in res.metrics.items():
        rows = labels[labels["split"] == name]
        assert table.loc[table["label"] == "mi_365d", "n"].item() == rows["mi_365d"].notna().sum()
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(res.run_id)
    assert {"held_out/mi_365d/auroc", "held_out_same_period/mi_365d/auroc"} <= set(run.data.metrics)
    # the model learnt from the events before train_before only: its value scaling is that of those events
    from twinml.data import read_meds
    from twinml.features import TabularFeaturizer

    ev = read_meds(meds_dir)
    ev = ev[ev["subject_id"].isin(labels.loc[labels["split"] == "train", "subject_id"])]
    before = ev[(ev["time"].isna() | (ev["time"] < pd.Timestamp("2014-06-01"))).to_numpy()]
    fitted = res.model.featurizer_.value_mean_
    assert np.array_equal(fitted, TabularFeaturizer().fit(before).value_mean_)
    assert not np.array_equal(fitted, TabularFeaturizer().fit(ev).value_mean_)  # every year would differ
    assert load_config(cfg.model_dump(mode="json")) == cfg  # a logged config reloads (the audit does so)
    assert load_config({**cfg.model_dump(mode="json"), "task": TASK}).task.split.strategy == "meds"
    # the audit reports the two periods side by side, as the training run did
    from twinml.audit import load_policy, run_audit

    policy = load_policy({"n_bootstrap": 10, "explain": {"n_rows": 50}, "mitigation": {"attribute": None}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    audit = run_audit(
        res.model_uri, meds_dir, policy=policy, out=tmp_path / "audit", tracking_uri=uri, progress=lambda msg: None
    )
    temporal = {(r["label"], r["split"]): r for r in audit.report["temporal"]}
    for split in ("held_out_same_period", "held_out"):
        assert temporal[("mi_365d", split)]["auroc"] == pytest.approx(
            res.metrics[split].set_index("label").loc["mi_365d", "auroc"]
        )
    assert "Temporal validation" in (tmp_path / "audit" / "report.html").read_text()
    assert "## Temporal validation" in (tmp_path / "audit" / "model_card.md").read_text()
    with pytest.raises(ConfigError) as err:
        load_config({**cfg.model_dump(mode="json"), "task": TASK, "evaluation": {"splits": ["held_out_same_period"]}})
    assert str(err.value) == (
        "config: evaluation: split 'held_out_same_period' exists only under task.split.strategy: temporal; "
        "got {'splits': ['held_out_same_period']}"
    )
