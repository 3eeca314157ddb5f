"""The audit computation: every number of the report, as one JSON-able dict (no subject-level data)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd

from .._validation import ConfigError
from ..cohort import Cohort, TaskDefinition, events_for_fit
from ..evaluation import (
    SUPPRESSED,
    calibration_summary,
    code_importance,
    evaluate_risks,
    explain_model,
    faithfulness,
    oracle_risks,
    reliability_table,
    subgroup_metrics,
    subject_attributes,
    threshold_tradeoff,
    window_importance,
)
from ..models import RiskModel
from ._gates import _clean, _records, gates
from ._policy import AuditPolicy

__all__ = ["AuditInputs", "compute_audit", "suppress_small_counts"]

_PACKAGES = ("twinml", "numpy", "pandas", "scikit-learn", "torch", "mlflow", "fairlearn", "shap")


@dataclass
class AuditInputs:
    """What the audit is run on: the fitted model, events, the task and where they came from."""

    model: RiskModel
    events: pd.DataFrame
    cohort: Cohort
    task: TaskDefinition
    truth: pd.DataFrame | None
    lineage: dict = field(default_factory=dict)
    code_descriptions: dict = field(default_factory=dict)  # code -> description (metadata/codes.parquet)


def suppress_small_counts(df: pd.DataFrame, columns, min_cell: int) -> pd.DataFrame:
    """Counts from 1 to ``min_cell - 1`` become ``"suppressed"`` (0 is shown: it discloses no one)."""
    out = df.copy()
    for c in columns:
        v = out[c]
        small = (v > 0) & (v < min_cell)
        out[c] = v.astype(object).where(~small, SUPPRESSED)
    return out


def compute_audit(inputs: AuditInputs, policy: AuditPolicy, *, seed: int = 0, progress=print):
    """Run every check of ``policy`` on ``inputs``; returns ``(report dict, figures dict name -> Figure)``."""
    model, labels = inputs.model, inputs.cohort.labels
    audited = policy.labels or list(model.label_columns_)
    unknown = [c for c in audited + (policy.gate_labels or []) if c not in model.label_columns_]
    if unknown:
        raise ConfigError(
            f"policy.labels: the model does not predict {unknown[0]!r}; it predicts {model.label_columns_}."
        )
    outside = [c for c in policy.gate_labels or [] if c not in audited]
    if outside:
        raise ConfigError(
            f"policy.gate_labels: {outside[0]!r} is not audited; gate labels must be among policy.labels {audited}."
        )
    rows = labels[labels["split"] == policy.split].reset_index(drop=True)
    if rows.empty:
        raise ConfigError(f"policy.split: no prediction times of this task fall in split {policy.split!r}.")
    progress(f"audit: scoring {len(rows):,} {policy.split} rows")
    risks = model.predict_risk(inputs.events, rows)
    raw = model.predict_risk(inputs.events, rows, calibrated=False)
    report: dict[str, Any] = {
        "model": {
            "class": type(model).__name__,
            "params": _params(model),
            "privacy": getattr(model, "privacy_", None),  # what a DP-SGD fit spent (None: not private)
        },
        "policy": policy.model_dump(mode="json"),
        "lineage": inputs.lineage | {"packages": _versions()},
        "task": inputs.task.model_dump(mode="json"),
        "split": policy.split,
        "labels": audited,
    }
    report["cohort"] = _cohort_section(inputs.cohort, rows, audited, policy.min_cell)
    report["data"] = _data_section(inputs.events)
    progress("audit: discrimination and calibration")
    perf = evaluate_risks(rows, risks, columns=audited, truth=inputs.truth, n_boot=policy.n_bootstrap, seed=seed)
    report["performance"] = _records(suppress_small_counts(perf, ["n", "positives"], policy.min_cell))
    report["temporal"] = _temporal_section(inputs, labels, audited, policy, seed)
    report["membership"] = _membership_section(inputs, labels, audited, policy, seed, progress)
    report["calibration"], figures = _calibration_section(rows, risks, raw, audited, policy.min_cell)
    progress("audit: subgroup fairness")
    report["fairness"], unsuppressed = _fairness_section(inputs, rows, risks, audited, policy, seed)
    figures.update(_forest_figures(report["fairness"]))
    report["mitigation"] = _mitigation_section(inputs, labels, rows, risks, audited, report["fairness"], policy, seed)
    progress("audit: explanations")
    report["explanations"] = _explanation_section(inputs, rows, audited, policy, seed, progress)
    report["gates"] = gates(report, unsuppressed, policy, audited)
    report["passed"] = all(g["passed"] is not False for g in report["gates"])
    return _clean_tree(report), figures


def _clean_tree(obj):
    """JSON-ready: NaN -> None, numpy scalars -> Python, recursively (audit.json allows no NaN)."""
    if isinstance(obj, dict):
        return {k: _clean_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_tree(v) for v in obj]
    return _clean(obj)


def _params(model):
    out = {
        k: _clean(v) if not isinstance(v, (list, tuple, dict)) else json.loads(json.dumps(v, default=str))
        for k, v in model.get_params().items()
    }
    if out.get("subject_shares") == "auto" and callable(getattr(model, "n_shares", None)):
        out["subject_shares"] = f"auto ({model.n_shares()})"  # the reader sees how many models were fitted
    if out.get("record_weight") == "auto" and callable(getattr(model, "blend_weight", None)):
        out["record_weight"] = f"auto ({model.blend_weight():g})"  # ... and the weight the blend chose
    return out


def _versions():
    out: dict[str, str | None] = {}
    for p in _PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def _data_section(events):
    """Size and period of the data; the period in months and without births (no one's exact date)."""
    t = events.loc[events["code"].astype(str) != "MEDS_BIRTH", "time"].dropna()
    month = (lambda x: pd.Timestamp(x).strftime("%Y-%m")) if len(t) else (lambda x: None)
    return {
        "events": int(len(events)),
        "subjects": int(events["subject_id"].nunique()),
        "first_event": month(t.min()) if len(t) else None,
        "last_event": month(t.max()) if len(t) else None,
        "distinct_codes": int(events["code"].nunique()),
    }


def _cohort_section(cohort, rows, audited, min_cell):
    counts = cohort.label_counts[cohort.label_counts["label"].isin(audited)]
    cols = ["n", "positives", "excluded_prior", "censored"]
    audited_counts = pd.DataFrame(
        [
            {"label": c, "n": int(rows[c].notna().sum()), "positives": int(rows[c].fillna(False).astype(bool).sum())}
            for c in audited
        ]
    )
    return {
        "attrition": _records(suppress_small_counts(cohort.attrition, ["rows", "subjects"], min_cell)),
        "label_counts_all_splits": _records(suppress_small_counts(counts, cols, min_cell)),
        "audited_rows": int(len(rows)),
        "audited_subjects": int(rows["subject_id"].nunique()),
        "label_counts_audited": _records(suppress_small_counts(audited_counts, ["n", "positives"], min_cell)),
    }


def _known(rows, risks, c, raw=None):
    k = rows[c].notna().to_numpy()
    y = rows[c][k].astype(bool).to_numpy().astype(int)
    out = (y, risks[c].to_numpy()[k])
    return out + ((raw[c].to_numpy()[k],) if raw is not None else ()) + (k,)


def _temporal_section(inputs, labels, audited, policy, seed):
    """Under a temporal split, the held-out subjects in the training years beside the same subjects in the
    test years (AUROC with its interval, O/E): the random split's figure next to the "deployed next year"
    one, from the same fit. None for another split."""
    if inputs.task.split.strategy != "temporal":
        return None
    out = []
    for split, period in (("held_out_same_period", "training years"), ("held_out", "test years")):
        rows = labels[labels["split"] == split].reset_index(drop=True)
        if rows.empty:
            continue
        risks = inputs.model.predict_risk(inputs.events, rows)
        perf = evaluate_risks(rows, risks, columns=audited, n_boot=policy.n_bootstrap, seed=seed)
        rate = perf["positives"] / perf["n"]
        perf["observed_expected"] = rate / (rate - perf["calibration_in_the_large"])
        perf.insert(1, "split", split)
        perf.insert(2, "years", period)
        keep = ["label", "split", "years", "n", "positives", "auroc", "auroc_lo", "auroc_hi", "observed_expected"]
        out += _records(suppress_small_counts(perf[keep], ["n", "positives"], policy.min_cell))
    return out


def _membership_section(inputs, labels, audited, policy, seed, progress):
    """Membership inference on subjects (:func:`~twinml.evaluation.membership_audit`): held-out subjects of
    the training years (non-members) against as many training subjects drawn at random (members), by
    their loss; with ``membership.reference_models``, also the reference-model attack, whose reference
    models are refitted here on other training subjects."""
    from ..evaluation import membership_audit

    mp = policy.membership
    if not mp.enabled:
        return None
    outside = "held_out_same_period" if inputs.task.split.strategy == "temporal" else "held_out"
    split = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", outside)}
    progress(
        "audit: membership inference"
        + (f" ({mp.reference_models} reference models to fit)" if mp.reference_models else "")
    )
    result = membership_audit(
        inputs.model,
        inputs.events,
        split["train"],
        split[outside],
        audited,
        max_subjects=mp.max_subjects,
        reference_models=mp.reference_models,
        reference_subjects=mp.reference_subjects,
        fit_events=events_for_fit(inputs.events, inputs.task),
        tuning_labels=split["tuning"],
        n_boot=policy.n_bootstrap,
        seed=seed,
        progress=progress,
    )
    return result | {"member_split": "train", "non_member_split": outside}


def _calibration_section(rows, risks, raw, audited, min_cell):
    from ._figures import ReliabilityBandsDisplay

    out, figures = [], {}
    for c in audited:
        y, p, p_raw, _ = _known(rows, risks, c, raw)
        entry = {"label": c, "after": calibration_summary(y, p), "before": calibration_summary(y, p_raw)}
        rel = reliability_table(y, p)
        entry["reliability"] = _records(suppress_small_counts(rel, ["n", "events"], min_cell))
        entry["reliability_before"] = _records(
            suppress_small_counts(reliability_table(y, p_raw), ["n", "events"], min_cell)
        )
        for side in ("after", "before"):
            s = entry[side]
            if 0 < s["events"] < min_cell:
                s["events"] = SUPPRESSED
        out.append(entry)
        figures[f"reliability_{c}"] = ReliabilityBandsDisplay(entry, title=c).plot().figure_
    return out, figures


def _forest_figures(fairness):
    """One subgroup forest plot per label, drawn from the suppressed rows (it shows what the tables show)."""
    from ._figures import SubgroupForestDisplay

    return {
        f"forest_{lab['label']}": SubgroupForestDisplay(lab, title=f"{lab['label']}: AUROC and O/E by group")
        .plot()
        .figure_
        for lab in fairness["labels"]
    }


def _fairness_section(inputs, rows, risks, audited, policy, seed):
    attrs = subject_attributes(inputs.events, rows, attributes=policy.attributes, age_bands=policy.age_bands)
    intersections = [p for p in policy.intersections if all(a in attrs.columns for a in p)]
    truth = _truth_for(rows, inputs.truth, audited)
    out, unsuppressed = [], {}
    for c in audited:
        y, p, k = _known(rows, risks, c)
        threshold = float(np.quantile(p, 1 - policy.operating_top_fraction)) if p.size else float("nan")
        res = subgroup_metrics(
            y,
            p,
            attrs[k].reset_index(drop=True),
            subject_id=rows["subject_id"].to_numpy()[k],
            label=c,
            threshold=threshold,
            true_risk=None if truth is None else truth[c].to_numpy()[k],
            intersections=intersections,
            min_cell=policy.min_cell,
            n_boot=policy.n_bootstrap,
            seed=seed,
        )
        out.append(
            {
                "label": c,
                "threshold": threshold,
                "by_group": _records(res.by_group),
                "disparities": _records(res.disparities),
            }
        )
        unsuppressed[c] = res.unsuppressed
    return {
        "attributes": list(attrs.columns),
        "intersections": [list(p) for p in intersections],
        "ground_truth": truth is not None,
        "min_cell": policy.min_cell,
        "labels": out,
    }, unsuppressed


def _mitigation_section(inputs, labels, rows, risks, audited, fairness, policy, seed):
    """Per audited label, the ThresholdOptimizer trade-off for one attribute (groups too small to be
    shown are pooled as one group, so no small group gets its own threshold or its own number)."""
    mp = policy.mitigation
    if mp.attribute is None:
        return None
    if mp.attribute not in fairness["attributes"]:
        raise ConfigError(
            f"policy.mitigation.attribute: the data have no attribute {mp.attribute!r} "
            f"(attributes: {fairness['attributes']})."
        )
    fit_rows = labels[labels["split"] == mp.fit_split].reset_index(drop=True)
    if fit_rows.empty:
        raise ConfigError(f"policy.mitigation.fit_split: no prediction times in split {mp.fit_split!r}.")
    fit_risks = inputs.model.predict_risk(inputs.events, fit_rows)
    kw = (
        {"attributes": {mp.attribute: policy.attributes[mp.attribute]}}
        if mp.attribute != "age_band"
        else {"attributes": {}, "age_bands": policy.age_bands}
    )
    g_fit = subject_attributes(inputs.events, fit_rows, **kw)[mp.attribute].to_numpy(object)
    g_eval = subject_attributes(inputs.events, rows, **kw)[mp.attribute].to_numpy(object)
    out = []
    for lab in fairness["labels"]:
        c = lab["label"]
        shown = [r["group"] for r in lab["by_group"] if r["attribute"] == mp.attribute and not r["suppressed"]]
        pooled = "other groups (pooled)"
        y_f, p_f, k_f = _known(fit_rows, fit_risks, c)
        y_e, p_e, k_e = _known(rows, risks, c)
        # a group needs both outcomes among the fitting rows to get a threshold of its own
        both = [g for g in shown if np.unique(y_f[g_fit[k_f] == g]).size == 2]
        gf = np.where(np.isin(g_fit[k_f], both), g_fit[k_f], pooled)
        ge = np.where(np.isin(g_eval[k_e], both), g_eval[k_e], pooled)
        if len(both) < 2 or np.unique(y_f[gf == pooled]).size == 1:
            out.append(
                {
                    "label": c,
                    "table": [],
                    "note": f"fewer than two shown groups with events and non-events in the {mp.fit_split} split",
                }
            )
            continue
        table = threshold_tradeoff(
            y_f,
            p_f,
            gf,
            y_e,
            p_e,
            ge,
            threshold=lab["threshold"],
            shown_groups=both,
            constraints=mp.constraints,
            seed=seed,
        )
        out.append({"label": c, "table": _records(table), "note": None})
    return {"attribute": mp.attribute, "fit_split": mp.fit_split, "labels": out}


def _truth_for(rows, truth, audited):
    """The simulator's true risk of each audited label for each row (None without ground truth)."""
    if truth is None:
        return None
    frame = oracle_risks(rows, truth, audited)
    return None if frame is None else frame.reindex(columns=audited)


def _explanation_section(inputs, rows, audited, policy, seed, progress):
    ep = policy.explain
    label = ep.label or audited[0]
    if label not in inputs.model.label_columns_:
        raise ConfigError(
            f"policy.explain.label: the model does not predict {label!r}; it predicts {inputs.model.label_columns_}."
        )
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(rows), size=min(ep.n_rows, len(rows)), replace=False))
    sample = rows.iloc[pick].reset_index(drop=True)[["subject_id", "prediction_time"]]
    attr = explain_model(
        inputs.model, inputs.events, sample, label=label, n_samples=ep.n_samples, seed=seed, progress=progress
    )
    codes = code_importance(attr)
    codes.insert(1, "description", codes["code"].map(inputs.code_descriptions).fillna(""))
    out = {
        "label": label,
        "method": attr.method,
        "rows_explained": attr.n_rows,
        "seconds": attr.seconds,
        "codes": _records(_suppress_code_rows(codes, policy.min_cell)),
        "windows": _records(window_importance(attr)),
    }
    if hasattr(inputs.model, "net_"):
        out["faithfulness"] = faithfulness(inputs.model, inputs.events, sample, attr, k=ep.top_k, seed=seed)
    else:
        out["faithfulness"] = None
    return out


def _suppress_code_rows(table, min_cell):
    """A code attributed in fewer than ``min_cell`` explained rows is shown without its numbers."""
    small = table["rows"] < min_cell
    out = table.astype({c: object for c in ("mean_abs", "mean", "rows")})
    out.loc[small, ["mean_abs", "mean", "rows"]] = SUPPRESSED
    return out


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
