"""Roles on a real tracking server: ``mlflow server --app-name twinml-auth --enable-workspaces``, started
and stopped here, with an admin, a data scientist, an auditor and a scorer (README: Deploying with access
control). Each user acts through twinml's own functions with MLflow's credentials variables."""

import os

import mlflow
import pytest

from twinml._validation import ConfigError
from twinml.audit import load_policy, run_audit
from twinml.config import load_config
from twinml.pipeline import train
from twinml.scoring import score
from twinml.tracking import AUDIT_PASSED_TAG, promote, setup_roles

from .conftest import TASK, running_mlflow_server
from .test_integrity import POLICY

pytestmark = [pytest.mark.server, pytest.mark.slow]

NAME = "t2d-risk"
PASSWORDS = {u: f"{u}-Secret-{i}x9q" for i, u in enumerate(("admin", "alice", "audrey", "sam"))}
ROLE_OF = {"alice": "data-scientist", "audrey": "auditor", "sam": "scorer"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"  # one PBKDF2 check per user a minute, not per request
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORDS["admin"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
    }
    with running_mlflow_server(root, "--app-name", "twinml-auth", "--enable-workspaces", env=env) as url:
        yield root, url


def _as(monkeypatch, user):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS[user])


def _refused(fn):
    with pytest.raises((mlflow.exceptions.MlflowException, ConfigError)) as err:
        fn()
    text = str(err.value)
    assert "403" in text or "permission denied" in text.lower(), text
    return text


def test_roles_separate_training_audit_promotion_and_scoring(server, tmp_path, monkeypatch, capsys):
    root, url = server
    client = mlflow.MlflowClient(tracking_uri=url)
    _as(monkeypatch, "admin")
    from mlflow.server import get_app_client

    auth = get_app_client("twinml-auth", tracking_uri=url)
    for user in ROLE_OF:
        auth.create_user(user, PASSWORDS[user])
    setup_roles(url, ROLE_OF)
    client.create_registered_model(NAME)  # the admin owns the production model; others only add versions

    # the data scientist trains and registers version 1, and can neither vouch for it nor promote it
    _as(monkeypatch, "alice")
    cfg = {
        "name": "access",
        "data": {"source": "simulator", "path": str(tmp_path / "meds"), "simulator": {"n_subjects": 400, "seed": 2}},
        "task": TASK,
        "model": {"kind": "logistic"},
        "evaluation": {"n_bootstrap": 0},
        "tracking": {"uri": url, "experiment": "access", "register_as": NAME},
    }
    res = train(load_config(cfg))
    assert client.get_model_version(NAME, "1").run_id == res.run_id
    _refused(lambda: client.set_model_version_tag(NAME, "1", AUDIT_PASSED_TAG, "true"))
    _refused(lambda: client.set_registered_model_alias(NAME, "champion", "1"))
    with pytest.raises(ConfigError, match="refused user 'alice' tagging the version"):
        promote(NAME, 1, "champion", override_reason="ship it", tracking_uri=url)

    # the auditor reads the model and the training run, runs the audit, which tags the version ...
    _as(monkeypatch, "audrey")
    audit = run_audit(
        f"models:/{NAME}/1", tmp_path / "meds", policy=load_policy(POLICY), out=tmp_path / "audit", tracking_uri=url
    )
    assert audit.passed and client.get_model_version(NAME, "1").tags[AUDIT_PASSED_TAG] == "true"
    # ... and cannot promote: the server refuses the alias; the version records the refused attempt
    with pytest.raises(ConfigError, match="refused user 'audrey' moving the alias"):
        promote(NAME, 1, "champion", tracking_uri=url)
    assert client.get_model_version(NAME, "1").tags["twinml.promotion.champion"] == "refused"
    assert not client.get_registered_model(NAME).aliases
    _refused(lambda: client.create_model_version(NAME, f"runs:/{res.run_id}/model", res.run_id))

    # only the admin promotes
    _as(monkeypatch, "admin")
    assert promote(NAME, 1, "champion", tracking_uri=url)["audit"] == "true"
    assert client.get_model_version_by_alias(NAME, "champion").version == "1"
    assert client.get_model_version(NAME, "1").tags["twinml.promotion.champion"] == "audit passed"

    # the scorer reads and scores the champion, and cannot write anything
    _as(monkeypatch, "sam")
    report = score(
        f"models:/{NAME}@champion", tmp_path / "meds", "2016-01-01", tmp_path / "s.parquet", tracking_uri=url
    )
    assert report.model_version == "1" and report.subjects > 0
    _refused(lambda: client.set_model_version_tag(NAME, "1", "note", "x"))
    _refused(lambda: client.set_registered_model_alias(NAME, "challenger", "1"))
    _refused(lambda: client.create_experiment("scorer-notes"))
    _refused(lambda: client.create_run(client.get_experiment_by_name("access").experiment_id))
    _refused(lambda: client.create_registered_model("scorer-model"))

    # no user, no password: nothing twinml logged or printed holds a credential
    _as(monkeypatch, "admin")
    out = capsys.readouterr()
    seen = [out.out, out.err]
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            seen += [repr(run.data.params), repr(run.data.tags)]
            for name in ("config.yaml", "config.json"):
                try:
                    seen.append(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{name}"))
                except Exception:  # noqa: BLE001 - not every run has a config
                    pass
    seen += [repr(client.get_model_version(NAME, "1").tags)]
    for secret in PASSWORDS.values():
        assert not any(secret in text for text in seen)
