"""The one matplotlib setup (Agg backend, imported on first use), the Display base class, and figures
as deterministic PNG.

Every figure in twinml — the evaluation's reliability diagrams, the audit report's, the twin page's
and the what-if curves — is a :class:`Display` (scikit-learn's pattern: an object holding what the
figure shows; ``plot()`` draws it with :func:`pyplot` and keeps ``figure_``), embedded with
:func:`png_bytes` and :func:`png_data_uri`.
"""

from __future__ import annotations

import base64
import io

__all__ = ["Display", "pyplot", "png_bytes", "png_data_uri", "close"]


def pyplot():
    """``matplotlib.pyplot``, imported only when a figure is drawn: on the Agg backend (no display needed)
    unless a backend was chosen already (``MPLBACKEND``, as Jupyter sets, or pyplot imported by the user),
    so that a notebook still shows twinml's figures inline."""
    import os
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def close(fig) -> None:
    """Free a figure that was logged or written."""
    pyplot().close(fig)


def png_bytes(fig) -> bytes:
    """The figure as PNG (then closed); no timestamp in the file, so the same figure gives the same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    close(fig)
    return buf.getvalue()


def png_data_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI for an ``<img>`` in a self-contained HTML file."""
    return "data:image/png;base64," + base64.b64encode(data).decode()


class Display:
    """What a figure shows, drawn on demand (scikit-learn's Display pattern).

    A subclass holds its data as (dataclass) fields and draws them in ``_draw(plt)``, returning the
    figure. ``plot()`` draws and keeps the figure as ``figure_``; ``png()`` gives it as deterministic
    PNG bytes and closes it.
    """

    figure_ = None

    def plot(self):
        """Draw the figure (``self.figure_``; a figure drawn before is closed); returns self."""
        if self.figure_ is not None:
            close(self.figure_)
        self.figure_ = self._draw(pyplot())
        return self

    def png(self) -> bytes:
        """The figure as PNG (drawn first if need be), then closed."""
        fig = self.figure_ if self.figure_ is not None else self.plot().figure_
        self.figure_ = None
        return png_bytes(fig)

    def _draw(self, plt):
        raise NotImplementedError
