"""The audit report as one self-contained HTML file (figures embedded) and a Markdown model card."""

from __future__ import annotations

import html

from .._format import cell
from .._html import REPORT_CSS as _CSS
from .._html import status as _status
from .._html import table as _table
from .._html import td as _td
from .._plotting import png_data_uri
from ..evaluation import SUPPRESSED
from ._card import _auto_limitations

__all__ = ["render_html"]


def _gates_html(report):
    rows = "".join(
        f"<tr><td>{html.escape(g['gate'])}</td><td>{html.escape(g['label'])}</td>{_td(g['value'], 3)}"
        f"<td>{html.escape(g['rule'])}</td><td>{_status(g['passed'])}</td>"
        f"<td>{html.escape(', '.join(g['groups']) or (g['note'] or ''))}</td></tr>"
        for g in report["gates"]
    )
    return (
        "<table><tr><th>gate</th><th>label</th><th>value</th><th>rule</th><th>result</th>"
        f"<th>groups / note</th></tr>{rows}</table>"
    )


def render_html(report: dict, figures: dict[str, bytes]) -> str:
    """The whole report; ``figures`` maps names to PNG bytes, embedded as data URIs (opens offline)."""
    r, lin = report, report["lineage"]
    verdict = "pass" if r["passed"] else "fail"
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>twinml audit: "
        f"{html.escape(lin.get('model_name') or lin.get('model_uri', 'model'))}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Model audit: {html.escape(lin.get('model_uri', ''))}</h1>",
        f"<p class='small'>{_registered(lin)} · audited split <b>{html.escape(r['split'])}</b> · "
        f"{html.escape(r['model']['class'])} · training run {html.escape(str(lin.get('run_id')))}</p>",
        f"<div class='banner {verdict}'>Audit {'PASSED' if r['passed'] else 'FAILED'}: "
        f"{sum(g['passed'] is False for g in r['gates'])} of {len(r['gates'])} gates failed.</div>",
        "<h2>1. Policy gates</h2>",
        _gates_html(r),
    ]
    parts += _data_html(r) + _performance_html(r) + _temporal_html(r) + _membership_html(r)
    parts += _calibration_html(r, figures)
    parts += _fairness_html(r, figures)
    parts += _mitigation_html(r) + _explanations_html(r, figures) + _use_html(r) + _lineage_html(r)
    parts.append("</body></html>")
    return "\n".join(parts)


def _registered(lin):
    if lin.get("model_version"):
        return (
            f"Registered model {html.escape(str(lin['model_name']))} version {html.escape(str(lin['model_version']))}"
        )
    return "Not a registered model version (no registry tag is set)"


def _data_html(r):
    d, task, c = r["data"], r["task"], r["cohort"]
    outcomes = [{"outcome": k, "codes": ", ".join(v["codes"])} for k, v in task["outcomes"].items()]
    return [
        "<h2>2. Data source and dates</h2>",
        f"<p>MEDS events: {d['events']:,} events of {d['subjects']:,} subjects, {d['distinct_codes']:,} distinct "
        "codes, "
        f"recorded from {html.escape(str(d['first_event']))} to {html.escape(str(d['last_event']))} (months; births "
        "not counted). Data fingerprint "
        f"<code>{html.escape(str(r['lineage'].get('data_fingerprint')))}</code>; "
        f"ground truth available: {cell(r['fairness']['ground_truth'])}.</p>",
        "<h2>3. Eligibility and cohort attrition</h2>",
        f"<p>Task <b>{html.escape(task['name'])}</b>: prediction times {html.escape(str(task['prediction_times']))}; "
        f"minimum history {task.get('min_history_days')} days; minimum age {task.get('min_age_years')} years.</p>",
        _table(c["attrition"], ["step", "rows", "subjects"]),
        "<h2>4. Outcome and predictor definitions</h2>",
        _table(outcomes, ["outcome", "codes"]),
        f"<p>Horizons (days): {', '.join(str(h) for h in task['horizons_days'])}. A label is positive when an outcome "
        "code is recorded in (prediction time, prediction time + horizon]; rows with the outcome before the prediction "
        "time are excluded, rows not followed to the horizon are censored (unknown). Predictors: only events at or "
        "before the prediction time (the leakage rule) plus static traits; model settings under Lineage.</p>",
        "<h2>5. Sample size and events per outcome</h2>",
        f"<p>Audited split: {c['audited_rows']:,} prediction times of {c['audited_subjects']:,} subjects.</p>",
        _table(
            c["label_counts_audited"], ["label", "n", "positives"], headers=["label", "rows with known label", "events"]
        ),
        "<p class='small'>All splits:</p>",
        _table(c["label_counts_all_splits"], ["label", "n", "positives", "excluded_prior", "censored"]),
        "<h2>6. Missing data</h2>",
        "<p>Nothing is imputed from other patients. An unmeasured code is simply absent from a patient's history: "
        "tabular models see a zero count and no value aggregate (gradient boosting treats it as missing); sequence "
        "models see only the events that exist. Codes rarer than the model's minimum count share one 'rare code' "
        "identity. Labels whose status is unknown (censored, or excluded by a prior outcome) are left out of "
        "training and of every metric.</p>",
    ]


