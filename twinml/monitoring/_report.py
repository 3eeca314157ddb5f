"""The monitoring report as one self-contained HTML file (figures embedded): verdict, gates, drift per
group and feature, predicted-risk distributions, unseen codes. Drawn from the report's JSON, after
small cells were suppressed, so the page shows nothing the JSON does not."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from .._format import cell
from .._html import REPORT_CSS, status, table
from .._plotting import Display, png_data_uri

__all__ = ["render_html", "DriftDisplay", "RiskShiftDisplay", "PerformanceDisplay"]

_TOP = 20


@dataclass
class DriftDisplay(Display):
    """The features with the largest population stability index, flagged ones in red."""

    features: list[dict]
    min_psi: float

    def _draw(self, plt):
        rows = sorted(self.features, key=lambda f: f["psi"])[-_TOP:]
        fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(rows) + 1.2))
        colours = ["#b21f2d" if f["flagged"] else "#7a8ca3" for f in rows]
        ax.barh([f"{f['group']}: {f['feature']}"[:48] for f in rows], [f["psi"] for f in rows], color=colours)
        ax.axvline(self.min_psi, color="#444", linestyle="--", linewidth=1, label=f"min PSI {self.min_psi}")
        ax.set_xlabel("population stability index (reference -> current)")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        return fig


@dataclass
class RiskShiftDisplay(Display):
    """Each predicted-risk column: the share of subjects per reference decile, reference vs current."""

    features: list[dict] = field(default_factory=list)

    def _draw(self, plt):
        rows = self.features[:6]
        fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 2.8), squeeze=False)
        for ax, f in zip(axes[0], rows):
            x = np.arange(len(f["bins"]))
            for counts, offset, name, colour in (
                (f["reference_counts"], -0.2, "reference", "#7a8ca3"),
                (f["current_counts"], 0.2, "current", "#d08c2b"),
            ):
                shown = np.array([np.nan if c is None else c for c in counts], float)
                ax.bar(x + offset, shown / max(np.nansum(shown), 1), width=0.4, label=name, color=colour)
            ax.set_title(f["feature"] + (" (flagged)" if f["flagged"] else ""), fontsize=9)
            ax.set_xlabel("reference decile of predicted risk", fontsize=8)
            ax.set_xticks(x, [str(i + 1) for i in x], fontsize=7)
        axes[0][0].set_ylabel("share of subjects")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        return fig


@dataclass
class PerformanceDisplay(Display):
    """AUROC and O/E per period with their intervals, one line per label (suppressed periods left out)."""

    rows: list[dict]

    def _draw(self, plt):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
        shown = [r for r in self.rows if not r["suppressed"]]
        periods = sorted({r["period"] for r in self.rows})
        x_of = {p: i for i, p in enumerate(periods)}
        for label in dict.fromkeys(r["label"] for r in shown):
            rs = [r for r in shown if r["label"] == label]
            x = np.array([x_of[r["period"]] for r in rs], float)
            for ax, (v, lo, hi) in (
                (ax1, ("auroc", "auroc_lo", "auroc_hi")),
                (ax2, ("observed_expected", "oe_lo", "oe_hi")),
            ):
                y = np.array([r[v] for r in rs])
                err = np.abs(np.array([[r[lo] for r in rs], [r[hi] for r in rs]], float) - y)
                ax.errorbar(x, y, yerr=np.nan_to_num(err), marker="o", capsize=2, label=label)
        ax2.axhline(1.0, color="#444", linestyle="--", linewidth=1)
        for ax, name in ((ax1, "AUROC"), (ax2, "observed / expected events")):
            ax.set_xticks(range(len(periods)), periods, rotation=45, fontsize=7)
            ax.set_ylabel(name)
        ax1.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _panel(facts: dict) -> dict:
    return {k: facts.get(k) for k in ("events", "scores", "as_of", "subjects", "model_version")}


def render_html(report: dict) -> str:
    """The whole report, figures embedded as data URIs (opens offline)."""
    passed = report["passed"]
    gates = report["gates"]
    parts = [
        f"<h1>twinml monitoring report</h1><p class='small'>model {html.escape(str(report['model_uri']))}</p>",
        f"<div class='banner {'pass' if passed else 'fail'}'>{'PASSED' if passed else 'FAILED'}: "
        f"{sum(not g['passed'] for g in gates)} of {len(gates)} gates failed</div>",
        "<h2>Gates</h2>",
        "<table><tr><th>gate</th><th>value</th><th>rule</th><th>result</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(g['name'])}</td><td>{cell(g['value'], digits=4)}</td>"
            f"<td>{html.escape(g['rule'])}</td><td>{status(g['passed'])}</td></tr>"
            for g in gates
        )
        + "</table>",
    ]
    if "groups" in report:
        parts += _drift_html(report)
    if report.get("performance"):
        parts += _performance_html(report["performance"])
    body = "\n".join(parts)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>twinml monitoring report</title>"
        f"<style>{REPORT_CSS}</style></head><body>{body}</body></html>"
    )


def _drift_html(report: dict) -> list[str]:
    features = report["features"]
    risk = [f for f in features if f["group"] == "predicted risk"]
    figures = []
    if features:
        figures.append(DriftDisplay(features, report["policy"]["min_psi"]).png())
    if risk:
        figures.append(RiskShiftDisplay(risk).png())
    top = sorted(features, key=lambda f: (not f["flagged"], -f["psi"]))[:40]
    groups = [
        {**g, "flagged": ", ".join(g["flagged"]) or "none", "worst": g["worst"]["feature"], "psi": g["worst"]["psi"]}
        for g in report["groups"]
    ]
    panels = [{"panel": "reference", **_panel(report["reference"])}, {"panel": "current", **_panel(report["current"])}]
    return [
        "<h2>Panels</h2>",
        table(panels, ["panel", "events", "scores", "as_of", "subjects", "model_version"]),
        "<h2>Drift by group</h2>",
        table(
            groups,
            ["group", "tested", "flagged", "worst", "psi"],
            headers=["group", "features tested", "flagged", "largest shift", "its PSI"],
        ),
        "<div class='figs'>" + "".join(f"<img alt='figure' src='{png_data_uri(f)}'>" for f in figures) + "</div>",
        "<h2>Features</h2><p class='small'>Flagged first, then by PSI (top 40). p adjusted: Westfall-Young "
        f"min-p over all {len(features)} tested features, {report['policy']['permutations']} permutations.</p>",
        table(
            top,
            ["group", "feature", "description", "n_reference", "n_current", "psi", "p_adjusted", "flagged"],
            digits=4,
        ),
        _unseen_html(report),
    ]


def _interval(r: dict, value: str, lo: str, hi: str) -> str:
    if r.get("suppressed"):
        return "suppressed"
    return f"{r[value]:.3f} [{r[lo]:.3f}, {r[hi]:.3f}]"


def _performance_html(performance: dict) -> list[str]:
    rows = [
        {
            "label": r["label"],
            "period": r["period"],
            "n": r["n"] if not r["suppressed"] else "suppressed",
            "events": r["events"] if not r["suppressed"] else "suppressed",
            "auroc": _interval(r, "auroc", "auroc_lo", "auroc_hi"),
            "oe": _interval(r, "observed_expected", "oe_lo", "oe_hi"),
            "slope": _interval(r, "calibration_slope", "slope_lo", "slope_hi"),
        }
        for r in performance["rows"]
    ]
    figure = PerformanceDisplay(performance["rows"]).png()
    attrition = [
        {k.removeprefix("labelled "): v for k, v in a.items() if k != "file"} for a in performance["attrition"]
    ]
    return [
        "<h2>Performance over time</h2>",
        f"<p class='small'>Earlier scores labelled with the outcomes in {html.escape(performance['outcomes'])} "
        "by the model's task (censored rows left out); 95% intervals.</p>",
        table(
            performance["recommendations"],
            ["label", "action", "why"],
            headers=["label", "recommended", "why"],
        ),
        f"<div class='figs'><img alt='performance over time' src='{png_data_uri(figure)}'></div>",
        "<p class='small'>Scores files: subjects scored, of them not in the outcomes dataset, eligible under the "
        "task's rules at the as-of time, and labelled per label (the rest censored or with the outcome before).</p>",
        table(attrition, list(attrition[0]) if attrition else []),
        table(
            rows,
            ["label", "period", "n", "events", "auroc", "oe", "slope"],
            headers=["label", "period", "n", "events", "AUROC", "O/E", "calibration slope"],
        ),
    ]


def _unseen_html(report: dict) -> str:
    unseen = report["unseen_codes"]
    if unseen is None:
        return ""
    rows = [{**c, "events": c["events"] if c["events"] is not None else "suppressed"} for c in unseen["codes"][:30]]
    return (
        f"<h2>Codes the reference never recorded</h2><p>{cell(unseen['rate'], digits=4)} of the current window's "
        f"events ({'suppressed' if unseen['events'] is None else format(unseen['events'], ',')}); "
        f"counts under {report['policy']['min_cell']} subjects suppressed."
        + (
            f" {cell(unseen['outside_model_vocabulary'], digits=4)} of the window's events carry a code the model"
            " does not read (never seen in training, or too rare to keep)."
            if unseen.get("outside_model_vocabulary") is not None
            else ""
        )
        + "</p>"
        + (table(rows, ["code", "events", "subjects"]) if rows else "")
    )
