"""MEDS label files in (ACES / LabelSchema), MEDS prediction files out (scored by meds-evaluation)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from twinml.cli import app
from twinml.cohort import TaskDefinition, build_labels, to_meds_labels
from twinml.evaluation import PREDICTION_SCHEMA

from .conftest import TASK


@pytest.fixture(scope="module")
def label_files(events, splits, task, tmp_path_factory):
    """ACES-style files: one LabelSchema parquet per outcome (here made by twinml's own rules)."""
    root = tmp_path_factory.mktemp("labels")
    one_year = TaskDefinition.model_validate({**TASK, "horizons_days": [365]})
    labels = build_labels(events, task=one_year, subject_splits=splits).labels
    files = {}
    for outcome in ("t2d", "mi"):
        files[outcome] = root / f"{outcome}.parquet"
        to_meds_labels(labels, f"{outcome}_365d").to_parquet(files[outcome], index=False)
    return files, labels


def _task(files, **extra):
    return TaskDefinition.model_validate(
        {"name": "from-files", "labels": {k: str(v) for k, v in files.items()}, "horizons_days": [365], **extra}
    )


def test_label_files_give_the_same_rows_labels_and_splits_as_the_computed_task(label_files, events, splits):
    files, computed = label_files
    cohort = build_labels(events, task=_task(files), subject_splits=splits)
    got = cohort.labels
    assert list(got.columns) == ["subject_id", "prediction_time", "split", "t2d_365d", "mi_365d"]
    # a row is in the joined frame when at least one file has it; its labels equal the computed ones
    known = computed[computed["t2d_365d"].notna() | computed["mi_365d"].notna()]
    known = known.sort_values(["subject_id", "prediction_time"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        got[["subject_id", "prediction_time", "split"]],
        known[["subject_id", "prediction_time", "split"]],
        check_dtype=False,
    )
    for c in ("t2d_365d", "mi_365d"):
        assert got[c].equals(known[c].astype("boolean"))
    counts = cohort.label_counts.set_index("label")
    assert counts.loc["mi_365d", "positives"] == int(known["mi_365d"].sum())


def test_label_files_take_a_temporal_split_as_computed_tasks_do(label_files, events, splits):
    files, _ = label_files
    split = {"strategy": "temporal", "train_before": "2015-01-01", "test_from": "2016-01-01"}
    plain = build_labels(events, task=_task(files), subject_splits=splits).labels
    got = build_labels(events, task=_task(files, split=split), subject_splits=splits).labels
    t = plain["prediction_time"]
    before, after = t < pd.Timestamp("2015-01-01"), t >= pd.Timestamp("2016-01-01")
    held = plain["split"] == "held_out"
    want = plain[(before & ~held) | (before & held) | (after & held)].reset_index(drop=True)
    want["split"] = np.where(want["prediction_time"] >= pd.Timestamp("2016-01-01"), "held_out", want["split"])
    want.loc[(want["split"] == "held_out") & (want["prediction_time"] < pd.Timestamp("2015-01-01")), "split"] = (
        "held_out_same_period"
    )
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def _write(path, frame):
    frame.to_parquet(path, index=False)
    return path


def _bad(files, tmp_path, change):
    frame = pd.read_parquet(files["mi"])
    return {"mi": _write(tmp_path / "mi.parquet", change(frame))}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda f: f.drop(columns="boolean_value"),
            "{file}: column 'boolean_value' is required by the MEDS label schema but missing. "
            "Columns present: ['subject_id', 'prediction_time']",
        ),
        (
            lambda f: f.assign(boolean_value=f["boolean_value"].astype(int)),
            "{file}: column 'boolean_value' must be bool; got type int64 (example: 0)",
        ),
        (
            lambda f: f.assign(subject_id=f["subject_id"].where(f.index != 3, 987654321)),
            "{file}: column 'subject_id' must name a subject of the dataset (one with events) (example: 987654321)",
        ),
        (
            lambda f: pd.concat([f, f.iloc[[5]]], ignore_index=True),
            "{file}: column 'prediction_time' must be unique per subject_id (one label row per prediction) "
            "(example: subject_id={sid5}, prediction_time={t5})",
        ),
    ],
)
def test_bad_label_files_are_refused_naming_file_column_rule_and_example(
    label_files, events, splits, tmp_path, change, message
):
    files, _ = label_files
    bad = _bad(files, tmp_path, change)
    first = pd.read_parquet(files["mi"])
    expected = message.format(file=bad["mi"], sid5=first["subject_id"].iloc[5], t5=first["prediction_time"].iloc[5])
    with pytest.raises(ValueError) as err:
        build_labels(events, task=_task(bad), subject_splits=splits)
    assert str(err.value) == expected


