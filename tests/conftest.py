"""Shared fixtures: one small simulated cohort per session, fixed seeds everywhere."""

import contextlib
import random

import numpy as np
import pytest

from twinml.cohort import TaskDefinition, build_labels
from twinml.data import read_meds, read_subject_splits
from twinml.simulate import simulate

TASK = {
    "name": "test-task",
    "outcomes": {
        "t2d": {"codes": ["SNOMED/44054006"]},
        "mi": {"codes": ["SNOMED/22298006"]},
        "death": {"codes": ["MEDS_DEATH"]},
    },
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


@pytest.fixture(scope="module")
def labels(events, task, splits):
    """The shared test task's labels on the small simulated cohort, every split."""
    return build_labels(events, task=task, subject_splits=splits).labels


def split_rows(labels, name):
    """The rows of one split, re-indexed from 0."""
    return labels[labels["split"] == name].reset_index(drop=True)


def train_and_serve(tmp_path, model: dict, *, n_subjects: int = 400):
    """Train ``model`` (a config's ``model`` block) through the pipeline on a small simulated cohort,
    check that its registered pyfunc scores five subjects exactly as the fitted model does, and
    return the train result and its MLflow run."""
    import mlflow
    import pandas as pd

    from twinml.config import load_config
    from twinml.data import read_meds
    from twinml.pipeline import train
    from twinml.tracking import as_pyfunc_input

    cfg = load_config(
        {
            "name": model["kind"],
            "data": {"path": str(tmp_path / "meds"), "simulator": {"n_subjects": n_subjects}},
            "task": TASK,
            "model": model,
            "evaluation": {"n_bootstrap": 10},
        }
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = train(cfg, tracking_uri=uri)
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(res.run_id)
    events = read_meds(cfg.data.path)
    some = events[events["subject_id"].isin(events["subject_id"].unique()[:5])].reset_index(drop=True)
    mlflow.set_tracking_uri(uri)
    out = mlflow.pyfunc.load_model(res.model_uri).predict(
        as_pyfunc_input(some), params={"prediction_time": "2017-01-01"}
    )
    index = pd.DataFrame(
        {"subject_id": some["subject_id"].unique(), "prediction_time": pd.Timestamp("2017-01-01").as_unit("us")}
    )
    pd.testing.assert_frame_equal(out.reset_index(drop=True), res.model.predict_risk(some, index), check_dtype=False)
    if getattr(res.model, "trajectory_codes_", None):  # the pyfunc's other output: trajectory forecasts
        out = mlflow.pyfunc.load_model(res.model_uri).predict(
            as_pyfunc_input(some), params={"prediction_time": "2017-01-01", "output": "trajectory"}
        )
        pd.testing.assert_frame_equal(
            out.reset_index(drop=True), res.model.predict_trajectory(some, index), check_dtype=False
        )
    return res, run


def chromium() -> str | None:
    """The headless browser the report tests render with (the Debian package ``chromium``), or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


NEEDS_CHROMIUM = "needs Chromium (Debian package 'chromium'); .ci/run installs it"


@contextlib.contextmanager
def running_mlflow_server(root, *extra, env=None):
    """A real ``mlflow server`` on a free port of 127.0.0.1 (SQLite backend, proxied artifacts under
    ``root``, ``extra`` arguments, ``env`` added to the environment), its URL yielded; stopped afterwards.
    Its output goes to ``root/server.log``, whose tail is the error if it does not start."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", *extra, "--backend-store-uri", f"sqlite:///{root / 'server.db'}"]
    cmd += ["--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below, after the server stops
    proc = subprocess.Popen(
        [*cmd, "--workers", "1"],
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
