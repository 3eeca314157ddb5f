"""``twinml monitor``: compare the panel a model is scoring with the one it was validated on."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_directory, refuse_existing
from .._validation import ConfigError
from ._compare import feature_tables, score_tables, unseen_codes
from ._policy import MonitorPolicy
from ._profile import PanelProfile, profile_meds

__all__ = ["run_monitor", "compare_panels", "MonitorResult", "MONITOR_FILES", "Panel"]

MONITOR_FILES = ("report.html", "monitor.json")
RISK = "predicted risk"


@dataclass
class MonitorResult:
    passed: bool
    out_dir: Path | None
    report: dict
    mlflow_run_id: str | None


@dataclass
class Panel:
    """One side of the comparison: a MEDS dataset, a scores file, or both (paths as given)."""

    events: Path | None = None
    scores: Path | None = None
    as_of: str | None = None

    @classmethod
    def from_paths(cls, paths, *, side: str, as_of=None) -> Panel:
        """Sort ``paths`` into a MEDS dataset directory and a twinml scores file (at most one of each)."""
        from ..scoring import read_score_metadata

        panel = cls(as_of=None if as_of is None else str(pd.Timestamp(as_of)))
        for p in [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]:
            kind = "events" if p.is_dir() else "scores" if p.suffix == ".parquet" and p.is_file() else None
            if kind is None:
                raise ConfigError(f"monitor: --{side} {p}: neither a MEDS dataset directory nor a scores .parquet file")
            if getattr(panel, kind) is not None:
                raise ConfigError(f"monitor: --{side} was given two {kind} inputs ({getattr(panel, kind)} and {p})")
            if kind == "scores":
                facts = read_score_metadata(p)
                if panel.as_of is not None and pd.Timestamp(panel.as_of) != pd.Timestamp(facts["as_of"]):
                    raise ConfigError(f"monitor: {p} was scored as of {facts['as_of']}, not {panel.as_of}")
                panel.as_of = facts["as_of"]
            setattr(panel, kind, p)
        if panel.events is None and panel.scores is None:
            raise ConfigError(f"monitor: --{side} needs a MEDS dataset directory or a scores file")
        return panel


def _risk_columns(path: Path) -> tuple[dict[tuple[str, str], np.ndarray], dict]:
    from ..scoring import SCORED, read_score_metadata

    scores = pd.read_parquet(path)
    facts = read_score_metadata(path)
    scored = scores[scores["status"] == SCORED]
    skip = {"subject_id", "status", "model_version"}
    return {(RISK, c): scored[c].to_numpy(np.float64) for c in scores.columns if c not in skip}, facts


def _profile(panel: Panel, policy: MonitorPolicy, say) -> tuple[PanelProfile, dict]:
    facts: dict = {
        "events": str(panel.events) if panel.events else None,
        "scores": str(panel.scores) if panel.scores else None,
    }
    if panel.events is not None:
        profile = profile_meds(panel.events, panel.as_of, lookback_days=policy.lookback_days, progress=say)
    else:
        profile = PanelProfile(pd.Timestamp(panel.as_of), policy.lookback_days, 0)
    if panel.scores is not None:
        risks, score_facts = _risk_columns(panel.scores)
        profile.numeric.update(risks)
        facts |= {"model_version": score_facts.get("model_version"), "scored": score_facts.get("scored")}
    subjects = profile.n_subjects if panel.events is not None else facts.get("scored")  # a scores file alone
    facts |= {"as_of": str(profile.as_of), "subjects": subjects, "lookback_days": policy.lookback_days}
    return profile, facts


def compare_panels(
    reference: PanelProfile, current: PanelProfile, policy: MonitorPolicy, *, inputs=True, model_vocabulary=None
) -> dict:
    """The comparison of two profiles: every tested feature, each group's verdict and the unseen codes."""
    tables = feature_tables(reference, current, min_subjects=policy.min_subjects)
    if not inputs:
        tables = [t for t in tables if t.group == RISK]
    features = score_tables(
        tables, alpha=policy.alpha, min_psi=policy.min_psi, permutations=policy.permutations, seed=policy.seed
    )
    groups = []
    for group in dict.fromkeys(f["group"] for f in features):
        rows = [f for f in features if f["group"] == group]
        worst = max(rows, key=lambda f: (f["flagged"], f["psi"]))
        flagged = [f["feature"] for f in rows if f["flagged"]]
        groups.append(
            {
                "group": group,
                "tested": len(rows),
                "flagged": flagged,
                "drifted": bool(flagged),
                "worst": {k: worst[k] for k in ("feature", "psi", "p_adjusted")},
            }
        )
    unseen = unseen_codes(reference, current, model_vocabulary) if inputs else None
    return {"groups": groups, "features": features, "unseen_codes": unseen}