def test_a_prediction_time_before_birth_is_refused(label_files, events, splits, tmp_path):
    files, _ = label_files
    frame = pd.read_parquet(files["mi"])
    sid = int(frame["subject_id"].iloc[0])
    birth = events[(events["subject_id"] == sid) & (events["code"] == "MEDS_BIRTH")]["time"].iloc[0]
    early = birth - pd.Timedelta(days=1)
    frame.loc[0, "prediction_time"] = early
    bad = {"mi": _write(tmp_path / "mi.parquet", frame.drop_duplicates(["subject_id", "prediction_time"]))}
    with pytest.raises(ValueError) as err:
        build_labels(events, task=_task(bad), subject_splits=splits)
    assert str(err.value) == (
        f"{bad['mi']}: column 'prediction_time' must not be before the subject's birth "
        f"(MEDS_BIRTH) (example: subject_id={sid}, prediction_time={early}, birth={birth})"
    )


def test_a_missing_label_file_and_a_task_with_both_outcomes_and_labels_are_clear_errors(
    label_files, events, splits, tmp_path
):
    files, _ = label_files
    gone = tmp_path / "nope.parquet"
    with pytest.raises(ValueError) as err:
        build_labels(events, task=_task({"mi": gone}), subject_splits=splits)
    assert str(err.value) == f"{gone}: label file not found"
    with pytest.raises(ValueError, match="give either 'outcomes' .* or 'labels' .*, not both"):
        _task(files, outcomes=TASK["outcomes"])
    with pytest.raises(ValueError, match="exactly one horizon"):
        TaskDefinition.model_validate({"name": "x", "labels": {"mi": str(files["mi"])}, "horizons_days": [365, 730]})


@pytest.fixture(scope="module")
def trained_from_files(label_files, meds_dir, tmp_path_factory):
    """``twinml train`` from the CLI on ACES-style label files, writing MEDS prediction files."""
    files, _ = label_files
    root = tmp_path_factory.mktemp("cli-labels")
    config = {
        "name": "labels-from-files",
        "seed": 0,
        "data": {"source": "meds", "path": str(meds_dir)},
        "task": {"name": "from-files", "labels": {k: str(v) for k, v in files.items()}, "horizons_days": [365]},
        "model": {"kind": "logistic"},
        "evaluation": {"splits": ["held_out"], "n_bootstrap": 0},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "labels"},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", str(root / "config.yaml"), "--predictions-dir", str(root / "pred")])
    assert result.exit_code == 0, result.output
    return root, result.output


def test_label_files_train_a_model_end_to_end_from_the_cli(trained_from_files, label_files, splits):
    root, output = trained_from_files
    files, _ = label_files
    held_out = set(splits.loc[splits["split"] == "held_out", "subject_id"])
    for outcome in ("mi", "t2d"):
        table = pq.read_table(root / "pred" / "held_out" / f"{outcome}_365d.parquet")
        assert table.schema.equals(PREDICTION_SCHEMA)
        # exactly the label file's held-out rows, with the file's labels
        want = pd.read_parquet(files[outcome])
        want = want[want["subject_id"].isin(held_out)].sort_values(["subject_id", "prediction_time"])
        got = table.to_pandas()
        assert len(got) == len(want) > 0
        pd.testing.assert_frame_equal(
            got[["subject_id", "prediction_time", "boolean_value"]].reset_index(drop=True),
            want.reset_index(drop=True),
            check_dtype=False,
        )


def _meds_evaluation_cli() -> str:
    exe = Path(sys.executable).with_name("meds-evaluation-cli")
    if exe.exists():
        return str(exe)
    found = shutil.which("meds-evaluation-cli")
    if found is None:
        pytest.skip("meds-evaluation-cli is not installed (pip install -e '.[dev]')")
    return found


def test_meds_evaluation_scores_the_predictions_file_as_twinml_does(trained_from_files, label_files, tmp_path):
    root, _ = trained_from_files
    pred = root / "pred" / "held_out" / "mi_365d.parquet"
    out = tmp_path / "eval.json"
    run = subprocess.run(
        [_meds_evaluation_cli(), f"predictions_path={pred}", f"output_file={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(out.read_text())["samples_equally_weighted"]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run_ = client.search_runs([client.get_experiment_by_name("labels").experiment_id])[0]
    ours = run_.data.metrics  # what twinml reported for the run
    assert abs(theirs["roc_auc_score"] - ours["held_out/mi_365d/auroc"]) <= 1e-9
    assert abs(theirs["brier_score"] - ours["held_out/mi_365d/brier"]) <= 1e-6
    assert len(pd.read_parquet(pred)) == ours["held_out/mi_365d/n"]
