"""What the ``twinml`` commands print: rich tables of metrics, gates and what-if risks."""

from __future__ import annotations

from ._format import number, percent, points


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


def _print_whatif_vs_truth(example):
    """The quickstart's what-if (a :class:`twinml.quickstart.WhatIfExample`) at 365 days (else its longest
    horizon) beside the simulator's true risks: the reference plan's risk, then each plan's effect with its
    band; then the band's coverage and the PEHE over every candidate patient."""
    import pandas as pd
    from rich.table import Table

    result, true_risk, check = example.result, example.true_risk, example.check
    p, row = result.prediction, 0
    i = p.horizons.index(365) if 365 in p.horizons else len(p.horizons) - 1
    t = pd.Timestamp(p.index["prediction_time"].iloc[row])
    table = Table(
        title=f"what-if for subject {p.index['subject_id'].iloc[row]} at {t:%Y-%m-%d}, risk within "
        f"{p.horizons[i]} days: the twin ({int(p.band * 100)}% band) vs the simulator's truth",
        title_justify="left",
    )
    for name in ("plan", "outcome"):
        table.add_column(name)
    for name in ("twin", "truth"):
        table.add_column(name, justify="right")
    for j, plan in enumerate(p.plans):
        for k, outcome in enumerate(p.outcomes):
            name = result.descriptions[plan] if k == 0 else ""
            last = k == len(p.outcomes) - 1
            true_ref, true_plan = true_risk[0, k, i], true_risk[j, k, i]
            if j == 0:
                table.add_row(
                    name,
                    outcome,
                    f"{100 * p.risk[row, 0, k, i]:.1f}%",
                    percent(true_ref, missing="-"),
                    end_section=last,
                )
            elif not p.in_support[row, j]:
                table.add_row(name, outcome, "n/e", points(true_plan - true_ref, missing="-"), end_section=last)
            else:
                lo, hi = p.effect_lo[row, j, k, i], p.effect_hi[row, j, k, i]
                cell = f"{100 * p.effect[row, j, k, i]:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                table.add_row(name, outcome, cell, points(true_plan - true_ref, missing="-"), end_section=last)
    c = _console()
    c.print(table)
    c.print(
        f"the reference row is the risk under {result.descriptions[p.plans[0]]}; the others are the change in "
        "risk, in percentage points; n/e: not estimable (outside the support of the training data).",
        soft_wrap=True,
    )
    if not check["pairs"]:
        c.print(f"over {check['rows']:,} held-out patients no effect is in support: nothing to check.")
        return
    c.print(
        f"over {check['rows']:,} held-out patients, {check['pairs']:,} (patient, plan, outcome) effects in support: "
        f"the true {p.horizons[i]}-day effect lies inside the twin's band for {check['coverage']:.0%}; PEHE (root "
        f"mean squared error of the effect) {check['pehe_pp']:.2f} pp, against a mean true effect of "
        f"{check['mean_abs_true_effect_pp']:.2f} pp in size.",
        soft_wrap=True,
    )


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
        t.add_row(
            g["gate"], g["label"], number(g["value"]), g["rule"], res, ", ".join(g["groups"]) or (g["note"] or "")
        )
    _console().print(t)


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
            f"{number(r.get('auroc'))} [{number(r.get('auroc_lo'))}, {number(r.get('auroc_hi'))}]",
            number(r.get("auprc")),
            number(r.get("oracle_auroc")),
            number(r.get("auroc_vs_oracle"), 2),
            number(r.get("brier"), 4),
            number(r.get("ece"), 4),
            number(r.get("calibration_slope"), 2),
        )
    _console().print(t)


def _print_quickstart(tables, *, tracking_uri):
    from rich import box
    from rich.table import Table

    # two-line headers and a light box: the table fits an 80-column terminal
    t = Table(
        title="quickstart, held-out split: AUROC vs the oracle (true risks), and ECE",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 0, 0, 1),
    )
    t.add_column("label", no_wrap=True)
    t.add_column("oracle\nAUROC", justify="right", no_wrap=True)
    for kind in tables:
        t.add_column(f"{kind}\nAUROC", justify="right", no_wrap=True)
        t.add_column(f"{kind}\nECE", justify="right", no_wrap=True)
    first = next(iter(tables.values()))[0]
    for i, label in enumerate(first["label"]):
        row = [label, number(first["oracle_auroc"].iloc[i]) if "oracle_auroc" in first else "—"]
        for table, _ in tables.values():
            row += [number(table["auroc"].iloc[i]), number(table["ece"].iloc[i], 4)]
        t.add_row(*row)
    c = _console()
    c.print(t)
    for kind, (_, run_id) in tables.items():
        c.print(f"{kind}: MLflow run {run_id}")
    c.print(f"tracking store: {tracking_uri}")


