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
from sklearn.metrics import roc_auc_score, roc_curve

from ._metrics import bootstrap_ci

__all__ = ["subject_losses", "membership_attack", "reference_attack"]

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
