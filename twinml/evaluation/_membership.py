"""Does the model leak who was in its training set? A loss-threshold membership-inference attack on subjects.

A model that memorised its training subjects gives them a lower loss than subjects it never saw. The
attack scores each subject by minus its mean log loss (over its prediction times and known labels) and
tries to tell training subjects (members) from held-out ones (non-members) by that score alone. Its
AUROC is the audit's measure of leakage: 0.5 is no better than a coin. Reported with a bootstrap
interval over subjects and the true-positive rate at a false-positive rate of 1 % and 0.1 % (the
low-FPR regime is where membership inference matters: a confident claim about a few people).

:func:`reference_attack` is the stronger, RMIA-style attack (Zarifzadeh et al., 2024, offline form):
some subjects are simply easy to predict, which a loss threshold mistakes for membership. Reference
models of the same kind, trained on disjoint samples of other subjects (none of those attacked),
say how likely each subject's labels are without it; a subject is scored by how often the target
model's likelihood ratio to the references beats that of population subjects who were in no
training set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import roc_auc_score, roc_curve

from .._validation import ConfigError
from ._metrics import bootstrap_ci

__all__ = ["subject_losses", "membership_attack", "reference_attack", "membership_audit"]

_EPS = 1e-7


def subject_losses(labels: pd.DataFrame, risks: pd.DataFrame, columns) -> pd.Series:
    """Each subject's mean binary log loss over its rows and the ``columns`` whose label is known."""
    total = np.zeros(len(labels))
    count = np.zeros(len(labels))
    for c in columns:
        y = labels[c].to_numpy(dtype=float, na_value=np.nan)
        p = np.clip(risks[c].to_numpy(float), _EPS, 1 - _EPS)
        known = ~np.isnan(y)
        loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
        total += np.where(known, loss, 0.0)
        count += known
    frame = pd.DataFrame({"subject_id": labels["subject_id"].to_numpy(), "loss": total, "n": count})
    grouped = frame.groupby("subject_id", sort=True)[["loss", "n"]].sum()
    grouped = grouped[grouped["n"] > 0]
    return grouped["loss"] / grouped["n"]


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest true-positive rate at a false-positive rate of at most ``target``."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def membership_attack(member_losses: pd.Series, non_member_losses: pd.Series, *, n_boot: int = 200, seed: int = 0):
    """The loss-threshold attack's AUROC (with a 95 % bootstrap interval over subjects) and its TPR at
    FPR 1 % and 0.1 %, from per-subject losses of members and non-members."""
    score = -np.r_[member_losses.to_numpy(), non_member_losses.to_numpy()]
    return _attack_metrics("loss threshold", member_losses.size, non_member_losses.size, score, n_boot, seed)


def reference_attack(
    target: pd.Series,
    references: pd.DataFrame,
    members,
    non_members,
    population,
    *,
    a: float = 1.0,
    n_boot: int = 200,
    seed: int = 0,
):
    """The RMIA-style attack with reference models, offline (no reference model saw an attacked subject).

    ``target``: each subject's mean log loss under the attacked model (:func:`subject_losses`);
    ``references``: the same under each reference model (one column each); ``members``,
    ``non_members``: the attacked subjects; ``population``: other subjects in no training set.
    A subject's likelihood is ``exp(-loss)``; its likelihood without it, ``p(x) = ((1 + a) mean_ref +
    (1 - a)) / 2`` (RMIA's offline form; ``a`` < 1 guesses what reference models that trained on the
    subject would say, and is calibrated on reference models in the paper; here it stays 1, the plain
    mean over references, because a subject's likelihood is an average over many mostly negative labels,
    not one example's, and no IN model is trained); its score, the share of population subjects ``z``
    with ``p(x|target)/p(x) > p(z|target)/p(z)``. Same outputs as :func:`membership_attack`, plus the
    number of references."""
    ratio = np.exp(-target) / (((1 + a) * np.exp(-references).mean(axis=1) + (1 - a)) / 2)
    z = np.sort(ratio.reindex(pd.Index(population)).dropna().to_numpy())
    m, n = ratio.reindex(pd.Index(members)).dropna(), ratio.reindex(pd.Index(non_members)).dropna()
    score = np.asarray(np.searchsorted(z, np.r_[m.to_numpy(), n.to_numpy()], side="left"), float) / max(z.size, 1)
    out = _attack_metrics("reference models (RMIA-style)", m.size, n.size, score, n_boot, seed)
    return out | {"reference_models": int(references.shape[1]), "population": int(z.size)}


def _attack_metrics(name: str, n_members: int, n_non_members: int, score: np.ndarray, n_boot: int, seed: int):
    """AUROC with a subject-bootstrap interval and TPR at FPR 1 % and 0.1 % of ``score`` (members first)."""
    out = {"attack": name, "members": int(n_members), "non_members": int(n_non_members)}
    if not n_members or not n_non_members:
        return out | {"auc": float("nan"), "auc_lo": float("nan"), "auc_hi": float("nan")}
    y = np.r_[np.ones(n_members), np.zeros(n_non_members)]
    lo, hi = bootstrap_ci(roc_auc_score, y, score, n_boot=n_boot, seed=seed)
    fpr, tpr, _ = roc_curve(y, score)
    return out | {
        "auc": float(roc_auc_score(y, score)),
        "auc_lo": lo,
        "auc_hi": hi,
        "tpr_at_fpr_1pct": _tpr_at(fpr, tpr, 0.01),
        "tpr_at_fpr_0_1pct": _tpr_at(fpr, tpr, 0.001),
    }


