"""Is the model we score the one the board audited?

The audit records a digest of the audited version's artifacts — the SHA-256 of every file, sorted by
path, hashed together — on the registered version (tag ``twinml.audit.artifact_digest``) and, file by
file, in its run (``audit/artifact_digests.json``). ``promote`` and ``score`` download the version,
recompute the digest *before anything is unpickled*, and refuse a version whose artifacts changed
since its audit, naming the files, unless an override reason is given (recorded on the version).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import mlflow

from .._validation import ConfigError

__all__ = [
    "acting_user",
    "AUDITED_DIGEST_TAG",
    "DIGESTS_ARTIFACT",
    "file_digests",
    "combined_digest",
    "download_model",
    "check_audited_digest",
    "warn_outside_registry",
]

AUDITED_DIGEST_TAG = "twinml.audit.artifact_digest"
DIGESTS_ARTIFACT = "audit/artifact_digests.json"
_CHUNK = 1 << 20
_ADDED = {"registered_model_meta"}
_log = logging.getLogger("twinml")


def acting_user() -> str:
    """Who acts, as recorded on the registry: the tracking server's user (``MLFLOW_TRACKING_USERNAME``,
    never its password) when set, else the operating-system user."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


def file_digests(root) -> dict[str, str]:
    """Relative path (POSIX) -> SHA-256 of every file under ``root``, sorted by path; the file MLflow adds
    when it downloads a registry version (``registered_model_meta``: its name and number) is not the
    model's and is left out, so a download and the stored artifacts give the same digest."""
    root = Path(root)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in _ADDED):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        out[path.relative_to(root).as_posix()] = h.hexdigest()
    return out


def combined_digest(files: dict[str, str]) -> str:
    """One SHA-256 over the sorted ``path, digest`` pairs: any changed, added or removed file changes it."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()


def download_model(uri: str) -> tuple[tempfile.TemporaryDirectory, Path]:
    """The model's artifacts copied into a fresh temporary directory: the directory (removed with it) and
    the model's own folder inside it."""
    tmp = tempfile.TemporaryDirectory(prefix="twinml-model-")
    return tmp, Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp.name))


def warn_outside_registry(model_uri: str) -> None:
    """A model from a path or a foreign URI is a pickle nobody registered: say that loading it runs its code."""
    if not model_uri.startswith(("models:/", "runs:/")):
        _log.warning(
            "loading %s: it is outside the configured registry, and loading a model runs code from its "
            "artifact; load only artifacts you trust (or register it and load models:/NAME/VERSION)",
            model_uri,
        )


def _audited_files(client, mv) -> dict[str, str] | None:
    run_id = mv.tags.get("twinml.audit.run_id")
    if not run_id:
        return None
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{DIGESTS_ARTIFACT}")
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        return None
    return json.loads(text)["files"]


def _changed(audited: dict[str, str] | None, files: dict[str, str]) -> list[str]:
    if audited is None:
        return []
    return sorted(n for n in audited.keys() | files.keys() if audited.get(n) != files.get(n))


def check_audited_digest(mv, files: dict[str, str], *, what: str, override_reason: str | None = None) -> str:
    """Compare a version's artifacts (``files``, as :func:`file_digests`) with the digest its audit recorded.

    Returns the digest. A version never audited has nothing to compare with and passes (promotion asks
    for a passed audit separately). A changed digest raises a ConfigError naming the version and the
    changed files, unless ``override_reason`` is given: then the reason, the user and the digest are
    recorded on the version (``twinml.<what>.digest_override_*``) and it passes.
    """
    now = combined_digest(files)
    audited = mv.tags.get(AUDITED_DIGEST_TAG)
    if audited is None or audited == now:
        return now
    client = mlflow.MlflowClient()
    changed = _changed(_audited_files(client, mv), files)
    listed = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
    if override_reason:
        for key, value in (("reason", override_reason), ("by", acting_user()), ("digest", now)):
            client.set_model_version_tag(mv.name, mv.version, f"twinml.{what}.digest_override_{key}", value)
        _log.warning("%s: %s version %s changed since its audit (%s); overridden", what, mv.name, mv.version, listed)
        return now
    raise ConfigError(
        f"{what}: {mv.name} version {mv.version}: its artifacts changed since the audit "
        f"(digest {now[:12]}… is not the audited {audited[:12]}…; changed: {listed or 'see the audit run'}). "
        "Audit the version again, or pass an override reason (CLI: --override 'REASON'), which is recorded on it."
    )