def _performance_html(r):
    rows = r["performance"]
    cols = [
        "label",
        "n",
        "positives",
        "auroc",
        "auroc_lo",
        "auroc_hi",
        "auprc",
        "brier",
        "oracle_auroc",
        "auroc_vs_oracle",
    ]
    return [
        "<h2>7. Performance (95% subject-level bootstrap intervals)</h2>",
        _table(rows, [c for c in cols if any(c in x for x in rows)]),
    ]


def _temporal_html(r):
    rows = r.get("temporal")
    if not rows:
        return []
    return [
        "<h3>Temporal validation</h3><p class='small'>The held-out subjects in the training years "
        "(<code>held_out_same_period</code>: the random split's figure) beside the same subjects in the test years "
        "(<code>held_out</code>: the model deployed on later years), from the same fit.</p>",
        _table(rows, ["label", "years", "n", "positives", "auroc", "auroc_lo", "auroc_hi", "observed_expected"]),
    ]


def _membership_html(r):
    m = r.get("membership")
    if not m:
        return []
    cols = [
        "label",
        "attack",
        "members",
        "non_members",
        "auc",
        "auc_lo",
        "auc_hi",
        "tpr_at_fpr_1pct",
        "tpr_at_fpr_0_1pct",
    ]
    if m["reference_models"]:
        reference = (
            f"The reference-model attack (RMIA-style, offline) refitted {m['reference_models']} copies of the model, "
            f"each on {m['reference_subjects']:,} other training subjects, and compares each subject's likelihood "
            f"under the model with theirs, ranked against {m['population']:,} other never-seen subjects: it sees "
            "through subjects who are merely easy to predict."
        )
    else:
        reference = (
            "The stronger reference-model attack was not run (policy <code>membership.reference_models: 0</code>): "
            "the loss threshold alone can miss memorisation hidden by how easy some subjects are to predict."
        )
    return [
        "<h3>Membership inference (privacy)</h3><p class='small'>Can the model's outputs tell who was in its "
        f"training set? {m['members']:,} training subjects (<code>{html.escape(m['member_split'])}</code>) against "
        f"{m['non_members']:,} never-seen ones (<code>{html.escape(m['non_member_split'])}</code>), over all labels "
        "(<code>all</code>) and each alone. The loss-threshold attack scores each subject by its loss. "
        f"{reference} AUROC 0.5: no leakage; true-positive rates at false-positive rates of 1% and 0.1%.</p>",
        _table([{k: a.get(k) for k in cols} for a in m["attacks"]], cols),
    ]


