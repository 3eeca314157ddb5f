"""Figures of the audit report (a :class:`twinml._plotting.Display` each, embedded as PNG)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._plotting import Display

__all__ = ["ReliabilityBandsDisplay", "DriversDisplay", "SubgroupForestDisplay"]


def _numbers(rows, key):
    return np.array([r[key] if isinstance(r[key], (int, float)) else np.nan for r in rows], float)


@dataclass
class ReliabilityBandsDisplay(Display):
    """Observed rate (Wilson 95% band) against mean predicted risk, before and after the calibrator;
    ``entry`` is a label of the report's calibration section."""

    entry: dict
    title: str

    def _draw(self, plt):
        return _reliability_bands(plt, self.entry, self.title)


def _reliability_bands(plt, entry, title):
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    top = 0.0
    for key, name, style in (("reliability_before", "before calibrator", "o--"), ("reliability", "after", "s-")):
        rows = entry[key]
        x, y = _numbers(rows, "mean_predicted"), _numbers(rows, "observed")
        lo, hi = _numbers(rows, "observed_lo"), _numbers(rows, "observed_hi")
        ax.plot(x, y, style, ms=3.5, label=name)
        ax.fill_between(x, lo, hi, alpha=0.15)
        top = max(top, np.nanmax(np.r_[x, y, 0.0]))
    top = min(1.0, top * 1.15 or 1.0)
    ax.plot([0, top], [0, top], color="grey", lw=0.8, label="ideal")
    ax.set_xlim(0, top), ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted risk (equal-mass bins)")
    ax.set_ylabel("observed rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


@dataclass
class DriversDisplay(Display):
    """Horizontal bars of mean |attribution| per code (suppressed codes left out); ``codes`` are the
    rows of the report's explanations section."""

    codes: list
    title: str

    def _draw(self, plt):
        return _drivers(plt, self.codes, self.title)


def _drivers(plt, codes, title):
    shown = [r for r in codes if isinstance(r["mean_abs"], (int, float))][:15][::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * max(len(shown), 4) + 1.3))
    names = [f"{r['code']} {r.get('description') or ''}".strip()[:48] for r in shown]
    ax.barh(names, [r["mean_abs"] for r in shown], color=["#c0392b" if r["mean"] >= 0 else "#2471a3" for r in shown])
    ax.set_xlabel("mean |attribution| (log-odds)\nred: raises risk on average; blue: lowers it", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def _interval(g, key):
    """(value, lo, hi) of a group's metric as floats, or None where it is suppressed or undefined."""
    v = g.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
        return None
    lo, hi = g.get(f"{key}_lo"), g.get(f"{key}_hi")
    ok = all(isinstance(b, (int, float)) and np.isfinite(b) for b in (lo, hi))
    return (float(v), float(lo), float(hi)) if ok else (float(v), float(v), float(v))


@dataclass
class SubgroupForestDisplay(Display):
    """Forest plot of one label's subgroups: AUROC and O/E with their 95 % intervals, one row a group.

    ``entry`` is a label of the report's fairness section, small cells already suppressed: a suppressed
    group is named (greyed) and drawn without a mark, so the figure shows nothing its table hides. The
    population's value is the dashed line; O/E = 1 (calibrated) the dotted one.
    """

    entry: dict
    title: str

    def _draw(self, plt):
        return _forest(plt, self.entry, self.title)


def _forest(plt, entry, title):
    from matplotlib.ticker import FuncFormatter, NullFormatter

    groups = entry["by_group"]
    overall = next((g for g in groups if g["attribute"] == "overall"), None)
    rows: list[tuple[str, dict | None]] = []  # (label, group) top to bottom; None: an attribute's heading
    for g in groups:
        if g["attribute"] == "overall":
            continue
        if not rows or rows[-1][1] is None or rows[-1][1]["attribute"] != g["attribute"]:
            rows.append((str(g["attribute"]), None))
        rows.append((str(g["group"]), g))
    fig, axes = plt.subplots(
        1, 2, figsize=(7.6, 0.22 * max(len(rows), 4) + 1.2), sharey=True, gridspec_kw={"width_ratios": [1, 1]}
    )
    y = np.arange(len(rows))[::-1]
    for ax, key, name in zip(axes, ("auroc", "observed_expected"), ("AUROC", "observed / expected")):
        for yi, (_, g) in zip(y, rows):
            iv = None if g is None else _interval(g, key)
            if iv is not None:
                v, lo, hi = iv
                ax.errorbar(v, yi, xerr=[[v - lo], [hi - v]], fmt="o", ms=3.5, color="#2c3e50", capsize=2, lw=1)
        pop = None if overall is None else _interval(overall, key)
        note = []
        if pop is not None:
            ax.axvline(pop[0], color="#c0392b", ls="--", lw=1)
            note.append(f"dashed: population {pop[0]:.2f}")
        if key == "observed_expected":
            ax.axvline(1.0, color="grey", ls=":", lw=1)
            note.append("dotted: 1")
            ax.set_xscale("log")
            lo, hi = ax.get_xlim()
            ax.set_xticks([t for t in (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10) if lo <= t <= hi])
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{name}\n({'; '.join(note)})" if note else name, fontsize=8)
        ax.tick_params(axis="x", which="both", labelsize=7)
        ax.grid(axis="x", color="#eee", lw=0.6)
    names = [n if g is None else f"  {n} (suppressed)" if g.get("suppressed") else f"  {n}" for n, g in rows]
    axes[0].set_yticks(y, names, fontsize=7)
    for tick, (_, g) in zip(axes[0].get_yticklabels(), rows):
        if g is None:
            tick.set_fontweight("bold")
        elif g.get("suppressed"):
            tick.set_color("#999")
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
