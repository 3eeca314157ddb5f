"""Explaining a GRU with shap: the plain call against twinml's path, with the faithfulness check for each.

    python benchmarks/explain.py [N_SUBJECTS] [--rows 1000] [--plain-rows 30] [--epochs 6]

Trains a GRU on a cached simulated cohort, then explains ``--rows`` held-out prediction rows of
1-year T2D with twinml's path (each row over its own events, 16 expected-gradient samples in one
batch) and ``--plain-rows`` rows with shap's defaults (200 samples in batches of 50, padded to
``max_len``). Prints seconds per row, the top codes, and the faithfulness check of both; the
simulator's T2D drivers are HbA1c (LOINC/4548-4), glucose (LOINC/2345-7) and BMI (LOINC/39156-5).
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml
from _common import peak_rss_gb, simulated

from twinml.cohort import TaskDefinition, build_labels
from twinml.data import read_meds, read_subject_splits
from twinml.evaluation import code_importance, explain_model, faithfulness
from twinml.models import SequenceRiskModel

DRIVERS = {"LOINC/4548-4": "HbA1c", "LOINC/2345-7": "glucose", "LOINC/39156-5": "BMI"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("n_subjects", nargs="?", type=int, default=20_000)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--plain-rows", type=int, default=30)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    root = simulated(a.n_subjects)
    events = read_meds(root)
    task = TaskDefinition.model_validate(yaml.safe_load(open("configs/quickstart.yaml"))["task"])
    labels = build_labels(events, task=task, subject_splits=read_subject_splits(root)).labels
    split = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", "held_out")}
    t0 = time.perf_counter()
    model = SequenceRiskModel(kind="gru", calibration="platt", max_epochs=a.epochs, n_threads=a.threads).fit(
        events, split["train"], tuning_labels=split["tuning"]
    )
    print(f"GRU trained in {time.perf_counter() - t0:.0f}s ({a.n_subjects:,} subjects, best epoch {model.best_epoch_})")
    held = split["held_out"].sample(frac=1.0, random_state=0)[["subject_id", "prediction_time"]]
    print(f"{'path':<44} {'rows':>5} {'s/row':>7} {'total':>8} {'faith ratio':>11} {'top-k wins':>10}  top codes")
    for name, rows, kw in (
        ("plain shap (nsamples=200, padded to 256)", a.plain_rows, dict(n_samples=200, trim_padding=False)),
        (f"twinml (nsamples={a.samples}, own length)", a.plain_rows, dict(n_samples=a.samples)),
        (f"twinml (nsamples={a.samples}, own length)", a.rows, dict(n_samples=a.samples)),
    ):
        index = held.head(rows).reset_index(drop=True)
        attr = explain_model(model, events, index, label="t2d_365d", **kw)
        f = faithfulness(model, events, index, attr, k=5)
        top = code_importance(attr, top=5)["code"].tolist()
        print(
            f"{name:<44} {rows:>5} {attr.seconds / rows:>7.3f} {attr.seconds:>7.1f}s {f['ratio']:>11.2f} "
            f"{f['share_rows_top_k_larger']:>10.2f}  {', '.join(DRIVERS.get(c, c) for c in top)}"
        )
    print(f"peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
