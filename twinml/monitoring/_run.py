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
    facts |= {"as_of": str(profile.as_of), "subjects": profile.n_subjects, "lookback_days": policy.lookback_days}
    return profile, facts


def compare_panels(reference: PanelProfile, current: PanelProfile, policy: MonitorPolicy, *, inputs=True) -> dict:
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
    unseen = unseen_codes(reference, current) if inputs else None
    return {"groups": groups, "features": features, "unseen_codes": unseen}


def _gates(comparison: dict, policy: MonitorPolicy) -> list[dict]:
    g = policy.gates
    gates = []
    for name, on, pick in (
        ("no input drift", g.input_drift, lambda r: r["group"] != RISK),
        ("no output drift", g.output_drift, lambda r: r["group"] == RISK),
    ):
        rows = [r for r in comparison["groups"] if pick(r)]
        if on and rows:
            drifted = [r["group"] for r in rows if r["drifted"]]
            value = ", ".join(drifted) or "none"
            gates.append({"name": name, "value": value, "rule": "no flagged feature", "passed": not drifted})
    unseen = comparison["unseen_codes"]
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
    return gates


def _suppress(comparison: dict, min_cell: int) -> dict:
    """Counts under ``min_cell`` (bins, categories, codes' subjects) replaced by None; verdicts kept."""
    out = json.loads(json.dumps(comparison))
    for f in out["features"]:
        for key in ("reference_counts", "current_counts"):
            f[key] = [c if c >= min_cell or c == 0 else None for c in f[key]]
    if out["unseen_codes"] is not None:
        for c in out["unseen_codes"]["codes"]:
            if c["subjects"] < min_cell:
                c["events"] = c["subjects"] = None
    return out


def run_monitor(
    reference,
    current,
    *,
    out=None,
    model_uri: str | None = None,
    policy: MonitorPolicy | None = None,
    reference_as_of=None,
    current_as_of=None,
    tracking_uri: str | None = None,
    experiment: str = "twinml",
    overwrite: bool = False,
    progress=None,
) -> MonitorResult:
    """Compare the ``current`` panel with the ``reference`` one; write ``out`` and log it to MLflow.

    Each side is a MEDS dataset directory (input drift: demographics, activity, codes, labs, unseen
    codes), a twinml scores file (output drift: each predicted-risk column), or a list of both.
    A MEDS side is profiled at its ``*_as_of`` time, else its scores file's, else its last event.
    ``out`` receives ``report.html`` and ``monitor.json`` at once. With ``model_uri`` the report is
    logged as an MLflow run of ``experiment`` linked to the model, and a registered version gets the
    tags ``twinml.monitor.passed`` and ``twinml.monitor.run_id``.
    """
    from ._report import render_html

    policy = policy or MonitorPolicy()
    say = progress or (lambda msg: None)
    out = Path(out) if out is not None else None
    if out is not None:
        refuse_existing(out, overwrite=overwrite)
    ref_panel = Panel.from_paths(reference, side="reference", as_of=reference_as_of)
    cur_panel = Panel.from_paths(current, side="current", as_of=current_as_of)
    t0 = time.perf_counter()
    ref, ref_facts = _profile(ref_panel, policy, say)
    cur, cur_facts = _profile(cur_panel, policy, say)
    inputs = ref_panel.events is not None and cur_panel.events is not None
    comparison = compare_panels(ref, cur, policy, inputs=inputs)
    gates = _gates(comparison, policy)
    report = {
        "model_uri": model_uri,
        "reference": ref_facts,
        "current": cur_facts,
        "policy": policy.model_dump(mode="json"),
        **_suppress(comparison, policy.min_cell),
        "gates": gates,
        "passed": all(g["passed"] for g in gates),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    say(_summary(report))
    run_id = None
    if out is not None:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            (tmp / "report.html").write_text(render_html(report), encoding="utf-8")
            (tmp / "monitor.json").write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")
    if model_uri is not None:
        from .. import tracking

        run_id = tracking.log_monitor_run(
            report, out, model_uri=model_uri, experiment=experiment, tracking_uri=tracking_uri
        )
    return MonitorResult(report["passed"], out, report, run_id)


def _summary(report: dict) -> str:
    drifted = [g["group"] for g in report["groups"] if g["drifted"]]
    return f"monitor {'PASSED' if report['passed'] else 'FAILED'}: drift in {', '.join(drifted) or 'no group'}"