def _gates(report: dict, policy: MonitorPolicy) -> list[dict]:
    g = policy.gates
    gates = []
    for name, on, pick in (
        ("no input drift", g.input_drift, lambda r: r["group"] != RISK),
        ("no output drift", g.output_drift, lambda r: r["group"] == RISK),
    ):
        rows = [r for r in report.get("groups", []) if pick(r)]
        if on and rows:
            drifted = [r["group"] for r in rows if r["drifted"]]
            value = ", ".join(drifted) or "none"
            gates.append({"name": name, "value": value, "rule": "no flagged feature", "passed": not drifted})
    unseen = report.get("unseen_codes")
    if g.max_unseen_code_rate is not None and unseen is not None:
        rate = unseen["rate"]
        gates.append(
            {
                "name": "unseen codes",
                "value": rate,
                "rule": f"<= {g.max_unseen_code_rate}",
                "passed": rate <= g.max_unseen_code_rate,
            }
        )
    if report.get("performance"):
        gates += _performance_gates(report["performance"], g)
    return gates


def _performance_gates(performance: dict, g) -> list[dict]:
    """Each label's latest reported period: O/E and AUROC against the first period."""
    gates = []
    for rec in performance["recommendations"]:
        if rec["action"] == "none" and "period" not in rec:
            continue
        last = next(r for r in reversed(performance["rows"]) if r["label"] == rec["label"] and not r["suppressed"])
        if g.min_observed_expected is not None or g.max_observed_expected is not None:
            lo, hi = g.min_observed_expected or 0.0, g.max_observed_expected or np.inf
            ok = not (last["oe_lo"] > hi or last["oe_hi"] < lo)
            gates.append(
                {
                    "name": f"O/E {rec['label']} ({last['period']})",
                    "value": last["observed_expected"],
                    "rule": f"interval meets [{lo}, {hi}]",
                    "passed": ok,
                }
            )
        if g.max_auroc_drop is not None:
            gates.append(
                {
                    "name": f"AUROC {rec['label']} ({last['period']})",
                    "value": last["auroc"],
                    "rule": f"not credibly more than {g.max_auroc_drop} below the first period's",
                    "passed": rec["action"] != "retrain",
                }
            )
    return gates


def suppress_counts(counts: list[int], min_cell: int) -> list[int | None]:
    """A row of counts whose total is published: cells of 1 to ``min_cell - 1`` become None, and when
    only one cell would be hidden, the next smallest non-zero cell too (else the total gives it away)."""
    small = [0 < c < min_cell for c in counts]
    if sum(small) == 1:
        rest = [(c, i) for i, c in enumerate(counts) if c > 0 and not small[i]]
        if rest:
            small[min(rest)[1]] = True
    return [None if hide else c for c, hide in zip(counts, small)]


def _suppress(comparison: dict, min_cell: int) -> dict:
    """Small counts (bins, categories, codes' subjects) hidden as :func:`suppress_counts`; verdicts kept."""
    out = json.loads(json.dumps(comparison))
    for f in out["features"]:
        for key in ("reference_counts", "current_counts"):
            f[key] = suppress_counts(f[key], min_cell)
    unseen = out["unseen_codes"]
    if unseen is not None:
        for c in unseen["codes"]:
            if c["subjects"] < min_cell:
                c["events"] = c["subjects"] = None
        if any(c["subjects"] is None for c in unseen["codes"]):
            unseen["events"] = None  # the total would give a hidden code's count away; the rate stays
    return out


def run_monitor(
    reference=None,
    current=None,
    *,
    out=None,
    model_uri: str | None = None,
    policy: MonitorPolicy | None = None,
    reference_as_of=None,
    current_as_of=None,
    history=(),
    outcomes=None,
    task=None,
    tracking_uri: str | None = None,
    experiment: str = "twinml",
    overwrite: bool = False,
    progress=None,
) -> MonitorResult:
    """Watch a model in production; write ``out`` and log it to MLflow.

    **Drift**: compare the ``current`` panel with the ``reference`` one. Each side is a MEDS dataset
    directory (input drift: demographics, activity, codes, labs, unseen codes), a twinml scores file
    (output drift: each predicted-risk column), or a list of both. A MEDS side is profiled at its
    ``*_as_of`` time, else its scores file's, else its last event.

    **Performance over time**: ``history`` (earlier scores files) against ``outcomes`` (a MEDS dataset
    holding what has happened since), labelled by ``task`` (default: the model's training task), by
    calendar period, with a recommendation per label (recalibrate / retrain / nothing).

    ``out`` receives ``report.html`` and ``monitor.json`` at once. With ``model_uri`` the report is
    logged as an MLflow run of ``experiment`` linked to the model, and a registered version gets the
    tags ``twinml.monitor.passed`` and ``twinml.monitor.run_id``.
    """
    policy = policy or MonitorPolicy()
    say = progress or (lambda msg: None)
    out = Path(out) if out is not None else None
    if out is not None:
        refuse_existing(out, overwrite=overwrite)
    if (reference is None) != (current is None) or (reference is None and not history):
        raise ConfigError("monitor: give --reference and --current (drift), or --history with --outcomes, or both")
    if bool(history) != (outcomes is not None):
        raise ConfigError("monitor: --history (earlier scores files) and --outcomes (a MEDS dataset) go together")
    t0 = time.perf_counter()
    report: dict = {"model_uri": model_uri, "policy": policy.model_dump(mode="json")}
    if reference is not None:
        vocabulary = _model_vocabulary(model_uri, tracking_uri) if model_uri is not None else None
        report |= _drift_section(reference, current, reference_as_of, current_as_of, policy, say, vocabulary)
    report["performance"] = (
        _performance_section(history, outcomes, task, model_uri, tracking_uri, policy, say) if history else None
    )
    report["gates"] = _gates(report, policy)
    report["passed"] = all(g["passed"] for g in report["gates"])
    report["seconds"] = round(time.perf_counter() - t0, 2)
    say(_summary(report))
    if out is not None:
        _write(out, report, overwrite=overwrite)
    run_id = None
    if model_uri is not None:
        from .. import tracking

        run_id = tracking.log_monitor_run(
            report, out, model_uri=model_uri, experiment=experiment, tracking_uri=tracking_uri
        )
    return MonitorResult(report["passed"], out, report, run_id)


