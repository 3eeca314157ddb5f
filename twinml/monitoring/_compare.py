"""Two panels' profiles compared feature by feature: an effect size, a permutation p-value, a flag.

Every feature becomes a 2 x k table of subjects (reference / current by bin): a number is binned at
the reference's deciles, a trait by its categories, a code by whether the subject has it. For each:

- the effect: the population stability index (PSI, the symmetrised Kullback-Leibler divergence of
  the two binned distributions; 0.1 is the customary "moderate shift", 0.25 "major");
- the statistic: the G statistic of homogeneity, and its chi-square p-value;
- the multiplicity: a single-step Westfall-Young min-p adjustment over every tested feature of the
  report. Under the null hypothesis the subjects' reference/current labels are exchangeable, so a
  permutation of them draws each table's reference row from a multivariate hypergeometric
  distribution: we draw those directly (cost independent of the panel's size), each feature on its
  own, and compare each observed p-value with the distribution of the smallest null p-value. Drawing
  features independently ignores their correlation, which makes the adjustment conservative.

A feature is flagged when its adjusted p-value is below ``alpha`` *and* its PSI reaches ``min_psi``:
with a million subjects a trivial difference is significant, so both must hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from ._profile import PanelProfile

__all__ = ["FeatureTable", "feature_tables", "score_tables", "unseen_codes"]

_DECILES = np.linspace(0.1, 0.9, 9)
_MISSING = "(none)"


@dataclass
class FeatureTable:
    group: str
    feature: str
    kind: str  # number, category or presence
    bins: list[str]
    reference: np.ndarray  # subjects per bin
    current: np.ndarray


def _numeric_table(group, feature, ref, cur) -> FeatureTable | None:
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    edges = np.unique(np.quantile(ref, _DECILES)) if ref.size else np.zeros(0)
    if edges.size == 0:
        return None
    labels = (
        [f"< {edges[0]:.4g}"] + [f"[{a:.4g}, {b:.4g})" for a, b in zip(edges[:-1], edges[1:])] + [f">= {edges[-1]:.4g}"]
    )
    k = edges.size + 1
    count = lambda v: np.bincount(np.searchsorted(edges, v, side="right"), minlength=k)  # noqa: E731
    return FeatureTable(group, feature, "number", labels, count(ref), count(cur))


def _category_table(group, feature, ref, cur) -> FeatureTable:
    cats = sorted(set(ref.tolist()) | set(cur.tolist()), key=lambda c: (c == _MISSING, c))
    index = {c: i for i, c in enumerate(cats)}
    count = lambda v: np.bincount([index[c] for c in v], minlength=len(cats))  # noqa: E731
    return FeatureTable(group, feature, "category", cats, count(ref), count(cur))


def feature_tables(reference: PanelProfile, current: PanelProfile, *, min_subjects: int) -> list[FeatureTable]:
    """One table per feature both panels can be compared on.

    A number needs ``min_subjects`` values in each panel; a code is tested when at least
    ``min_subjects`` subjects of the two panels together have it.
    """
    tables: list[FeatureTable] = []
    for key in sorted(set(reference.numeric) & set(current.numeric)):
        ref, cur = reference.numeric[key], current.numeric[key]
        if min(np.isfinite(ref).sum(), np.isfinite(cur).sum()) >= min_subjects:
            table = _numeric_table(*key, ref, cur)
            tables += [table] if table is not None and len(table.bins) > 1 else []
    for key in sorted(set(reference.categorical) | set(current.categorical)):
        ref = reference.categorical.get(key, np.full(reference.n_subjects, _MISSING, object))
        cur = current.categorical.get(key, np.full(current.n_subjects, _MISSING, object))
        table = _category_table(*key, ref, cur)
        tables += [table] if len(table.bins) > 1 else []
    ref_codes, cur_codes = reference.code_subjects, current.code_subjects
    both = ref_codes.add(cur_codes, fill_value=0)
    for code in sorted(both.index[both >= min_subjects]):
        r, c = int(ref_codes.get(code, 0)), int(cur_codes.get(code, 0))
        tables.append(
            FeatureTable(
                "codes", code, "presence", ["recorded", "not recorded"],
                np.array([r, reference.n_subjects - r]), np.array([c, current.n_subjects - c]),
            )
        )  # fmt: skip
    return tables


def _psi(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """PSI of reference/current count rows (..., k), with half a subject added to every bin."""
    k = ref.shape[-1]
    p = (ref + 0.5) / (ref.sum(-1, keepdims=True) + 0.5 * k)
    q = (cur + 0.5) / (cur.sum(-1, keepdims=True) + 0.5 * k)
    return ((q - p) * np.log(q / p)).sum(-1)


def _g_pvalue(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Chi-square p-value of the G statistic of the 2 x k tables (..., k); bins empty in both are dropped."""
    pooled = ref + cur
    n_ref = ref.sum(-1, keepdims=True)
    n_cur = cur.sum(-1, keepdims=True)
    n = n_ref + n_cur
    g = np.zeros(ref.shape[:-1])
    for obs, n_row in ((ref, n_ref), (cur, n_cur)):
        expected = pooled * n_row / n
        with np.errstate(divide="ignore", invalid="ignore"):
            g += 2.0 * np.where(obs > 0, obs * np.log(obs / expected), 0.0).sum(-1)
    dof = np.maximum((pooled > 0).sum(-1) - 1, 1)
    return chi2.sf(g, dof)


