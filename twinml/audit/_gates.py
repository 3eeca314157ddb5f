"""The audit's policy gates: each gate's verdict on the audit's numbers, with the groups that fail it.

Subgroup gates judge the unsuppressed numbers of groups with at least the policy's ``min_cell`` subjects;
what the report shows of a suppressed group is its name only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..evaluation import SUPPRESSED


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]


def _clean(v):
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _num(v):
    return v if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None


def gates(report, unsuppressed, policy, audited):
    """Gate results. Subgroup gates judge every group with at least ``min_cell`` subjects, on the
    unsuppressed numbers (a group can be under-diagnosed into having few recorded events); a value
    about a suppressed group is reported as ``"suppressed"``, only its failing name is shown."""
    g, out = policy.gates, []
    gated = policy.gate_labels or audited
    perf = {r["label"]: r for r in report["performance"]}
    cal = {r["label"]: r for r in report["calibration"]}
    for c in gated:
        out += _performance_gates(c, perf[c], cal[c], g)
        table = _records(unsuppressed[c])
        overall = table[0]
        groups = [r for r in table[1:] if r["n_subjects"] >= policy.min_cell]
        n_before = len(out)
        if g.max_subgroup_auroc_gap is not None and _num(overall["auroc"]) is not None:
            out.append(_auroc_gap_gate(c, overall, groups, g.max_subgroup_auroc_gap))
        if g.min_observed_expected_ratio is not None:
            out.append(_observed_expected_gate(c, overall, groups, g.min_observed_expected_ratio, g.subgroup_reference))
        if g.min_true_risk_ratio is not None:
            out.append(_true_risk_gate(c, overall, groups, g.min_true_risk_ratio, g.subgroup_reference))
        for gate in out[n_before:]:
            if gate.pop("_worst_suppressed", False):
                gate["value"] = SUPPRESSED
    fa = report["explanations"].get("faithfulness")
    if g.min_faithfulness_ratio is not None:
        v = None if not fa else _num(fa["ratio"])
        out.append(
            _gate(
                "explanation faithfulness (top-k / random-k change)",
                report["explanations"]["label"],
                v,
                f">= {g.min_faithfulness_ratio}",
                None if v is None else v >= g.min_faithfulness_ratio,
                note=None if fa else "not computed for tabular models",
            )
        )
    if g.max_membership_auc_upper is not None and report.get("membership"):
        out += _membership_gates(report["membership"]["attacks"], gated, g.max_membership_auc_upper)
    return out


def _membership_gates(attacks, gated, limit) -> list[dict]:
    """One gate per attack: the upper 95 % bound of its AUROC on all labels pooled and on each gated label
    alone; the value is the highest, ``groups`` the labels over the limit."""
    out = []
    for name in dict.fromkeys(a["attack"] for a in attacks):
        rows = [a for a in attacks if a["attack"] == name and (a["label"] == "all" or a["label"] in gated)]
        upper = {
            a["label"]: _num(a.get("auc_hi")) if _num(a.get("auc_hi")) is not None else _num(a.get("auc")) for a in rows
        }
        judged = {k: v for k, v in upper.items() if v is not None}
        worst = max(judged, key=judged.__getitem__, default=None)
        out.append(
            _gate(
                f"membership inference AUROC, upper 95% bound ({name})",
                worst or "all audited",
                None if worst is None else judged[worst],
                f"<= {limit}, all labels pooled and each gated label",
                None if worst is None else judged[worst] <= limit,
                groups=[k for k, v in judged.items() if v > limit],
            )
        )
    return out


def _performance_gates(c, perf, cal, g) -> list[dict]:
    """The population's gates of one label: the AUROC's lower 95 % bound and the ECE."""
    out = []
    if g.min_auroc_lower_bound is not None:
        v = _num(perf.get("auroc_lo"))
        out.append(
            _gate(
                "AUROC lower 95% bound",
                c,
                v,
                f">= {g.min_auroc_lower_bound}",
                v is not None and v >= g.min_auroc_lower_bound,
                note="could not be computed (one class, or no bootstrap)" if v is None else None,
            )
        )
    if g.max_ece is not None:
        v = _num(cal["after"]["ece"])
        out.append(
            _gate(
                "ECE",
                c,
                v,
                f"<= {g.max_ece}",
                v is not None and v <= g.max_ece,
                note="could not be computed" if v is None else None,
            )
        )
    return out


def _auroc_gap_gate(c, overall, groups, gap) -> dict:
    """No judged group's AUROC upper bound below the population's AUROC minus ``gap``."""
    floor = overall["auroc"] - gap
    worse = [r for r in groups if _num(r["auroc_hi"]) is not None and r["auroc_hi"] < floor]
    checked = [r for r in groups if _num(r["auroc_hi"]) is not None]
    worst = min(worse or checked, key=lambda r: r["auroc_hi"], default=None)
    return _gate(
        "subgroup AUROC gap",
        c,
        None if worst is None else worst["auroc_hi"],
        f"no group's AUROC upper bound < overall {overall['auroc']:.3f} - {gap}",
        None if not checked else not worse,
        groups=[f"{r['attribute']}={r['group']}" for r in worse],
        note=None if checked else "no group with an AUROC interval",
        worst=worst,
    )


def _references(overall, groups, key, reference):
    """The value each group is compared with: the population's, or its attribute's largest group's."""
    if reference == "population":
        base = _num(overall[key])
        return {id(g): base for g in groups if base and _num(g[key]) is not None}
    largest: dict[str, dict] = {}  # attribute -> its largest group
    for g in groups:
        if (
            g["group"] != "unknown"
            and _num(g[key]) is not None
            and g[key] > 0
            and g["n_subjects"] > largest.get(g["attribute"], {"n_subjects": -1})["n_subjects"]
        ):
            largest[g["attribute"]] = g
    return {
        id(g): largest[g["attribute"]][key] for g in groups if g["attribute"] in largest and _num(g[key]) is not None
    }