def _print_quickstart_end(res, n_subjects):
    """The audit's verdict, the gates the demo policy left off, and the three things to open next."""
    c = _console()
    report = res.audit.out_dir / "report.html"
    c.print(f"audit of the lightgbm model: {'passed' if res.audit.passed else 'FAILED'} its gates ({res.policy.name})")
    if res.gates_off:
        c.print(
            f"demo policy: gates off because {n_subjects:,} simulated patients leave too few held-out cases per "
            f"subgroup for their 95 % bounds (they need a bigger cohort): {', '.join(res.gates_off)}. "
            "configs/audit_policy.yaml has every gate on.",
            soft_wrap=True,
        )
    if not res.audit.passed:
        c.print(
            "next: the report gives each failing gate's figures and rule; raise --n-subjects, or audit a model "
            "of your own with `twinml audit`.",
            soft_wrap=True,
        )
    c.print("open next:")
    c.print(f"  1. the runs:   mlflow ui --backend-store-uri {res.tracking_uri}", soft_wrap=True)
    c.print(f"  2. the audit:  {report.resolve()}", soft_wrap=True)
    c.print(f"  3. a what-if:  {(res.whatif.out / 'report.html').resolve()}", soft_wrap=True)


def _print_ingest(report):
    """The data-quality gate's count identity and its rows per table and reason, then the files."""
    from rich.table import Table

    t = Table(
        title=f"data quality: {report.rows_read:,} read = {report.rows_kept:,} kept + "
        f"{report.rows_quarantined:,} quarantined"
    )
    for col in ("table", "reason", "rows"):
        t.add_column(col, justify="right" if col == "rows" else "left")
    for r in report.summary.to_dict("records"):
        t.add_row(r["table"], r["reason"], f"{r['rows']:,}")
    c = _console()
    c.print(t)
    if report.out is not None:
        c.print(
            f"quarantine: {report.out / 'quality' / 'quarantine.parquet'}; "
            f"summary: {report.out / 'quality' / 'summary.json'}"
        )


def _print_simulated(cohort, out, say):
    say(
        f"wrote {cohort.events.num_rows:,} events for {len(cohort.subject_splits):,} subjects to {out} "
        f"(ground truth: {out / 'truth' / 'ground_truth.parquet'})"
    )


def _print_train(res, cfg):
    for split, table in res.metrics.items():
        _print_metrics(table, title=f"{cfg.name} [{cfg.model.kind}] on {split}")
    _console().print(f"MLflow run {res.run_id} at {res.tracking_uri}\nmodel: {res.model_uri}")


def _print_score(report):
    _console().print(
        f"model {report.model_name or report.model_uri}"
        + (f" version {report.model_version}" if report.model_version else "")
        + f"; input {report.input_fingerprint}; {report.events_read:,} events read"
    )


def _print_update(report, out):
    """What an update could not absorb, and what to do about it."""
    if report.refused:
        _console().print(
            f"{report.refused:,} subjects refused (an event at or before their last absorbed visit, "
            f"an as-of before their state, or static rows again): their status in {out} says why; "
            "rescore them in full."
        )
    if report.events_after_as_of:
        _console().print(
            f"{report.events_after_as_of:,} new events are after --as-of and were not absorbed "
            f"({report.not_yet:,} subjects had no earlier one): send them again with a later update."
        )


def _print_promoted(name, alias, res):
    how = "OVERRIDE recorded on the version" if res["override"] else "audit passed"
    _console().print(f"{name}@{alias} -> version {res['version']} ({how})")


def _print_audit(res):
    _print_gates(res.report)
    _console().print(f"report: {res.out_dir / 'report.html'}")