def _calibration_html(r, figures):
    rows = []
    for e in r["calibration"]:
        for side in ("before", "after"):
            rows.append({"label": e["label"], "calibrator": side, **e[side]})
    cols = [
        "label",
        "calibrator",
        "brier",
        "ece",
        "calibration_in_the_large",
        "calibration_slope",
        "calibration_intercept",
    ]
    imgs = "".join(
        f"<img alt='reliability {html.escape(e['label'])}' "
        f"src='{png_data_uri(figures['reliability_' + e['label']])}' width='320'>"
        for e in r["calibration"]
        if f"reliability_{e['label']}" in figures
    )
    return [
        "<h2>8. Calibration</h2>",
        "<p>ECE uses 10 equal-mass bins; calibration-in-the-large is observed rate minus mean predicted risk; slope "
        "and intercept come from a logistic fit of the outcome on logit(risk) (ideal 1 and 0). 'before' is the "
        "model without its tuning-split calibrator (identical when it has none).</p>",
        _table(rows, cols, digits=4),
        f"<div class='figs'>{imgs}</div>",
    ]


def _fairness_html(r, figures):
    f = r["fairness"]
    out = [
        "<h2>9. Fairness across groups</h2>",
        f"<p>Groups by {', '.join(html.escape(a) for a in f['attributes'])}"
        f"{' and ' + ', '.join(' × '.join(p) for p in f['intersections']) if f['intersections'] else ''} "
        "(fairlearn MetricFrame). TPR, FPR and PPV are at the operating threshold (the risk of the top "
        f"{100 * r['policy']['operating_top_fraction']:.0f}% of audited rows). Groups with fewer than "
        f"{f['min_cell']} subjects, events or non-events are <span class='sup'>suppressed</span>, and so is the next "
        "smallest group of a partition when only one is. AUROC intervals: 95% bootstrap over subjects. O/E: "
        "observed events over the sum of predicted risks, with an exact Poisson interval.</p>",
    ]
    cols = ["n_rows", "n_subjects", "events", "auroc", "tpr", "fpr", "ppv", "calibration_in_the_large", "ece"]
    cols += ["observed_expected", "mean_risk"]
    heads = ["group", "rows", "subjects", "events", "AUROC (95% CI)", "TPR", "FPR", "PPV", "CITL", "ECE"]
    heads += ["O/E (95% CI)", "mean risk"]
    if f["ground_truth"]:
        cols += ["mean_true_risk", "true_risk_ratio"]
        heads += ["mean true risk", "predicted / true"]
    for lab in f["labels"]:
        out.append(f"<h3>{html.escape(lab['label'])} (threshold {lab['threshold']:.4f})</h3>")
        forest = figures.get(f"forest_{lab['label']}")
        if forest is not None:
            out.append(
                f"<div class='figs'><img alt='subgroup forest plot {html.escape(lab['label'])}' "
                f"src='{png_data_uri(forest)}' width='760'></div>"
            )
        out.append(_groups_table(lab["by_group"], cols, heads))
        if lab["disparities"]:
            out.append("<p class='small'>Largest disparities among shown groups:</p>")
            out.append(
                _table(
                    lab["disparities"],
                    ["attribute", "metric", "best_group", "best", "worst_group", "worst", "difference", "ratio"],
                )
            )
        else:
            out.append("<p class='small'>No disparity summary: fewer than two groups of any attribute are shown.</p>")
    return out


def _with_interval(g, key, digits=3):
    """``0.733 (0.70–0.76)``: a metric and its interval in one cell (an interval missing: the value alone)."""
    v, lo, hi = g.get(key), g.get(f"{key}_lo"), g.get(f"{key}_hi")
    if not isinstance(v, float) or not isinstance(lo, float) or not isinstance(hi, float):
        return _td(v, digits)
    return f"<td class='n'>{v:.{digits}f}<br><span class='small'>({lo:.2f}–{hi:.2f})</span></td>"


