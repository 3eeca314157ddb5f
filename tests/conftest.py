"""Shared fixtures: one small simulated cohort per session, fixed seeds everywhere."""

import random

import numpy as np
import pytest

from twinml.cohort import TaskDefinition
from twinml.data import read_meds, read_subject_splits
from twinml.simulate import simulate

TASK = {
    "name": "test-task",
    "outcomes": {"t2d": {"codes": ["SNOMED/44054006"]}, "mi": {"codes": ["SNOMED/22298006"]},
                 "death": {"codes": ["MEDS_DEATH"]}},
    "horizons_days": [365, 730],
    "prediction_times": {"strategy": "yearly", "start": "2012-01-01", "every_days": 365},
}


@pytest.fixture(autouse=True)
def _seeds():
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def small_cohort():
    return simulate(n_subjects=1500, seed=11)


@pytest.fixture(scope="session")
def meds_dir(small_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "meds"
    small_cohort.write(out)
    return out


@pytest.fixture(scope="session")
def events(meds_dir):
    return read_meds(meds_dir)


@pytest.fixture(scope="session")
def splits(meds_dir):
    return read_subject_splits(meds_dir)


@pytest.fixture(scope="session")
def task():
    return TaskDefinition.model_validate(TASK)
