"""Roles on a twinml tracking server: who may train, audit, promote and score.

The server is ``mlflow server --app-name twinml-auth --enable-workspaces`` (MLflow's basic-auth app with
one more rule, :mod:`twinml.tracking._auth_app`) with ``default_permission = NO_PERMISSIONS``. The roles
are MLflow roles, made of MLflow permissions; :func:`setup_roles` creates them with MLflow's own auth
client and assigns users. Measured by ``tests/test_access_control.py`` against a real server:

- ``data-scientist``: creates experiments and runs, registers versions (EDIT on registered models),
  reads versions but cannot tag them (so cannot forge an audit verdict) nor move an alias.
- ``auditor``: reads every model, logs its audit runs (beside the training run, so EDIT on experiments),
  tags versions (the audit's verdict and digest); cannot register or promote.
- ``scorer``: reads experiments and registered models (enough to download and score a version);
  cannot create, log, tag or promote anything.
- promotion: an admin (or a user granted MANAGE on the one registered model).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ROLES", "setup_roles"]

# role -> MLflow permissions (resource type, pattern, permission)
ROLES: dict[str, list[tuple[str, str, str]]] = {
    "data-scientist": [
        ("workspace", "*", "USE"),
        ("experiment", "*", "EDIT"),
        ("registered_model", "*", "EDIT"),
        ("registered_model_version", "*", "READ"),
    ],
    "auditor": [
        ("workspace", "*", "USE"),
        ("experiment", "*", "EDIT"),  # the audit's run sits in the training run's experiment
        ("registered_model", "*", "READ"),
        ("registered_model_version", "*", "EDIT"),
    ],
    "scorer": [
        ("experiment", "*", "READ"),
        ("registered_model", "*", "READ"),
    ],
}


def setup_roles(tracking_uri: str, members: Mapping[str, str], *, workspace: str = "default") -> dict[str, int]:
    """Create twinml's roles on the server (a role that exists is reused as it is) and assign each user of
    ``members`` (username -> role: ``data-scientist``, ``auditor`` or ``scorer``) to theirs. Run as an
    admin: credentials come from ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, as for every
    MLflow client. Returns role name -> role id (the roles are named ``twinml-<role>``)."""
    from mlflow.server import get_app_client

    from .._validation import ConfigError

    unknown = sorted(set(members.values()) - set(ROLES))
    if unknown:
        raise ConfigError(f"setup_roles: role {unknown[0]!r} is not one of {sorted(ROLES)}")
    client = get_app_client("twinml-auth", tracking_uri=tracking_uri)
    existing = {r.name: r.id for r in client.list_roles(workspace)}
    ids = {}
    for role, permissions in ROLES.items():
        name = f"twinml-{role}"
        if name not in existing:
            existing[name] = client.create_role(workspace, name, description=f"twinml {role}").id
            for resource_type, pattern, permission in permissions:
                client.add_role_permission(existing[name], resource_type, pattern, permission)
        ids[name] = existing[name]
    for user, role in members.items():
        client.assign_role(user, ids[f"twinml-{role}"])
    return ids
