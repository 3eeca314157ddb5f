"""Plots, kept apart from the maths (a :class:`twinml._plotting.Display` each)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._plotting import Display

__all__ = ["ReliabilityDisplay", "reliability_figure"]


@dataclass
class ReliabilityDisplay(Display):
    """Reliability diagrams (equal-mass bins) per label, via sklearn's ``CalibrationDisplay``.

    ``labels`` holds the label columns, ``risks`` maps each of ``columns`` to its predicted risks;
    labels with fewer than two classes are left blank. ``plot()`` draws; ``figure_`` is the figure.
    """

    labels: pd.DataFrame
    risks: Mapping | pd.DataFrame  # column -> predicted risks
    columns: list
    n_bins: int = 10
    title: str | None = None

    def _draw(self, plt):
        from sklearn.calibration import CalibrationDisplay

        n = len(self.columns)
        ncols = min(4, n)
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
        for ax, c in zip(axes.ravel(), self.columns):
            known = self.labels[c].notna().to_numpy()
            y = self.labels[c][known].astype(bool).to_numpy()
            p = np.asarray(self.risks[c])[known]
            if np.unique(y).size < 2:
                ax.set_title(f"{c}: one class only")
                continue
            CalibrationDisplay.from_predictions(y, p, n_bins=self.n_bins, strategy="quantile", ax=ax, name=c)
            top = float(max(np.quantile(p, 0.99), y.mean()) * 1.3)
            ax.set_xlim(0, min(1.0, top))
            ax.set_ylim(0, min(1.0, top))
            ax.set_title(c)
            ax.legend(loc="upper left", fontsize=7)
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        if self.title:
            fig.suptitle(self.title)
        fig.tight_layout()
        return fig


def reliability_figure(labels, risks, columns, *, n_bins=10, title=None):
    """:class:`ReliabilityDisplay`'s figure (a matplotlib Figure)."""
    return ReliabilityDisplay(labels, risks, columns, n_bins=n_bins, title=title).plot().figure_
