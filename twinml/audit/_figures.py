"""Figures of the audit report (drawn with :func:`twinml._plotting.pyplot`, embedded as PNG)."""

from __future__ import annotations

import numpy as np

from .._plotting import pyplot

__all__ = ["reliability_bands_figure", "importance_figure"]


def _numbers(rows, key):
    return np.array([r[key] if isinstance(r[key], (int, float)) else np.nan for r in rows], float)


def reliability_bands_figure(entry, *, title):
    """Observed rate (Wilson 95% band) against mean predicted risk, before and after the calibrator."""
    plt = pyplot()
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


def importance_figure(codes, *, title):
    """Horizontal bars of mean |attribution| per code (suppressed codes left out)."""
    plt = pyplot()
    shown = [r for r in codes if isinstance(r["mean_abs"], (int, float))][:15][::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * max(len(shown), 4) + 1.3))
    names = [f"{r['code']} {r.get('description') or ''}".strip()[:48] for r in shown]
    ax.barh(names, [r["mean_abs"] for r in shown], color=["#c0392b" if r["mean"] >= 0 else "#2471a3" for r in shown])
    ax.set_xlabel("mean |attribution| (log-odds)\nred: raises risk on average; blue: lowers it", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig
