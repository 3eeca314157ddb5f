import numpy as np
import pandas as pd
import pytest

from twinml._validation import ConfigError
from twinml.cohort import TaskDefinition, build_labels, load_task, to_meds_labels

from .conftest import TASK

MI = "SNOMED/22298006"


def _events(rows):
    df = pd.DataFrame(rows, columns=["subject_id", "time", "code"])
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[us]")
    df["numeric_value"] = np.float32(np.nan)
    df["code"] = df["code"].astype("category")
    return df.sort_values(["subject_id", "time"], na_position="first", kind="stable").reset_index(drop=True)


def _base(sid, *, end="2016-01-01"):
    return [
        (sid, None, "GENDER//F"),
        (sid, "1950-01-01", "MEDS_BIRTH"),
        (sid, "2009-01-01", "VISIT"),
        (sid, end, "OBSERVATION_PERIOD//END"),
    ]


@pytest.fixture
def tiny():
    rows = (
        _base(1)
        + [(1, "2012-06-01", MI)]  # MI in year 1 after 2012-01-01
        + _base(2)
        + [(2, "2010-06-01", MI)]  # prior MI: excluded
        + _base(3, end="2012-03-01")  # lost to follow-up: censored
        + _base(4, end="2012-07-01")
        + [(4, "2012-07-01", "MEDS_DEATH")]  # died, no MI: negative
        + _base(5, end="2013-06-01")
        + [(5, "2013-05-01", MI)]
    )  # MI in year 2, followed beyond
    return _events(rows)


def _task(**kw):
    spec = {
        "name": "t",
        "outcomes": {"mi": {"codes": [MI]}},
        "horizons_days": [365, 730],
        "prediction_times": {"start": "2012-01-01", "every_days": 10_000},
        "split": {"strategy": "random"},
    }
    spec.update(kw)
    return TaskDefinition.model_validate(spec)


def _v(x):
    return None if pd.isna(x) else bool(x)


def test_label_rules_on_hand_built_subjects(tiny):
    lab = build_labels(tiny, task=_task()).labels.set_index("subject_id")
    assert _v(lab.loc[1, "mi_365d"]) is True and _v(lab.loc[1, "mi_730d"]) is True
    assert _v(lab.loc[2, "mi_365d"]) is None  # prior outcome: no label
    assert _v(lab.loc[3, "mi_365d"]) is None  # censored, not a negative
    assert _v(lab.loc[4, "mi_365d"]) is False  # death competes: a negative
    assert _v(lab.loc[5, "mi_365d"]) is False and _v(lab.loc[5, "mi_730d"]) is None  # followed < 730d


def test_attrition_counts_each_rule(tiny):
    cohort = build_labels(tiny, task=_task(min_history_days=365 * 4))
    steps = cohort.attrition.set_index("step")["rows"]
    assert steps.iloc[0] == 5 and steps.loc["at least 1460 days of history"] == 0


def test_every_visit_with_a_cap_and_subject_level_splits(events, splits):
    task = _task(
        prediction_times={"strategy": "every_visit", "visit_prefixes": ["SNOMED/185349003"], "max_per_subject": 3},
        split={"strategy": "meds"},
    )
    lab = build_labels(events, task=task, subject_splits=splits).labels
    assert lab.groupby("subject_id").size().max() <= 3
    assert (lab.groupby("subject_id")["split"].nunique() == 1).all()
    truth_split = splits.set_index("subject_id")["split"]
    assert (lab["split"].to_numpy() == truth_split.reindex(lab["subject_id"]).to_numpy()).all()


def test_prefixes_match_code_families(tiny):
    task = _task(outcomes={"mi": {"prefixes": ["SNOMED/222"]}})
    assert _v(build_labels(tiny, task=task).labels.set_index("subject_id").loc[1, "mi_365d"]) is True


def test_meds_label_schema_export(tiny):
    lab = build_labels(tiny, task=_task()).labels
    out = to_meds_labels(lab, "mi_365d")
    assert list(out.columns) == ["subject_id", "prediction_time", "boolean_value"]
    assert len(out) == lab["mi_365d"].notna().sum()