def membership_audit(
    model,
    events: pd.DataFrame,
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    columns,
    *,
    max_subjects: int = 2000,
    reference_models: int = 0,
    reference_rows: pd.DataFrame | None = None,
    reference_subjects: int | None = None,
    fit_events: pd.DataFrame | None = None,
    tuning_labels: pd.DataFrame | None = None,
    n_boot: int = 200,
    seed: int = 0,
    progress=print,
) -> dict:
    """Both attacks on the same subjects, over all ``columns`` pooled and over each alone.

    ``members``: label rows of subjects the model trained on; ``non_members``: rows of subjects it never
    saw. Subjects with a known label are drawn at random (``seed``): up to ``max_subjects`` non-members
    and as many members. With ``reference_models`` K > 0, as many other never-seen subjects are the
    population, and K copies of the model (``sklearn.base.clone``: same kind and settings) are fitted
    on disjoint samples of ``reference_rows`` (default: the rows of the training subjects not drawn as
    members) with ``tuning_labels``, on ``events`` or ``fit_events``; each takes an equal share of those
    subjects, at most ``reference_subjects``. No reference model sees an attacked subject, so the
    attack is RMIA's offline form (:func:`reference_attack`). Returns the subject counts and
    ``attacks``: one row per label (``all`` first) and attack."""
    rng = np.random.default_rng(seed)
    outside = _known_subjects(non_members, columns, rng)
    n = min(max_subjects, outside.size // 2 if reference_models else outside.size)
    non_ids, pop_ids = outside[:n], outside[n : 2 * n] if reference_models else outside[:0]
    member_ids = _known_subjects(members, columns, rng)[:n]
    attacked = pd.concat([_of(members, member_ids), _of(non_members, np.r_[non_ids, pop_ids])], ignore_index=True)
    target = _losses(model.predict_risk(events, attacked), attacked, columns)
    refs, size = [], 0
    if reference_models:
        pool_rows = members[~members["subject_id"].isin(member_ids)] if reference_rows is None else reference_rows
        pool = rng.permutation(np.setdiff1d(pool_rows["subject_id"].unique(), attacked["subject_id"].unique()))
        size = min(pool.size // reference_models, reference_subjects or pool.size)
        if size < 1:
            raise ConfigError(
                f"membership.reference_models: {reference_models} reference models need at least one subject each; "
                f"{pool.size} training subjects are left once {member_ids.size} members are drawn."
            )
        for k in range(reference_models):
            progress(f"membership: reference model {k + 1}/{reference_models} on {size:,} subjects")
            ref = _fresh_copy(model).fit(
                events if fit_events is None else fit_events,
                _of(pool_rows, pool[k * size : (k + 1) * size]),
                tuning_labels=tuning_labels,
            )
            refs.append(_losses(ref.predict_risk(events, attacked), attacked, columns))
    attacks = []
    for label in target.columns:
        t = target[label]
        attacks.append(
            {"label": label}
            | membership_attack(t.reindex(member_ids).dropna(), t.reindex(non_ids).dropna(), n_boot=n_boot, seed=seed)
        )
        if refs:
            r = pd.concat({k: ref[label] for k, ref in enumerate(refs)}, axis=1)
            attacks.append(
                {"label": label} | reference_attack(t, r, member_ids, non_ids, pop_ids, n_boot=n_boot, seed=seed)
            )
    counts = {"members": int(member_ids.size), "non_members": int(non_ids.size), "population": int(pop_ids.size)}
    return counts | {"reference_models": int(reference_models), "reference_subjects": int(size), "attacks": attacks}


def _fresh_copy(model):
    """An unfitted copy of ``model`` (same kind and settings), or a clear error for a model that cannot be
    refitted that way."""
    try:
        return clone(model)
    except (TypeError, RuntimeError, AttributeError) as e:
        raise ConfigError(
            f"membership.reference_models: a {type(model).__name__} cannot be refitted as a reference model "
            f"(sklearn.base.clone: {e}); audit the model it was built from, or set reference_models: 0."
        ) from None


def _known_subjects(rows: pd.DataFrame, columns, rng) -> np.ndarray:
    """The subjects of ``rows`` with a known label in ``columns``, in a random order."""
    known = rows[list(columns)].notna().any(axis=1).to_numpy()
    return rng.permutation(np.sort(rows.loc[known, "subject_id"].unique()))


def _of(rows: pd.DataFrame, subjects) -> pd.DataFrame:
    return rows[rows["subject_id"].isin(subjects)]


def _losses(risks: pd.DataFrame, rows: pd.DataFrame, columns) -> pd.DataFrame:
    """Each subject's mean log loss over all ``columns`` (``all``) and over each alone (NaN: none known)."""
    return pd.DataFrame(
        {"all": subject_losses(rows, risks, columns)} | {c: subject_losses(rows, risks, [c]) for c in columns}
    )
