"""The newcomer's first run: simulate, train the baselines and the GRU, compare with the oracle, audit,
and ask one patient's twin "what if?".

:func:`run_quickstart` does the work and returns what it found; ``twinml quickstart`` prints it. Its
config, demo audit policy and treatment plans ship in the package (``twinml/resources``), so it runs
from any directory and after a plain ``pip install``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml

if TYPE_CHECKING:
    from .audit import AuditResult
    from .whatif import WhatIfResult

__all__ = [
    "run_quickstart",
    "QuickstartResult",
    "WhatIfExample",
    "QUICKSTART_CONFIG",
    "DEMO_POLICY",
    "QUICKSTART_PLANS",
    "MODELS",
]

_RESOURCES = Path(str(files("twinml") / "resources"))
QUICKSTART_CONFIG = _RESOURCES / "quickstart.yaml"
DEMO_POLICY = _RESOURCES / "quickstart_policy.yaml"
QUICKSTART_PLANS = _RESOURCES / "plans.yaml"

# name in the table -> model section; small and fast on purpose (the record GRU reads whole records)
MODELS: dict[str, dict] = {
    "logistic": {"kind": "logistic", "params": {}, "calibration": None},
    "lightgbm": {"kind": "lightgbm", "params": {}, "calibration": None},
    "GRU": {
        "kind": "record",
        "params": {"d_model": 32, "max_epochs": 10, "patience": 2, "trajectory_codes": None},
        "calibration": "platt",
    },
}
WHATIF_MODEL = {
    "kind": "whatif",
    "params": {"encoder": {"d_model": 32, "max_epochs": 6, "max_len": 128}, "n_boot": 10, "n_encoders": 1},
    "calibration": None,
}
AUDITED = "lightgbm"
N_CANDIDATES = 300  # held-out patients searched for the what-if example
SHOWN_HORIZON = 365  # days; the what-if example's printed horizon


@dataclass
class WhatIfExample:
    """One held-out patient's what-if, and the twin checked against the simulator's truth."""

    result: WhatIfResult  # for the one patient
    true_risk: np.ndarray | None  # its true risks, (plan, outcome, horizon) as ``result``'s; None without truth
    check: dict | None  # over every candidate: coverage of the band and PEHE at SHOWN_HORIZON (see _check)
    out: Path  # the what-if report's directory


@dataclass
class QuickstartResult:
    tables: dict[str, tuple[pd.DataFrame, str]]  # model -> (held-out metrics, MLflow run id)
    tracking_uri: str
    whatif_run_id: str
    audit: AuditResult  # of the lightgbm model
    policy: Path
    gates_off: list[str]  # gates the demo policy switches off (they need a bigger cohort)
    whatif: WhatIfExample


def quickstart_config(workdir: Path, n_subjects: int, name: str, model: dict, *, config: Path | None = None) -> dict:
    """The experiment config of one quickstart model: ``config`` (default the packaged one) with its data
    under ``workdir``, ``n_subjects`` simulated and ``model`` as the model section."""
    config = Path(config) if config is not None else QUICKSTART_CONFIG
    if not config.exists():
        raise FileNotFoundError(f"{config}: quickstart config not found (pass --config).")
    base = yaml.safe_load(config.read_text())
    base["name"] = f"quickstart-{name.lower()}"
    base["data"]["path"] = str(Path(workdir) / "meds")
    base["data"]["simulator"]["n_subjects"] = n_subjects
    base["model"] = copy.deepcopy(model)
    return base


def run_quickstart(
    *,
    workdir: Path,
    n_subjects: int,
    tracking_uri: str | None = None,
    config: Path | None = None,
    policy: Path | None = None,
    progress=print,
) -> QuickstartResult:
    """Simulate (or reuse) a cohort under ``workdir``, train :data:`MODELS` and a what-if model, audit the
    lightgbm model with the demo policy (or ``policy``) and run a what-if for one held-out patient."""
    from .audit import load_policy, run_audit
    from .config import load_config
    from .data import read_meds
    from .pipeline import load_truth, train

    workdir = Path(workdir)
    # every config and the policy checked before any work
    configs = {
        name: load_config(quickstart_config(workdir, n_subjects, name, m, config=config)) for name, m in MODELS.items()
    }
    raw = quickstart_config(workdir, n_subjects, "whatif", WHATIF_MODEL, config=config)
    raw["task"]["treatment"] = str(QUICKSTART_PLANS)
    twin_config = load_config(raw)
    policy_path = Path(policy) if policy is not None else DEMO_POLICY
    loaded_policy = load_policy(policy_path)

    tables, results = {}, {}
    for name, cfg in configs.items():
        progress(f"quickstart: training {name}")
        res = train(cfg, tracking_uri=tracking_uri, progress=progress)
        tables[name], results[name] = (res.metrics["held_out"], res.run_id), res
    progress("quickstart: training the what-if model (the GRU with a head per treatment plan)")
    twin = train(twin_config, tracking_uri=tracking_uri, progress=progress)

    gates_off = [k for k, v in loaded_policy.gates.model_dump().items() if v is None and k != "subgroup_reference"]
    audit = run_audit(
        results[AUDITED].model_uri,
        cfg.data.path,
        policy=loaded_policy,
        out=workdir / "audit",
        overwrite=True,
        tracking_uri=tracking_uri,
        progress=progress,
    )

    example = _whatif_example(twin, read_meds(cfg.data.path), load_truth(cfg.data.path), workdir / "whatif")
    subject = example.result.prediction.index["subject_id"].iloc[0]
    progress(f"what-if for subject {subject}: {example.out / 'report.html'}")
    return QuickstartResult(tables, twin.tracking_uri, twin.run_id, audit, policy_path, gates_off, example)


def _whatif_example(twin, events: pd.DataFrame, truth: pd.DataFrame | None, out: Path) -> WhatIfExample:
    from .whatif import what_if, write_whatif

    index = _whatif_candidates(twin.cohort.labels)
    ev = events[events["subject_id"].isin(index["subject_id"])].reset_index(drop=True)
    everyone = what_if(twin.model, ev, index)
    row = _most_telling(everyone)
    one = index.iloc[[row]].reset_index(drop=True)
    result = what_if(twin.model, ev[ev["subject_id"] == one["subject_id"].iloc[0]].reset_index(drop=True), one)
    out = write_whatif(result, out, html_report=True, overwrite=True)
    if truth is None:
        return WhatIfExample(result, None, None, out)
    true_all = _true_risks(truth, index, everyone.prediction)
    return WhatIfExample(result, true_all[row], _check(everyone.prediction, true_all), out)


def _true_risks(truth: pd.DataFrame, index: pd.DataFrame, p) -> np.ndarray:
    """The simulator's true risk of each row of ``index`` under each plan: (row, plan, outcome, horizon)."""
    from .whatif import true_plan_risks

    per_label = [[true_plan_risks(truth, index, p.plans, f"{o}_{h}d") for h in p.horizons] for o in p.outcomes]
    return np.stack([np.stack(by_h, axis=-1) for by_h in per_label], axis=2)