def _groups_table(groups, cols, heads):
    """Subgroup rows under a heading row per attribute (the population first), intervals beside values."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    body, attribute = [], None
    for g in groups:
        if g["attribute"] != attribute:
            attribute = g["attribute"]
            name = "population" if attribute == "overall" else attribute
            body.append(f"<tr class='attr'><th colspan='{len(heads)}'>{html.escape(str(name))}</th></tr>")
        if g.get("suppressed") is True:  # one cell for the whole row: nothing of the group is shown
            cells = [f"<td colspan='{len(cols)}'>{cell(SUPPRESSED)}</td>"]
        else:
            cells = [_with_interval(g, c) if c in ("auroc", "observed_expected") else _td(g.get(c), 3) for c in cols]
        body.append(f"<tr><td>{html.escape(str(g['group']))}</td>{''.join(cells)}</tr>")
    return f"<div class='scroll'><table class='groups'><tr>{head}</tr>{''.join(body)}</table></div>"


def _mitigation_html(r):
    m = r.get("mitigation")
    if not m:
        return []
    out = [
        f"<h3>Mitigation trade-off by {html.escape(m['attribute'])} (not applied)</h3>",
        f"<p>fairlearn's ThresholdOptimizer (objective: balanced accuracy) fitted on the {html.escape(m['fit_split'])} "
        "split and judged on the audited rows, next to the single threshold in use. Groups too small to be shown are "
        "pooled. The model is unchanged: this shows what group-specific thresholds would cost and buy.</p>",
    ]
    for lab in m["labels"]:
        out.append(f"<p class='small'>{html.escape(lab['label'])}</p>")
        if lab["table"]:
            out.append(
                _table(
                    lab["table"],
                    [
                        "policy",
                        "tpr",
                        "fpr",
                        "ppv",
                        "selection_rate",
                        "balanced_accuracy",
                        "tpr_difference",
                        "fpr_difference",
                    ],
                )
            )
        else:
            out.append(f"<p class='small'>{html.escape(lab['note'])}</p>")
    return out


def _explanations_html(r, figures):
    e = r["explanations"]
    out = [
        "<h2>10. Explanations</h2>",
        f"<p>Label <b>{html.escape(e['label'])}</b>, {e['rows_explained']:,} audited rows explained in "
        f"{e['seconds']:.1f} s with {html.escape(e['method'])}. Attributions are on the log-odds before the "
        "calibrator, aggregated per code and per time window before the prediction time.</p>",
    ]
    if "importance" in figures:
        out.append(f"<div class='figs'><img alt='code importance' src='{png_data_uri(figures['importance'])}'></div>")
    out.append(
        _table(
            e["codes"],
            ["code", "description", "mean_abs", "mean", "rows"],
            headers=["code", "description", "mean |attribution|", "mean attribution", "rows attributed"],
            digits=4,
        )
    )
    out.append(
        _table(e["windows"], ["window", "share_of_abs_attribution"], headers=["time window", "share of |attribution|"])
    )
    fa = e.get("faithfulness")
    if fa:
        out.append(
            f"<p>Faithfulness: deleting each row's top {fa['k']} attributed events changed the log-odds by "
            f"{fa['top_k_change']:.4f} on average, deleting {fa['k']} random events by {fa['random_k_change']:.4f} "
            f"(ratio {fa['ratio']:.2f}; top-k larger in {100 * fa['share_rows_top_k_larger']:.0f}% of "
            f"{fa['rows']:,} rows).</p>"
        )
    else:
        out.append("<p>Faithfulness check: not computed for tabular models.</p>")
    return out


def _use_html(r):
    p = r["policy"]
    lim = list(p["limitations"]) + _auto_limitations(r)
    return [
        "<h2>11. Intended use and limitations</h2>",
        f"<p>{html.escape(p['intended_use'])}</p>",
        "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lim) + "</ul>",
    ]


def _lineage_html(r):
    lin = r["lineage"]
    rows = [{"item": k, "value": str(v)} for k, v in lin.items() if k != "packages"]
    rows += [{"item": f"package {k}", "value": str(v)} for k, v in lin.get("packages", {}).items()]
    rows += [{"item": f"model.{k}", "value": str(v)} for k, v in r["model"]["params"].items()]
    return ["<h2>12. Lineage</h2>", _table(rows, ["item", "value"])]