def _print_monitor(res):
    """Drift per feature group (with its largest shift), performance by period, then the gates."""
    r = res.report
    if "groups" in r:
        _print_drift(r)
    if r.get("performance"):
        _print_performance(r["performance"])
    from rich.table import Table

    g = Table(title=f"monitor gates: {'PASSED' if r['passed'] else 'FAILED'}")
    for col in ("gate", "value", "rule", "result"):
        g.add_column(col)
    for gate in r["gates"]:
        value = number(gate["value"], 4) if isinstance(gate["value"], float) else str(gate["value"])
        g.add_row(gate["name"], value, gate["rule"], "[green]pass[/green]" if gate["passed"] else "[red]FAIL[/red]")
    _console().print(g)
    if res.out_dir is not None:
        _console().print(f"report: {res.out_dir / 'report.html'}")


def _print_recalibrated(report):
    from rich.table import Table

    t = Table(title=f"{report.name} version {report.version}: recalibrated from version {report.parent_version}")
    for col in ("outcome", "rows", "update", "O/E before", "O/E after"):
        t.add_column(col)
    for u in report.updates:
        if "skipped" in u:
            t.add_row(u["outcome"], str(u["rows"]), u["skipped"], "-", "-")
            continue
        update = f"hazard x {u['hazard_ratio']:.3f}" if u["hazard_ratio"] else f"a={u['a']:.3f}, b={u['b']:.3f}"
        t.add_row(u["outcome"], str(u["rows"]), update, number(u["oe_before"], 3), number(u["oe_after"], 3))
    _console().print(t)
    _console().print(f"window {report.start}..{report.end}; run {report.run_id}")


def _print_drift(r):
    from rich.table import Table

    t = Table(title=f"monitor: reference {r['reference']['as_of'][:10]} vs current {r['current']['as_of'][:10]}")
    for col in ("group", "features tested", "flagged", "largest shift (PSI)"):
        t.add_column(col)
    for g in r["groups"]:
        flagged = ", ".join(g["flagged"][:3]) + (f" (+{len(g['flagged']) - 3})" if len(g["flagged"]) > 3 else "")
        worst = g["worst"]
        t.add_row(
            g["group"],
            str(g["tested"]),
            f"[red]{flagged}[/red]" if flagged else "none",
            f"{worst['feature']} ({number(worst['psi'])})",
        )
    _console().print(t)


def _print_performance(perf):
    from rich.table import Table

    t = Table(title="performance over time (95% intervals)")
    for col in ("label", "period", "n", "AUROC", "O/E", "slope"):
        t.add_column(col)
    for row in perf["rows"]:
        if row["suppressed"]:
            t.add_row(row["label"], row["period"], "suppressed", "-", "-", "-")
            continue
        t.add_row(
            row["label"],
            row["period"],
            str(row["n"]),
            f"{number(row['auroc'])} [{number(row['auroc_lo'])}, {number(row['auroc_hi'])}]",
            f"{number(row['observed_expected'], 2)} [{number(row['oe_lo'], 2)}, {number(row['oe_hi'], 2)}]",
            f"{number(row['calibration_slope'], 2)} [{number(row['slope_lo'], 2)}, {number(row['slope_hi'], 2)}]",
        )
    _console().print(t)
    for rec in perf["recommendations"]:
        if rec["action"] != "none":
            _console().print(f"[yellow]{rec['label']}: {rec['action']}[/yellow] - {rec['why']}")


def _print_whatif_written(result, out, html_report):
    _print_whatif(result)
    _console().print(
        f"wrote {out / 'whatif.csv'} and {len(result.prediction.index)} risk-curve plot(s) to {out}"
        + (f"; report {out / 'report.html'}" if html_report else "")
    )


def _print_quickstart_result(res, n_subjects):
    """Model vs oracle, the what-if (beside the truth when the simulator gives it), failed gates, what next."""
    _print_quickstart(res.tables, tracking_uri=res.tracking_uri)
    if res.whatif.true_risk is not None:
        _print_whatif_vs_truth(res.whatif)
    else:
        _print_whatif(res.whatif.result)
    if not res.audit.passed:
        _print_gates(res.audit.report, failed_only=True)
    _print_quickstart_end(res, n_subjects)
