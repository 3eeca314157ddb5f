"""Plots, kept apart from the maths (matplotlib through :func:`twinml._plotting.pyplot`)."""

from __future__ import annotations

import math

import numpy as np

from .._plotting import pyplot

__all__ = ["reliability_figure"]


def reliability_figure(labels, risks, columns, *, n_bins=10, title=None):
    """Reliability diagrams (equal-mass bins) per label, via sklearn's ``CalibrationDisplay``.

    Returns a matplotlib Figure; labels with fewer than two classes are left blank.
    """
    from sklearn.calibration import CalibrationDisplay

    plt = pyplot()

    n = len(columns)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, c in zip(axes.ravel(), columns):
        known = labels[c].notna().to_numpy()
        y = labels[c][known].astype(bool).to_numpy()
        p = np.asarray(risks[c])[known]
        if np.unique(y).size < 2:
            ax.set_title(f"{c}: one class only")
            continue
        CalibrationDisplay.from_predictions(y, p, n_bins=n_bins, strategy="quantile", ax=ax, name=c)
        top = float(max(np.quantile(p, 0.99), y.mean()) * 1.3)
        ax.set_xlim(0, min(1.0, top))
        ax.set_ylim(0, min(1.0, top))
        ax.set_title(c)
        ax.legend(loc="upper left", fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