def _model_vocabulary(model_uri: str, tracking_uri) -> set[str] | None:
    """The codes the model reads (its featurizer's vocabulary, static traits included); None if it has none."""
    from .. import tracking

    featurizer = getattr(
        tracking.load_registered_model(model_uri, tracking_uri=tracking_uri).model, "featurizer_", None
    )
    if featurizer is None or not hasattr(featurizer, "vocabulary_"):
        return None
    return {str(c) for c in featurizer.vocabulary_} | {str(c) for c in getattr(featurizer, "static_vocabulary_", [])}


def _drift_section(reference, current, reference_as_of, current_as_of, policy, say, vocabulary=None) -> dict:
    ref_panel = Panel.from_paths(reference, side="reference", as_of=reference_as_of)
    cur_panel = Panel.from_paths(current, side="current", as_of=current_as_of)
    ref, ref_facts = _profile(ref_panel, policy, say)
    cur, cur_facts = _profile(cur_panel, policy, say)
    inputs = ref_panel.events is not None and cur_panel.events is not None
    comparison = compare_panels(ref, cur, policy, inputs=inputs, model_vocabulary=vocabulary)
    descriptions = _descriptions(ref_panel, cur_panel)
    for f in comparison["features"]:
        f["description"] = descriptions.get(f["feature"])
    return {"reference": ref_facts, "current": cur_facts, **_suppress(comparison, policy.min_cell)}


def _descriptions(*panels: Panel) -> dict[str, str]:
    """Code -> description from the MEDS datasets' ``metadata/codes.parquet`` (where they have one)."""
    from ..data import read_code_metadata

    out: dict[str, str] = {}
    for panel in panels:
        if panel.events is not None and (panel.events / "metadata" / "codes.parquet").exists():
            codes = read_code_metadata(panel.events)
            if "description" in codes:
                out |= {str(c): str(d) for c, d in zip(codes["code"], codes["description"]) if isinstance(d, str) and d}
    return out


def _performance_section(history, outcomes, task, model_uri, tracking_uri, policy, say) -> dict:
    from ..data import read_meds
    from ._performance import label_scores, performance_over_time, recommendations

    if task is None:
        if model_uri is None:
            raise ConfigError("monitor: performance over time needs the model's task: pass --model or --config")
        from .. import tracking
        from ..config import model_config

        tracking.set_tracking_uri(tracking_uri)
        task = model_config(model_uri, what="monitor")[1].task
    files = [Path(p) for p in ([history] if isinstance(history, str | Path) else history)]
    say(f"labelling {len(files)} earlier scores file(s) with the outcomes in {outcomes}")
    attrition: list[dict] = []
    long = label_scores(files, read_meds(outcomes), task, attrition=attrition)
    rows = performance_over_time(long, period=policy.period, n_boot=policy.n_bootstrap, min_cell=policy.min_cell)
    g = policy.gates
    recs = recommendations(
        rows,
        min_oe=g.min_observed_expected or 0.0,
        max_oe=g.max_observed_expected or np.inf,
        max_auroc_drop=g.max_auroc_drop if g.max_auroc_drop is not None else np.inf,
    )
    small = lambda v: isinstance(v, int) and 0 < v < policy.min_cell  # noqa: E731
    attrition = [{k: None if small(v) else v for k, v in a.items()} for a in attrition]
    return {"outcomes": str(outcomes), "attrition": attrition, "rows": rows, "recommendations": recs}


def _write(out: Path, report: dict, *, overwrite: bool) -> None:
    from ._report import render_html

    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "report.html").write_text(render_html(report), encoding="utf-8")
        (tmp / "monitor.json").write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")


def _summary(report: dict) -> str:
    parts = []
    if "groups" in report:
        drifted = [g["group"] for g in report["groups"] if g["drifted"]]
        parts.append(f"drift in {', '.join(drifted) or 'no group'}")
    if report["performance"]:
        recs = report["performance"]["recommendations"]
        todo = [f"{r['action']} {r['label']}" for r in recs if r["action"] != "none"]
        parts.append(f"recommended: {', '.join(todo)}" if todo else "performance holds")
    return f"monitor {'PASSED' if report['passed'] else 'FAILED'}: " + "; ".join(parts)
