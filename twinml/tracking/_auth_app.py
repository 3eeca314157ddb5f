"""``mlflow server --app-name twinml-auth``: MLflow's basic-auth app plus one rule, promotion needs MANAGE.

MLflow's permissions cannot keep a data scientist who registers versions from promoting them: creating
a model version and moving an alias both need EDIT on the registered model. This app is MLflow's own
``basic-auth`` app (users, roles, permissions, unchanged) with one more check after it: setting or
deleting a registered model's alias (``twinml promote``) needs MANAGE on that model, or an admin.
Everything else, including who may tag a version (the audit), is MLflow's. See the README's
"Deploying with access control" for the roles twinml is tested with.

Note that MLflow grants MANAGE on a registered model to the user who creates it: let an admin (or
whoever will promote) create each production model, so data scientists only add versions to it.
"""

from __future__ import annotations

__all__ = ["create_app", "ALIAS_ROUTE"]

ALIAS_ROUTE = "/mlflow/registered-models/alias"  # under /api/2.0 and /ajax-api/2.0


def create_app(app=None):
    """MLflow's basic-auth app with the promotion rule (an ``mlflow.app`` factory): what MLflow's
    ``create_app`` returns (under uvicorn, an ASGI app around the Flask one)."""
    from mlflow.server import app as server_app
    from mlflow.server.auth import create_app as basic_auth_app

    flask_app = app if app is not None else server_app
    served = basic_auth_app(flask_app)
    # registered after basic-auth's own check, so it runs after it: the user is known and allowed the request
    flask_app.before_request(_promotion_needs_manage)
    return served


def _promotion_needs_manage():
    from flask import request
    from mlflow.server import auth

    if request.method not in ("POST", "DELETE") or not request.path.endswith(ALIAS_ROUTE):
        return None
    if auth.sender_is_admin() or auth.validate_can_manage_registered_model():
        return None
    return auth.make_forbidden_response()