def _reference_name(reference):
    return "the population's" if reference == "population" else "its attribute's largest group's"


def _observed_expected_gate(label, overall, groups, r, reference):
    """Fail a group whose O/E, relative to the reference, is credibly outside [r, 1/r]."""
    base = _references(overall, groups, "observed_expected", reference)
    checked = [g for g in groups if id(g) in base]
    rel = {id(g): g["observed_expected"] / base[id(g)] for g in checked}
    bad = [
        g
        for g in checked
        if g["observed_expected_hi"] / base[id(g)] < r or g["observed_expected_lo"] / base[id(g)] > 1 / r
    ]
    worst = max(bad or checked, key=lambda g: abs(math.log(max(rel[id(g)], 1e-9))), default=None)
    return _gate(
        "subgroup observed / expected events",
        label,
        None if worst is None else rel[id(worst)],
        f"no group's O/E interval entirely outside [{r:.2f}, {1 / r:.2f}] x {_reference_name(reference)}",
        None if not checked else not bad,
        groups=[f"{g['attribute']}={g['group']}" for g in bad],
        note=None if checked else "no group to compare",
        worst=worst,
    )


def _true_risk_gate(label, overall, groups, r, reference):
    """Each group's (mean predicted / mean true risk) relative to the reference's, within [r, 1/r].

    Relative, so a shared offset (e.g. diagnoses recorded some time after true onset, which the
    ECE gate judges) does not count as a disparity between groups.
    """
    base = _references(overall, groups, "true_risk_ratio", reference)
    checked = [g for g in groups if id(g) in base]
    rel = {id(g): g["true_risk_ratio"] / base[id(g)] for g in checked}
    bad = [g for g in checked if not r <= rel[id(g)] <= 1 / r]
    worst = max(bad or checked, key=lambda g: abs(math.log(max(rel[id(g)], 1e-9))), default=None)
    return _gate(
        "subgroup calibration against true risk",
        label,
        None if worst is None else rel[id(worst)],
        f"each group's predicted/true risk within [{r:.2f}, {1 / r:.2f}] x {_reference_name(reference)}",
        None if not checked else not bad,
        groups=[f"{g['attribute']}={g['group']}" for g in bad],
        note=None if checked else "no ground truth (only simulated data carry true risks)",
        worst=worst,
    )


def _gate(name, label, value, rule, passed, groups=None, note=None, worst=None):
    """One gate result; ``worst`` (the group the value is about) being suppressed hides the value."""
    out = {
        "gate": name,
        "label": label,
        "value": value,
        "rule": rule,
        "passed": passed,
        "groups": groups or [],
        "note": note,
    }
    if worst is not None and worst["suppressed"]:
        out["_worst_suppressed"] = True
    return out