def _check(p, true_risk: np.ndarray) -> dict:
    """Over the in-support (row, plan, outcome) triples with a known truth at :data:`SHOWN_HORIZON`: the
    share whose true effect lies in the twin's band, the PEHE and the mean absolute true effect (pp)."""
    i = p.horizons.index(SHOWN_HORIZON)
    true_effect = true_risk[:, 1:, :, i] - true_risk[:, :1, :, i]
    est, lo, hi = (a[:, 1:, :, i] for a in (p.effect, p.effect_lo, p.effect_hi))
    ok = p.in_support[:, 1:, None] & np.isfinite(true_effect) & np.isfinite(est)
    t, e = true_effect[ok], est[ok]
    if not ok.any():
        return {"rows": len(p.index), "pairs": 0}
    return {
        "rows": len(p.index),
        "pairs": int(ok.sum()),
        "coverage": float(np.mean((lo[ok] <= t) & (t <= hi[ok]))),
        "pehe_pp": float(100 * np.sqrt(np.mean((e - t) ** 2))),
        "mean_abs_true_effect_pp": float(100 * np.mean(np.abs(t))),
    }


def _whatif_candidates(labels: pd.DataFrame) -> pd.DataFrame:
    """Each held-out subject's last prediction time at risk of every outcome and followed for
    :data:`SHOWN_HORIZON` days (every such label known), for the first :data:`N_CANDIDATES` subjects."""
    shown = [c for c in labels.columns if str(c).endswith(f"_{SHOWN_HORIZON}d")]
    held = labels[(labels["split"] == "held_out") & labels[shown].notna().all(axis=1)]
    last = held.sort_values(["subject_id", "prediction_time"]).groupby("subject_id", sort=True).tail(1)
    return last[["subject_id", "prediction_time"]].head(N_CANDIDATES).reset_index(drop=True)


def _most_telling(result) -> int:
    """The row with the most plans in support, then the highest risk under the reference plan (a patient
    at risk, for whom the plans matter), at :data:`SHOWN_HORIZON`."""
    p = result.prediction
    n_support = p.in_support.sum(axis=1)
    risk = np.nan_to_num(p.risk[:, 0, :, p.horizons.index(SHOWN_HORIZON)], nan=0.0).max(axis=1)
    return int(np.lexsort((-risk, -n_support))[0])
