"""Pieces of the self-contained HTML reports (the audit, the monitor): one style sheet, cells, tables, verdicts."""

from __future__ import annotations

import html

from ._format import cell

__all__ = ["REPORT_CSS", "td", "table", "status"]

REPORT_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:left}
th{background:#f4f4f4}td.n{text-align:right}.sup{color:#888;font-style:italic}
.pass{color:#1e7e34;font-weight:600}.fail{color:#b21f2d;font-weight:600}.na{color:#777}
.banner{padding:.8em 1em;border-radius:6px;font-size:1.1em;margin:1em 0}.banner.pass{background:#e6f4ea}
.banner.fail{background:#fdecea}.scroll{overflow-x:auto}.figs img{margin:4px;border:1px solid #eee}
.small{font-size:.85em;color:#555}tr.attr th{background:#fafafa;font-weight:600;text-align:left}
table.groups td,table.groups th{padding:2px 5px}
"""


def td(v, digits):
    numeric = isinstance(v, (int, float)) and not isinstance(v, bool) or v == "suppressed"
    return f"<td class='n'>{cell(v, digits=digits)}</td>" if numeric else f"<td>{cell(v, digits=digits)}</td>"


def table(rows, columns, *, headers=None, digits=3):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (headers or columns))
    body = "".join("<tr>" + "".join(td(r.get(c), digits) for c in columns) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def status(passed):
    return {True: '<span class="pass">pass</span>', False: '<span class="fail">FAIL</span>'}.get(
        passed, '<span class="na">n/a</span>'
    )
