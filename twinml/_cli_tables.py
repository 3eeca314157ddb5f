"""What the ``twinml`` commands print: rich tables of metrics, gates and what-if risks."""

from __future__ import annotations


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _print_whatif(result):
    import pandas as pd
    from rich.table import Table

    p = result.prediction
    console = _console()
    for row in range(len(p.index)):
        t = pd.Timestamp(p.index["prediction_time"].iloc[row])
        table = Table(
            title=f"subject {p.index['subject_id'].iloc[row]} at {t:%Y-%m-%d}: risk under each plan "
            f"(effect vs {result.descriptions[p.plans[0]]}, {int(p.band * 100)}% band)",
            title_justify="left",
        )
        table.add_column("plan")
        table.add_column("outcome")
        for h in p.horizons:
            table.add_column(f"{h} days", justify="right")
        for j, plan in enumerate(p.plans):
            for k, outcome in enumerate(p.outcomes):
                name = result.descriptions[plan] if k == 0 else ""
                if not p.in_support[row, j]:
                    if k == 0:
                        table.add_row(name, "all", *(["n/e"] * len(p.horizons)))
                        table.add_row("", f"[dim]{p.reason[row, j]}[/dim]", *([""] * len(p.horizons)))
                    continue
                cells = []
                for i in range(len(p.horizons)):
                    cell = f"{100 * p.risk[row, j, k, i]:.1f}%"
                    if j:
                        cell += (
                            f" ({100 * p.effect[row, j, k, i]:+.1f} [{100 * p.effect_lo[row, j, k, i]:+.1f}, "
                            f"{100 * p.effect_hi[row, j, k, i]:+.1f}])"
                        )
                    cells.append(cell)
                table.add_row(name, outcome, *cells, end_section=k == len(p.outcomes) - 1)
        console.print(table)
    console.print("effects in percentage points; n/e: not estimable (outside the support of the training data).")


def _print_gates(report, *, failed_only=False):
    from rich.table import Table

    n_failed = sum(g["passed"] is False for g in report["gates"])
    t = Table(
        title=f"audit gates: {'PASSED' if report['passed'] else 'FAILED'} "
        f"({n_failed} of {len(report['gates'])} failed{'; failing ones shown' if failed_only else ''})"
    )
    for col in ("gate", "label", "value", "rule", "result", "groups / note"):
        t.add_column(col)
    for g in report["gates"]:
        if failed_only and g["passed"] is not False:
            continue
        res = {True: "[green]pass[/green]", False: "[red]FAIL[/red]"}.get(g["passed"], "n/a")
        t.add_row(g["gate"], g["label"], _fmt(g["value"]), g["rule"], res, ", ".join(g["groups"]) or (g["note"] or ""))
    _console().print(t)


def _fmt(x, digits=3):
    import math

    if isinstance(x, str):  # e.g. "suppressed"
        return x
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _print_metrics(table, *, title):
    from rich.table import Table

    t = Table(title=title)
    for col in (
        "label",
        "n",
        "pos",
        "AUROC [95% CI]",
        "AUPRC",
        "oracle AUROC",
        "model/oracle",
        "Brier",
        "ECE",
        "slope",
    ):
        t.add_column(col, justify="left" if col == "label" else "right")
    for r in table.to_dict("records"):
        t.add_row(
            r["label"],
            str(r["n"]),
            str(r["positives"]),
            f"{_fmt(r.get('auroc'))} [{_fmt(r.get('auroc_lo'))}, {_fmt(r.get('auroc_hi'))}]",
            _fmt(r.get("auprc")),
            _fmt(r.get("oracle_auroc")),
            _fmt(r.get("auroc_vs_oracle"), 2),
            _fmt(r.get("brier"), 4),
            _fmt(r.get("ece"), 4),
            _fmt(r.get("calibration_slope"), 2),
        )
    _console().print(t)


def _print_quickstart(tables, *, tracking_uri):
    from rich.table import Table

    t = Table(title="quickstart: held-out AUROC vs the oracle (true risks), and calibration")
    t.add_column("label")
    t.add_column("oracle", justify="right")
    for kind in tables:
        t.add_column(f"{kind} AUROC", justify="right")
        t.add_column(f"{kind} ECE", justify="right")
    first = next(iter(tables.values()))[0]
    for i, label in enumerate(first["label"]):
        row = [label, _fmt(first["oracle_auroc"].iloc[i]) if "oracle_auroc" in first else "—"]
        for table, _ in tables.values():
            row += [_fmt(table["auroc"].iloc[i]), _fmt(table["ece"].iloc[i], 4)]
        t.add_row(*row)
    c = _console()
    c.print(t)
    for kind, (_, run_id) in tables.items():
        c.print(f"{kind}: MLflow run {run_id}")
    c.print(f"tracking store: {tracking_uri}\nbrowse: mlflow ui --backend-store-uri {tracking_uri}")