def score_tables(tables: list[FeatureTable], *, alpha: float, min_psi: float, permutations: int, seed: int):
    """Each table's PSI, p-value, Westfall-Young adjusted p-value and flag, as dicts."""
    if not tables:
        return []
    rng = np.random.default_rng(seed)
    null_min = np.ones(permutations)
    observed = []
    for t in tables:
        psi = float(_psi(t.reference, t.current))
        p = float(_g_pvalue(t.reference, t.current))
        pooled, n_ref = t.reference + t.current, int(t.reference.sum())
        draws = rng.multivariate_hypergeometric(pooled, n_ref, size=permutations)
        null_min = np.minimum(null_min, _g_pvalue(draws, pooled - draws))
        observed.append((psi, p))
    null_sorted = np.sort(null_min)
    rows = []
    for t, (psi, p) in zip(tables, observed):
        adjusted = (1 + np.searchsorted(null_sorted, p, side="right")) / (permutations + 1)
        rows.append(
            {
                "group": t.group,
                "feature": t.feature,
                "kind": t.kind,
                "n_reference": int(t.reference.sum()),
                "n_current": int(t.current.sum()),
                "psi": psi,
                "p_value": p,
                "p_adjusted": float(adjusted),
                "flagged": bool(adjusted < alpha and psi >= min_psi),
                "bins": t.bins,
                "reference_counts": t.reference.tolist(),
                "current_counts": t.current.tolist(),
            }
        )
    return rows


def unseen_codes(reference: PanelProfile, current: PanelProfile, model_vocabulary=None) -> dict:
    """The current window's events whose code the reference panel never recorded (the gate's rate), and,
    given the model's vocabulary, the share whose code the model cannot read (codes it never saw, or saw
    too rarely to keep)."""
    events = current.code_events
    new = events[~events.index.isin(list(reference.vocabulary))].sort_values(ascending=False)
    total = int(events.sum())
    out = {
        "events": int(new.sum()),
        "rate": float(new.sum() / total) if total else 0.0,
        "codes": [
            {"code": str(c), "events": int(n), "subjects": int(current.code_subjects.get(c, 0))} for c, n in new.items()
        ],
    }
    if model_vocabulary is not None:
        unknown = events[~events.index.isin(list(model_vocabulary))]
        out["outside_model_vocabulary"] = float(unknown.sum() / total) if total else 0.0
    return out
