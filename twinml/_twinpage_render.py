"""The twin page's figures (a :class:`~twinml._plotting.Display` each, embedded as PNG) and its HTML
(see :mod:`twinml.twinpage`)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._format import number, percent
from ._plotting import Display, png_data_uri, pyplot

if TYPE_CHECKING:
    from .twinpage import TwinPage

__all__ = ["render_twin_html"]

N_LABS = 8  # small lab plots on the timeline
N_LATEST = 15  # rows of the latest-events table
TRAJECTORY_YEARS = 3  # readings shown before the forecasts


# --- figures -----------------------------------------------------------------------------------


def _grid(n, max_cols, width, height):
    """A figure of ``n`` small panels, at most ``max_cols`` a row; the panels in reading order."""
    plt = pyplot()
    ncol = min(max_cols, n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _label(code, descriptions, width=34):
    d = descriptions.get(code) or ""
    text = f"{d} ({code})" if d else code
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")  # matplotlib would read $...$ as mathematics


@dataclass
class TimelineDisplay(Display):
    """Every event of the record by vocabulary (count); the prediction time as a line."""

    page: TwinPage

    def _draw(self, plt):
        page = self.page
        ev = page.events.dropna(subset=["time"])
        fam = ev["code"].astype(str).str.split("/", n=1).str[0]
        order = fam.value_counts()
        shown = list(order.index[:10])
        fam = fam.where(fam.isin(shown), "other")
        if "other" in set(fam):
            shown.append("other")
        fig, ax = plt.subplots(figsize=(10, 0.32 * len(shown) + 1.2))
        for i, f in enumerate(shown):
            t = ev["time"][(fam == f).to_numpy()]
            ax.plot(t, np.full(len(t), i), "|", ms=9, alpha=0.35, color=f"C{i % 10}")
        ax.set_yticks(range(len(shown)), [f"{f} ({int(order.get(f, (fam == f).sum())):,})" for f in shown], fontsize=8)
        ax.set_ylim(-0.7, len(shown) - 0.3)
        ax.invert_yaxis()
        ax.axvline(page.prediction_time, color="k", lw=0.8)
        ax.set_title("every event by vocabulary (count); the line is the prediction time", fontsize=9)
        fig.tight_layout()
        return fig


def _lab_codes(page):
    ev = page.events.dropna(subset=["time", "numeric_value"])
    counts = ev["code"].astype(str).value_counts()
    first = [] if page.trajectory is None else [c for c in pd.unique(page.trajectory["code"]) if c in counts.index]
    return (first + [c for c in counts.index if c not in first])[:N_LABS]


@dataclass
class LabsDisplay(Display):
    """The readings of the most-read numeric codes (``codes``) over time, a panel each."""

    page: TwinPage
    codes: list

    def _draw(self, plt):
        page = self.page
        codes = self.codes
        ev = page.events.dropna(subset=["time", "numeric_value"])
        code = ev["code"].astype(str)
        fig, axes = _grid(len(codes), 4, 2.6, 1.9)
        for ax, c in zip(axes, codes):
            r = ev[(code == c).to_numpy()]
            ax.plot(r["time"], r["numeric_value"], ".-", ms=3, lw=0.6)
            ax.set_title(_label(c, page.descriptions, 30), fontsize=7)
            ax.tick_params(labelsize=6)
            for lab in ax.get_xticklabels():
                lab.set_rotation(30)
        fig.tight_layout()
        return fig


@dataclass
class RiskCurvesDisplay(Display):
    """The risk of each outcome against the horizon, with the model's risk band, a panel each."""

    page: TwinPage

    def _draw(self, plt):
        page = self.page
        outcomes = list(pd.unique(page.risk["outcome"]))
        fig, axes = _grid(len(outcomes), 4, 2.7, 2.5)
        for ax, o in zip(axes, outcomes):
            r = page.risk[page.risk["outcome"] == o].sort_values("horizon_days")
            if r["horizon_days"].isna().any():  # a label without a horizon in its name: one point and its band
                ax.errorbar(
                    [0],
                    100 * r["risk"].to_numpy()[:1],
                    fmt="o",
                    yerr=None
                    if r["band_lo"].isna().any()
                    else [
                        100 * (r["risk"] - r["band_lo"]).to_numpy()[:1],
                        100 * (r["band_hi"] - r["risk"]).to_numpy()[:1],
                    ],
                )
                ax.set_xticks([0], [o])
            else:
                x = np.r_[0, r["horizon_days"].to_numpy(np.int64)]
                ax.plot(x, 100 * np.r_[0, r["risk"]], "o-", ms=3)
                if r["band_lo"].notna().all():
                    ax.fill_between(x, 100 * np.r_[0, r["band_lo"]], 100 * np.r_[0, r["band_hi"]], alpha=0.2, lw=0)
                ax.set_xticks(x)
            ax.set_title(o.replace("$", r"\$"), fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("days ahead", fontsize=7)
            ax.set_ylabel("risk (%)", fontsize=7)
        fig.tight_layout()
        return fig


@dataclass
class TrajectoryDisplay(Display):
    """Each forecast lab's recent readings, its median forecast per horizon and the 80 % interval."""

    page: TwinPage

    def _draw(self, plt):
        page = self.page
        tr = page.trajectory
        if tr is None:
            raise ValueError("TrajectoryDisplay: the page has no trajectories to draw.")
        codes = list(pd.unique(tr["code"]))
        ev = page.events.dropna(subset=["time", "numeric_value"])
        since = page.prediction_time - pd.Timedelta(days=round(365.25 * TRAJECTORY_YEARS))
        ev = ev[(ev["time"] >= since).to_numpy()]
        code = ev["code"].astype(str)
        fig, axes = _grid(len(codes), 4, 2.7, 2.1)
        for ax, c in zip(axes, codes):
            r = ev[(code == c).to_numpy()]
            f = tr[tr["code"] == c].sort_values("horizon_days")
            when = page.prediction_time + pd.to_timedelta(f["horizon_days"].to_numpy(), unit="D")
            ax.plot(r["time"], r["numeric_value"], ".", ms=4, color="C0", label="readings")
            ax.fill_between(when, f["lower_80"], f["upper_80"], color="C1", alpha=0.25, lw=0, label="80% interval")
            ax.plot(when, f["forecast"], "o-", ms=3, color="C1", label="forecast")
            if len(r):
                ax.plot(
                    [r["time"].iloc[-1], when[0]],
                    [r["numeric_value"].iloc[-1], f["forecast"].iloc[0]],
                    ":",
                    color="C1",
                    lw=0.8,
                )
            ax.axvline(page.prediction_time, color="k", lw=0.6)
            ax.set_title(_label(c, page.descriptions, 30), fontsize=7)
            ax.tick_params(labelsize=6)
            for lab in ax.get_xticklabels():
                lab.set_rotation(30)
        axes[0].legend(fontsize=6, loc="best")
        fig.tight_layout()
        return fig


@dataclass
class PatientDriversDisplay(Display):
    """The codes that move this patient's risk most, one panel per outcome (red raises it)."""

    page: TwinPage

    def _draw(self, plt):
        page = self.page
        d = page.drivers
        if d is None:
            raise ValueError("PatientDriversDisplay: the page has no drivers to draw.")
        outcomes = list(pd.unique(d["outcome"]))
        fig, axes = _grid(len(outcomes), 3, 3.9, 0.23 * d.groupby("outcome").size().max() + 1.1)
        for ax, o in zip(axes, outcomes):
            r = d[d["outcome"] == o].iloc[::-1]
            ax.barh(
                [_label(c, page.descriptions, 26) for c in r["code"]],
                r["attribution"],
                color=np.where(r["attribution"] >= 0, "#c0392b", "#2471a3"),
            )
            ax.axvline(0, color="k", lw=0.5)
            ax.set_title(r["label"].iloc[0].replace("$", r"\$"), fontsize=9)
            ax.tick_params(axis="y", labelsize=6)
            ax.tick_params(axis="x", labelsize=6)
        fig.supxlabel("attribution to the log-odds (red raises the risk, blue lowers it)", fontsize=7)
        fig.tight_layout()
        return fig


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;
color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.82em}td,th{border:1px solid #ddd;padding:2px 7px;
text-align:left}
th{background:#f4f4f4}td.n{text-align:right}.note{color:#555;font-size:.9em}.no{color:#b21f2d}
img{max-width:100%;border:1px solid #eee}
"""
# the page fetches nothing: images are data: URIs, styles inline, no scripts
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(v):
    return html.escape(str(v))


def _table(header, rows):
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(display, alt):
    return f"<img src='{png_data_uri(display.png())}' alt='{_e(alt)}'>"


def _n(v):
    return f"<td class='n'>{v}</td>"


def _record_html(page):
    ev = page.events
    timed = ev.dropna(subset=["time"])
    traits = "; ".join(f"{_e(k)} <b>{_e(v)}</b>" for k, v in page.traits.items())
    parts = [
        f"<p>{traits}. {len(timed):,} events of {timed['code'].nunique():,} codes from "
        f"{timed['time'].min():%Y-%m-%d} to {timed['time'].max():%Y-%m-%d}.</p>",
        _img(TimelineDisplay(page), "timeline of the record"),
    ]
    labs = _lab_codes(page)
    if labs:
        parts += ["<h3>Labs and measurements</h3>", _img(LabsDisplay(page, labs), "lab values over time")]
    else:
        parts.append("<p class='note'>No numeric readings in this record.</p>")
    latest = timed.tail(N_LATEST).iloc[::-1]
    rows = []
    for r in latest.itertuples():
        value = number(float(r.numeric_value), 4, style="g") if pd.notna(r.numeric_value) else ""
        rows.append([f"{r.time:%Y-%m-%d %H:%M}", _e(r.code), _e(page.descriptions.get(str(r.code), "")), value])
    parts += ["<h3>Latest events</h3>", _table(["time", "code", "description", "value"], rows)]
    return parts


def _risk_html(page):
    rows = [
        [
            _e(r.outcome),
            _n("—" if pd.isna(r.horizon_days) else r.horizon_days),
            _n(percent(r.risk)),
            _n(f"{percent(r.band_lo)}–{percent(r.band_hi)}" if np.isfinite(r.band_lo) else "—"),
        ]
        for r in page.risk.itertuples()
    ]
    return [
        _img(RiskCurvesDisplay(page), "risk curves"),
        f"<p class='note'>{_e(page.band_note)}</p>",
        _table(["outcome", "within days", "risk", "band"], rows),
    ]


def _trajectory_html(page):
    if page.trajectory is None:
        return [f"<p class='note'>{_e(page.notes['trajectory'])}</p>"]
    rows = [
        [
            _e(_label(r.code, page.descriptions, 60)),
            _n(r.horizon_days),
            _n(number(r.forecast, 4, style="g")),
            _n(f"{number(r.lower_80, 4, style='g')} – {number(r.upper_80, 4, style='g')}"),
        ]
        for r in page.trajectory.itertuples()
    ]
    return [
        _img(TrajectoryDisplay(page), "trajectory forecasts"),
        f"<p class='note'>Readings of the last {TRAJECTORY_YEARS} years, then the median forecast of the "
        "reading nearest each horizon with its 80 % interval (conformalised on the tuning rows).</p>",
        _table(["code", "days ahead", "forecast", "80% interval"], rows),
    ]


def _whatif_html(page):
    if page.whatif is None:
        return [f"<p class='note'>{_e(page.notes['whatif'])}</p>"]
    from .whatif import PlanCurvesDisplay

    w, p = page.whatif, page.whatif.prediction
    rows = []
    for r in w.table().itertuples():
        support = "yes" if r.in_support else f"<span class='no'>no: {_e(r.support_note)}</span>"
        rows.append(
            [
                _e(w.descriptions.get(r.plan, r.plan)),
                _e(r.outcome),
                _n(r.horizon_days),
                _n(percent(r.risk)),
                _n(f"{percent(r.risk_lo)}–{percent(r.risk_hi)}"),
                _n(percent(r.effect)),
                _n(f"{percent(r.effect_lo)}–{percent(r.effect_hi)}"),
                support,
            ]
        )
    return [
        _img(PlanCurvesDisplay(w, 0), "risk under each plan"),
        f"<p class='note'>Effects are against <b>{_e(p.plans[0])}</b>; bands are {int(p.band * 100)} % "
        "bootstrap bands. A plan outside the data's support is not estimated.</p>",
        _table(["plan", "outcome", "within days", "risk", "band", "effect", "band", "in support"], rows),
    ]


def _drivers_html(page):
    if page.drivers is None:
        return [f"<p class='note'>{_e(page.notes['drivers'])}</p>"]
    if page.drivers.empty:
        return ["<p class='note'>No code moved this patient's risk (every attribution is zero).</p>"]
    skipped = [f"<p class='note'>{_e(page.notes['drivers'])}</p>"] if "drivers" in page.notes else []
    rows = [
        [
            _e(r.outcome),
            _e(r.code),
            _e(r.description),
            _n(f"{r.attribution:+.3f}"),
            _e(r.direction),
            _n("—" if pd.isna(r.last_days_before) else f"{int(r.last_days_before):,}"),
        ]
        for r in page.drivers.itertuples()
    ]
    return [
        _img(PatientDriversDisplay(page), "top drivers of the risk"),
        "<p class='note'>SHAP attributions of each outcome's log-odds at its longest horizon, summed over "
        "each code's events (as in the audit's explanations).</p>",
        _table(["outcome", "code", "description", "attribution", "direction", "last seen (days before)"], rows),
        *skipped,
    ]


def render_twin_html(page) -> str:
    """The page as one HTML string (figures embedded; opens offline and fetches nothing)."""
    sections = [
        ("record", "1. Record", _record_html),
        ("risk", "2. Risk", _risk_html),
        ("trajectories", "3. Trajectories", _trajectory_html),
        ("whatif", "4. What-if plans", _whatif_html),
        ("drivers", "5. Drivers of the risk", _drivers_html),
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">",
        f"<title>twinml twin: subject {page.subject_id}</title><style>{_CSS}</style></head><body>",
        f"<h1>Twin of subject {page.subject_id} at {page.prediction_time:%Y-%m-%d %H:%M}</h1>",
        f"<p class='note'>{_e(page.model)} · events after the prediction time are not shown or used.</p>",
    ]
    for key, title, body in sections:
        parts += [f"<section id='{key}'><h2>{title}</h2>", *body(page), "</section>"]
    parts.append("</body></html>")
    return "\n".join(parts)
