"""The model card: a short Markdown summary of the audit (what the model is, how it did, where it may fail)."""

from __future__ import annotations

from functools import partial

from .._format import cell

__all__ = ["render_model_card"]


def render_model_card(report: dict) -> str:
    """A short Markdown model card: what the model is, how it did, where it may fail, where it came from."""
    md = partial(cell, markup="markdown")
    r, lin = report, report["lineage"]
    lines = [
        f"# Model card: {lin.get('model_name') or lin.get('model_uri')}",
        "",
        f"- Model URI: `{lin.get('model_uri')}`; registered version: {lin.get('model_version')}",
        f"- Class: {r['model']['class']}; training run: {lin.get('run_id')}; seed: {lin.get('seed')}",
        f"- Code version: {lin.get('code_version')}; config hash: {lin.get('config_hash')}; "
        f"data fingerprint: {lin.get('data_fingerprint')}",
        f"- Audit: **{'passed' if r['passed'] else 'FAILED'}** on split `{r['split']}`",
        "",
        "## Intended use",
        "",
        r["policy"]["intended_use"],
        "",
        "## Task",
        "",
        f"Task `{r['task']['name']}`; outcomes: "
        + ", ".join(f"{k} ({', '.join(v['codes'])})" for k, v in r["task"]["outcomes"].items()),
        f"; horizons {r['task']['horizons_days']} days.",
        "",
        "## Performance",
        "",
        "| label | n | events | AUROC [95% CI] | ECE | calibration slope |",
        "|---|---|---|---|---|---|",
    ]
    cal = {e["label"]: e["after"] for e in r["calibration"]}
    for p in r["performance"]:
        lines.append(
            f"| {p['label']} | {p['n']} | {p['positives']} | {md(p.get('auroc'))} "
            f"[{md(p.get('auroc_lo'))}, {md(p.get('auroc_hi'))}] | {md(cal[p['label']]['ece'], digits=4)} | "
            f"{md(cal[p['label']]['calibration_slope'], digits=2)} |"
        )
    if r.get("temporal"):
        lines += ["", "## Temporal validation (held-out subjects)", "", "| label | years | n | AUROC [95% CI] | O/E |"]
        lines.append("|---|---|---|---|---|")
        for t in r["temporal"]:
            lines.append(
                f"| {t['label']} | {t['years']} | {t['n']} | {md(t.get('auroc'))} "
                f"[{md(t.get('auroc_lo'))}, {md(t.get('auroc_hi'))}] | {md(t.get('observed_expected'), digits=2)} |"
            )
    lines += _privacy_md(r, md)
    lines += ["", "## Gates", "", "| gate | label | value | rule | result |", "|---|---|---|---|---|"]
    for g in r["gates"]:
        res = {True: "pass", False: "FAIL"}.get(g["passed"], "n/a")
        lines.append(f"| {g['gate']} | {g['label']} | {md(g['value'])} | {g['rule']} | {res} |")
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in r["policy"]["limitations"] + _auto_limitations(r)]
    return "\n".join(lines) + "\n"


def _privacy_md(r, md) -> list[str]:
    """The model card's privacy section: the DP-SGD budget spent, and the membership attack."""
    dp, m = r["model"].get("privacy"), r.get("membership")
    if not (dp or m):
        return []
    lines = ["", "## Privacy", ""]
    if dp:
        lines += [
            f"Trained with differential privacy (DP-SGD, opacus; the unit is a {dp['unit']}): "
            f"**ε = {dp['epsilon']:.2f}** at δ = {dp['delta']:g} ({dp['accountant'].upper()} accountant; target ε "
            f"{dp['target_epsilon']:g}), per-{dp['unit']} clip {dp['max_grad_norm']:g}, noise multiplier "
            f"{dp['noise_multiplier']:.3f}, sampling rate {dp['sample_rate']:.4f}, {dp['steps']} steps. The "
            "tuning subjects (featurizer, epoch, calibration) are not covered.",
            "",
        ]
    if m:
        pooled = [a for a in m["attacks"] if a["label"] == "all"]
        lines.append(
            f"Membership inference ({m['members']} training against {m['non_members']} held-out subjects, all "
            "labels pooled): "
            + "; ".join(
                f"{a['attack']} AUROC {md(a.get('auc'))} [{md(a.get('auc_lo'))}, {md(a.get('auc_hi'))}], TPR at FPR "
                f"1% {md(a.get('tpr_at_fpr_1pct'))}, at 0.1% {md(a.get('tpr_at_fpr_0_1pct'))}"
                for a in pooled
            )
            + ("." if m["reference_models"] else ". The reference-model attack was not run.")
        )
    return lines


def _auto_limitations(r):
    out = []
    if r["fairness"]["ground_truth"]:
        out.append(
            "The data are simulated (twinml simulator): figures show how the model behaves on the simulator, "
            "not on any real population."
        )
    n_sup = sum(g["suppressed"] for lab in r["fairness"]["labels"] for g in lab["by_group"])
    if n_sup:
        out.append(f"{n_sup} group cells were suppressed for small numbers; no statement is made about those groups.")
    out.append(
        "Labels come from recorded codes: outcomes that are never recorded (under-diagnosis) look like "
        "non-events, which no metric computed from the labels alone can reveal."
    )
    return out
