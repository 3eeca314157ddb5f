"""Is the model we score the one the board audited? The audit records its artifacts' digest; a byte
changed afterwards makes score and promote refuse, naming the version and the file."""

import json
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
from typer.testing import CliRunner

from twinml._validation import ConfigError
from twinml.audit import load_policy, run_audit
from twinml.cli import app
from twinml.config import load_config
from twinml.pipeline import train
from twinml.scoring import read_score_metadata, score
from twinml.tracking import AUDITED_DIGEST_TAG, combined_digest, file_digests, load_registered_model, promote

from .conftest import TASK

NAME = "tamper-me"
GATES = ("min_auroc_lower_bound", "max_ece", "max_subgroup_auroc_gap", "min_observed_expected_ratio")
# every gate off: this audit passes, so what stops promotion below is the changed byte alone
POLICY = {
    "n_bootstrap": 0,
    "explain": {"n_rows": 30},
    "mitigation": {"attribute": None},
    "gates": {**dict.fromkeys(GATES), "min_true_risk_ratio": None, "min_faithfulness_ratio": None},
    "membership": {"enabled": False},  # 400 subjects: a small training set leaks (see test_privacy)
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = {
        "name": "integrity",
        "data": {"source": "simulator", "path": str(root / "meds"), "simulator": {"n_subjects": 400, "seed": 2}},
        "task": TASK,
        "model": {"kind": "logistic"},
        "evaluation": {"n_bootstrap": 0},
        "tracking": {"uri": uri, "experiment": "integrity", "register_as": NAME},
    }
    train(load_config(cfg))
    res = run_audit(
        f"models:/{NAME}/1", root / "meds", policy=load_policy(POLICY), out=root / "audit", tracking_uri=uri
    )
    assert res.passed
    return root, uri, res


def _artifact_dir(uri: str) -> Path:
    """Where the registry keeps version 1's files (a local artifact store)."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    source = client.get_model_version(NAME, "1").source
    location = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
    return Path(unquote(urlparse(location).path))


def test_the_audit_records_the_digest_of_what_it_audited(audited):
    root, uri, res = audited
    version = mlflow.MlflowClient(tracking_uri=uri).get_model_version(NAME, "1")
    files = file_digests(_artifact_dir(uri))
    assert version.tags[AUDITED_DIGEST_TAG] == combined_digest(files) == res.report["lineage"]["artifact_digest"]
    saved = json.loads(
        mlflow.artifacts.load_text(f"runs:/{version.tags['twinml.audit.run_id']}/audit/artifact_digests.json")
    )
    assert saved["files"] == files and "python_model.pkl" in files


def test_a_byte_changed_after_the_audit_stops_score_and_promote(audited, tmp_path):
    root, uri, _ = audited
    before = score(f"models:/{NAME}/1", root / "meds", "2015-01-01", tmp_path / "ok.parquet", tracking_uri=uri)
    assert read_score_metadata(tmp_path / "ok.parquet")["model_digest"] == before.model_digest
    target = _artifact_dir(uri) / "requirements.txt"
    data = bytearray(target.read_bytes())
    data[-1] = ord(" ") if data[-1] != ord(" ") else ord("\n")  # one byte
    target.write_bytes(bytes(data))

    with pytest.raises(
        ConfigError, match=r"score: tamper-me version 1: its artifacts changed since the audit .*requirements\.txt"
    ):
        score(f"models:/{NAME}/1", root / "meds", "2015-01-01", tmp_path / "no.parquet", tracking_uri=uri)
    assert not (tmp_path / "no.parquet").exists()
    runner = CliRunner()
    res = runner.invoke(app, ["promote", NAME, "--version", "1", "--alias", "champion", "--tracking-uri", uri])
    assert res.exit_code == 2 and "version 1" in res.output and "requirements.txt" in res.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert "champion" not in client.get_registered_model(NAME).aliases

    # an override lets it through, and is recorded on the version
    promote(NAME, "1", "champion", override_reason="pinned requirement fixed by hand, ticket 42", tracking_uri=uri)
    forced = score(
        f"models:/{NAME}/1", root / "meds", "2015-01-01", tmp_path / "forced.parquet", tracking_uri=uri,
        override="re-audit scheduled",
    )  # fmt: skip
    tags = client.get_model_version(NAME, "1").tags
    assert tags["twinml.promote.digest_override_reason"] == "pinned requirement fixed by hand, ticket 42"
    assert tags["twinml.score.digest_override_reason"] == "re-audit scheduled"
    assert forced.model_digest == tags["twinml.score.digest_override_digest"] != tags[AUDITED_DIGEST_TAG]


def test_a_model_outside_the_registry_loads_with_a_warning(audited, caplog):
    _, uri, _ = audited
    with caplog.at_level(logging.WARNING, logger="twinml"):
        loaded = load_registered_model(str(_artifact_dir(uri)), tracking_uri=uri)
    assert loaded.version is None and "loading a model runs code from its artifact" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="twinml"):
        load_registered_model(f"models:/{NAME}/1", tracking_uri=uri, verify=None)
    assert caplog.text == ""
