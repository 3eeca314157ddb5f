"""Random against temporal validation: how much of a model's held-out AUROC survives the next years.

    .venv/bin/python benchmarks/temporal.py sim [--n-subjects 20000]
    .venv/bin/python benchmarks/temporal.py synthea

Per population, twinml's default tabular model (LightGBM, sigmoid-calibrated on the tuning split) is
fitted twice on the same subject split (the dataset's ``metadata/subject_splits.parquet``):

1. **random**: ``task.split.strategy: meds`` — train and tuning subjects in every year, tested on the
   held-out subjects in every year;
2. **temporal**: ``task.split.strategy: temporal`` — train and tuning subjects' rows before
   ``train_before``, fitted on the events before it only (``twinml.cohort.events_for_fit``), tested on the
   held-out subjects' rows from ``test_from`` on (``held_out``) and, from the same fit, before
   ``train_before`` (``held_out_same_period``).

It prints per label: AUROC with the 95 % subject-bootstrap interval and O/E (observed events over the
sum of predicted risks: calibration in the large) for each of the three test sets. Nothing is chosen
on these figures; they are reported.

- ``sim``: the simulator (``--n-subjects``, seed 0; 2010-2019), 1-year onset of T2D, MI, stroke and
  CKD at yearly prediction times from 2012; temporal: train before 2016-01-01, test from 2017-01-01.
  The simulator has no calendar drift, so the two should agree to their noise.
- ``synthea``: the Synthea dev population as ``benchmarks/realdata.py`` ingests it and writes its nine
  1-year label files (run that once first); temporal: train before 2015-01-01, test from 2016-01-01.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, simulated  # noqa: E402

SIM_OUTCOMES = {
    "t2d": {"codes": ["SNOMED/44054006"]},
    "mi": {"codes": ["SNOMED/22298006"]},
    "stroke": {"codes": ["SNOMED/230690007"]},
    "ckd": {"codes": ["SNOMED/433144002"]},
}


def population(name: str, n_subjects: int):
    """(MEDS directory, task dict, train_before, test_from) of a population."""
    if name == "sim":
        task = {
            "name": "sim-1y",
            "outcomes": SIM_OUTCOMES,
            "horizons_days": [365],
            "prediction_times": {"strategy": "yearly", "start": "2012-01-01", "every_days": 365},
        }
        return simulated(n_subjects, 0), task, "2016-01-01", "2017-01-01"
    root, labels = CACHE / "synthea-dev-meds", CACHE / "synthea-dev-labels"
    files = sorted(labels.glob("*.parquet")) if labels.is_dir() else []
    if not (root / "data").is_dir() or not files:
        sys.exit(f"{root} or {labels} is missing: run benchmarks/realdata.py once first (it ingests and writes them)")
    task = {"name": "synthea-1y", "labels": {f.stem: str(f) for f in files}, "horizons_days": [365]}
    return root, task, "2015-01-01", "2016-01-01"


def fit_and_score(events, splits, task_dict, test_splits, progress):
    """Fit the default tabular model on a task's train split; metrics on each test split."""
    from twinml.cohort import build_labels, events_for_fit, load_task
    from twinml.evaluation import evaluate_risks
    from twinml.models import TabularRiskModel

    task = load_task(task_dict)
    labels = build_labels(events, task=task, subject_splits=splits).labels
    part = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", *test_splits)}
    t0 = time.perf_counter()
    model = TabularRiskModel(kind="lightgbm", calibration="sigmoid", random_state=0)
    model.fit(events_for_fit(events, task), part["train"], tuning_labels=part["tuning"])
    progress(f"{task.split.strategy}: fitted on {len(part['train']):,} rows in {time.perf_counter() - t0:.0f}s")
    out = {}
    for s in test_splits:
        risks = model.predict_risk(events, part[s])
        table = evaluate_risks(part[s], risks, columns=model.label_columns_, n_boot=200, seed=0).set_index("label")
        known = {c: part[s][c].notna().to_numpy() for c in model.label_columns_}
        table["o_e"] = [
            part[s][c][known[c]].astype(bool).sum() / max(risks[c].to_numpy()[known[c]].sum(), 1e-12)
            for c in model.label_columns_
        ]
        out[s] = table
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("population", choices=["sim", "synthea"])
    p.add_argument("--n-subjects", type=int, default=20_000, help="sim only")
    args = p.parse_args()

    from twinml.data import read_meds, read_subject_splits

    root, task, train_before, test_from = population(args.population, args.n_subjects)
    events, splits = read_meds(root), read_subject_splits(root)
    print(f"{args.population}: {events['subject_id'].nunique():,} subjects, {len(events):,} events ({root})")
    random = fit_and_score(events, splits, task, ["held_out"], print)["held_out"]
    temporal_task = {**task, "split": {"strategy": "temporal", "train_before": train_before, "test_from": test_from}}
    temporal = fit_and_score(events, splits, temporal_task, ["held_out_same_period", "held_out"], print)
    sets = {
        "random (all years)": random,
        f"same period (before {train_before})": temporal["held_out_same_period"],
        f"temporal (from {test_from})": temporal["held_out"],
    }

    def auroc(t, c):
        return f"{t.loc[c, 'auroc']:.3f} [{t.loc[c, 'auroc_lo']:.3f}, {t.loc[c, 'auroc_hi']:.3f}]"

    print(f"\nheld-out subjects; AUROC [95 % subject bootstrap] / O/E; rows (positives); train before {train_before}")
    print("| label | " + " | ".join(sets) + " |")
    print("|---" * (len(sets) + 1) + "|")
    for c in random.index:
        cells = [
            f"{auroc(t, c)} / {t.loc[c, 'o_e']:.2f}; {int(t.loc[c, 'n']):,} ({int(t.loc[c, 'positives'])})"
            for t in sets.values()
        ]
        print(f"| {c} | " + " | ".join(cells) + " |")
    groups = {"mean AUROC": list(random.index)}
    if args.population == "synthea":  # the five main tasks, as benchmarks/realdata.py reports them
        groups["mean of the five main tasks"] = [f"{t}_365d" for t in ("t2d", "htn", "ckd", "mi", "ihd")]
    for name, cols in groups.items():
        print(f"| {name} | " + " | ".join(f"{t.loc[cols, 'auroc'].mean():.3f}" for t in sets.values()) + " |")


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
