"""The one formatter of numbers for people: CLI tables, the audit's HTML and model card, the twin page
and the what-if report all write their cells through these functions.

``missing`` is what an absent value shows — for :func:`number`, None or NaN; for :func:`percent` and
:func:`points`, also an infinity; for :func:`cell`, None only (a NaN there shows as ``nan``, as the
audit report always did): "—" by default; the CLI's tables show "-" and the what-if report's an empty cell.
"""

from __future__ import annotations

import html
import math

__all__ = ["MISSING", "percent", "points", "number", "cell"]

MISSING = "—"


def _absent(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def percent(v, *, digits: int = 1, missing: str = MISSING) -> str:
    """A probability as a percentage: 0.1234 -> ``12.3%``."""
    return f"{100 * v:.{digits}f}%" if _finite(v) else missing


def points(v, *, digits: int = 1, missing: str = MISSING) -> str:
    """A difference of probabilities in signed percentage points: 0.012 -> ``+1.2``."""
    return f"{100 * v:+.{digits}f}" if _finite(v) else missing


def number(v, digits: int = 3, *, style: str = "f", missing: str = MISSING) -> str:
    """A number with ``digits`` (``style`` ``f``: decimals, ``g``: significant digits); text (such as
    ``"suppressed"``) as it is. For ``g``, infinities count as missing too."""
    if isinstance(v, str):
        return v
    if _absent(v) or (style == "g" and isinstance(v, float) and not math.isfinite(v)):
        return missing
    return f"{v:.{digits}{style}}" if style == "f" or isinstance(v, float) else str(v)


def cell(v, *, digits: int = 3, markup: str = "html") -> str:
    """A report cell. ``html``: escaped text, ``suppressed`` marked, yes/no, integers with thousands
    separators, floats with ``digits`` decimals. ``markdown``: floats with ``digits`` decimals, the rest as text."""
    if v is None:
        return MISSING
    if markup == "markdown":
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return f'<span class="sup">{html.escape(v)}</span>' if v == "suppressed" else html.escape(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))