def test_negative_horizon_is_a_clear_error(tmp_path):
    f = tmp_path / "task.yaml"
    f.write_text("name: t\noutcomes: {mi: {codes: [X]}}\nhorizons_days: [365, -30]\n")
    with pytest.raises(ConfigError) as err:
        load_task(f)
    assert str(err.value) == f"{f}: task.horizons_days: must be positive ints. Got -30 instead; got [365, -30]"


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"task.horizon_days is not a known key; did you mean 'horizons_days'\?"):
        load_task({"name": "t", "outcomes": {"mi": {"codes": ["X"]}}, "horizons_days": [1], "horizon_days": [1]})


def test_outcome_needs_codes():
    with pytest.raises(ConfigError, match="an outcome needs at least one entry in 'codes' or 'prefixes'"):
        load_task({"name": "t", "outcomes": {"mi": {}}, "horizons_days": [365]})


TEMPORAL = {"strategy": "temporal", "train_before": "2014-06-01", "test_from": "2016-06-01"}


def test_a_temporal_split_keeps_every_training_window_before_the_test_period(events, splits):
    task = TaskDefinition.model_validate({**TASK, "split": TEMPORAL})
    cohort = build_labels(events, task=task, subject_splits=splits)
    lab = cohort.labels
    fit = lab[lab["split"].isin(["train", "tuning"])]
    test, same = lab[lab["split"] == "held_out"], lab[lab["split"] == "held_out_same_period"]
    assert set(lab["split"]) == {"train", "tuning", "held_out", "held_out_same_period"}
    # the leakage rule: every training label window (730 days at most) ends before the test period begins
    assert (fit["prediction_time"] + pd.Timedelta(days=730)).max() < test["prediction_time"].min()
    assert (fit["prediction_time"] < pd.Timestamp("2014-06-01")).all()
    assert (test["prediction_time"] >= pd.Timestamp("2016-06-01")).all()
    assert (same["prediction_time"] < pd.Timestamp("2014-06-01")).all()
    # no subject on both sides; the tested subjects are the dataset's held-out ones
    held = set(splits.loc[splits["split"] == "held_out", "subject_id"])
    assert not set(fit["subject_id"]) & (set(test["subject_id"]) | set(same["subject_id"]))
    assert set(test["subject_id"]) | set(same["subject_id"]) <= held
    # the labels are the plain cohort's, and the rows left out are counted in the attrition
    plain = build_labels(events, task=TaskDefinition.model_validate(TASK), subject_splits=splits)
    key = ["subject_id", "prediction_time"]
    both = lab.merge(plain.labels, on=key, suffixes=("", "_plain"))
    assert len(both) == len(lab)
    for c in task.label_columns:
        assert both[c].equals(both[f"{c}_plain"].rename(c))
    assert cohort.attrition["rows"].iloc[-2] == len(plain.labels) and cohort.attrition["rows"].iloc[-1] == len(lab)
    assert cohort.attrition["step"].iloc[-1] == "in the temporal split's periods (before 2014-06-01 or from 2016-06-01)"


@pytest.mark.parametrize(
    "split, message",
    [
        (
            {"strategy": "temporal", "train_before": "2014-06-01"},
            "task: task.split: strategy: temporal needs both 'train_before' and 'test_from' (dates); "
            "got {'strategy': 'temporal', 'train_before': '2014-06-01'}",
        ),
        (
            {**TEMPORAL, "test_from": "2014-01-01"},
            "task: task.split: 'test_from' must come after 'train_before'; "
            "got {'strategy': 'temporal', 'train_before': '2014-06-01', 'test_from': '2014-01-01'}",
        ),
        (
            {**TEMPORAL, "test_from": "2015-06-01"},
            "task: task.split: 'test_from' must be at least the longest horizon (730 days) after 'train_before', "
            "so that no training label window reaches the test period; the earliest allowed is 2016-05-31; "
            "got {'strategy': 'temporal', 'train_before': '2014-06-01', 'test_from': '2015-06-01'}",
        ),
        (
            {"strategy": "meds", "subjects": "random"},
            "task: task.split: 'train_before', 'test_from' and 'subjects' belong to strategy: temporal; "
            "got {'strategy': 'meds', 'subjects': 'random'}",
        ),
        (
            {"strategy": "random", "test_from": "2015-06-01"},
            "task: task.split: 'train_before', 'test_from' and 'subjects' belong to strategy: temporal; "
            "got {'strategy': 'random', 'test_from': '2015-06-01'}",
        ),
    ],
)
def test_a_temporal_split_says_what_is_wrong_with_its_dates(split, message):
    with pytest.raises(ConfigError) as err:
        load_task({**TASK, "split": split})
    assert str(err.value) == message
