"""Membership inference on the 20,000-subject simulated cohort: does a model leak who trained it?

    .venv/bin/python benchmarks/privacy.py [--rmia 4] [--models overfit,lightgbm,logistic,gru] [--params JSON]
        [--seed S]

The audit's membership inference (``twinml.evaluation.membership_audit``, see ``_attack_table``) on each
model: fitted on the train split (LightGBM early-stopped on the tuning split, every model with its
defaults), then the loss-threshold attack (each subject scored by minus its mean log loss over its
yearly prediction times and the 1- and 2-year labels of T2D, MI, stroke and CKD) and, with ``--rmia K``,
the reference-model (RMIA-style) attack with K reference models. Prints per model and attack the AUROC
with a 200-draw bootstrap interval over subjects, TPR at FPR 1 % and 0.1 %, and the highest upper
bound over the labels taken alone. ``overfit`` is the deliberately memorising control: LightGBM on 300
training subjects, no early stopping, leaves of one row, 2,000 trees (its members are those 300).
Wanted (issue 18): the default models' AUROC <= 0.55 with the upper bound <= 0.6, the control's >= 0.7.
``--seed`` draws another simulated cohort of the same size (0 is the one the README reports; choose
settings on another).

    .venv/bin/python benchmarks/privacy.py --dp 1,3,8 [--dp-kind gru|transformer] [--dp-epochs 6] [--dp-lr 0.005]

The cost of differential privacy: the GRU or Transformer (platt-calibrated on the tuning split) as it ships, and with
subject-level DP-SGD at each ε (δ 1e-5, clip 1.0, 256 subjects a step, ``--dp-epochs`` epochs at
learning rate ``--dp-lr``, seeded; a DP fit takes ~60 steps an epoch where the plain one takes ~700,
hence the larger rate, chosen before any run), each evaluated on the held-out split: ε spent by opacus'
accountant, AUROC of every label (mean, and T2D and MI at 1 year with intervals), mean ECE, the
membership attack's AUROC, fit time.
Run alone on the machine: the fit times are compared with each other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import simulated  # noqa: E402

OVERFIT = {
    "n_estimators": 2000,
    "early_stopping_rounds": 2000,
    "num_leaves": 256,
    "min_child_samples": 1,
    "min_sum_hessian_in_leaf": 1e-9,
    "learning_rate": 0.5,
    "lambda_l2": 0.0,
}
OUTCOMES = {
    "t2d": {"codes": ["SNOMED/44054006"]},
    "mi": {"codes": ["SNOMED/22298006"]},
    "stroke": {"codes": ["SNOMED/230690007"]},
    "ckd": {"codes": ["SNOMED/433144002"]},
}


def _subjects(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    ids = rows["subject_id"].unique()
    chosen = np.random.default_rng(seed).choice(ids, min(n, ids.size), replace=False)
    return rows[rows["subject_id"].isin(chosen)].reset_index(drop=True)


def _model(kind: str, params=None):
    """The model as it ships, with ``params``: the GRU's constructor arguments; for a tabular model its
    constructor's (e.g. ``min_code_count``), the rest its estimator's (``model_params``)."""
    from twinml.models import SequenceRiskModel, TabularRiskModel

    if kind == "gru":
        return SequenceRiskModel(kind="gru", **(params or {}))
    if kind == "overfit":
        return TabularRiskModel(kind="lightgbm", model_params=OVERFIT, min_code_count=1, subject_shares=1)
    own = {k: v for k, v in (params or {}).items() if k in TabularRiskModel().get_params()}
    rest = {k: v for k, v in (params or {}).items() if k not in own}
    return TabularRiskModel(kind=kind, model_params=rest or None, **own)


def _dp_table(events, split, epsilons, epochs, lr, kind="gru") -> pd.DataFrame:
    from twinml.evaluation import evaluate_risks, membership_attack, subject_losses
    from twinml.models import SequenceRiskModel

    rows, held = [], split["held_out"]
    members = _subjects(split["train"], held["subject_id"].nunique())
    for eps in [None, *epsilons]:
        privacy = None if eps is None else {"epsilon": eps, "reproducible": True}
        # the plain model as it ships (15 epochs, patience 4, lr 1e-3); neither fits a trajectory head
        dp = {} if eps is None else {"max_epochs": epochs, "lr": lr}
        model = SequenceRiskModel(kind=kind, calibration="platt", trajectory_codes=None, privacy=privacy, **dp)
        t = time.perf_counter()
        model.fit(events, split["train"], tuning_labels=split["tuning"], progress=print)
        fit_s = time.perf_counter() - t
        m = evaluate_risks(held, model.predict_risk(events, held), columns=model.label_columns_).set_index("label")
        losses = [subject_losses(r, model.predict_risk(events, r), model.label_columns_) for r in (members, held)]
        attack = membership_attack(*losses, n_boot=200)
        spent = model.privacy_ or {}
        rows.append(
            {
                "epsilon": "none" if eps is None else eps,
                "epsilon_spent": spent.get("epsilon", float("nan")),
                "noise_multiplier": spent.get("noise_multiplier", 0.0),
                "mean_auroc": m["auroc"].mean(),
                **{
                    f"{c}_auroc": f"{m.loc[c, 'auroc']:.3f} [{m.loc[c, 'auroc_lo']:.3f}, {m.loc[c, 'auroc_hi']:.3f}]"
                    for c in ("t2d_365d", "mi_365d")
                },
                "mean_ece": m["ece"].mean(),
                "membership_auc": attack["auc"],
                "best_epoch": model.best_epoch_,
                "fit_s": round(fit_s, 1),
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def _attack_table(events, split, kinds, k, params) -> pd.DataFrame:
    """The audit's membership inference (``twinml.evaluation.membership_audit``) on each model: fitted on
    the train split (early-stopped and calibrated on the tuning split), attacked on up to 2,000 held-out
    subjects (900 with reference models, whose population takes the other 900) against as many training
    subjects; ``k`` reference models, each on an equal share of the other training subjects. The overfit
    control trains on 300 subjects, is attacked on those against 300 held-out ones, and its reference models
    take 300 other training subjects each, fitted as it is. One row per model and attack, all labels
    pooled, with the highest upper bound over the labels taken alone (what the audit's gate also reads)."""
    from twinml.evaluation import evaluate_risks, membership_audit

    rows = []
    for kind in kinds:
        overfit = kind == "overfit"
        train = _subjects(split["train"], 300) if overfit else split["train"]
        tuning = None if overfit else split["tuning"]
        t = time.perf_counter()
        model = _model(kind, params.get(kind)).fit(events, train, tuning_labels=tuning)
        fit_s = time.perf_counter() - t
        tune = split["tuning"]  # the utility side of the trade-off, on the split settings are chosen on
        perf = evaluate_risks(tune, model.predict_risk(events, tune), columns=model.label_columns_, n_boot=0)
        out = membership_audit(
            model,
            events,
            train,
            split["held_out"],
            model.label_columns_,
            max_subjects=300 if overfit else 2000,
            reference_models=k,
            reference_rows=split["train"][~split["train"]["subject_id"].isin(train["subject_id"])] if overfit else None,
            reference_subjects=300 if overfit else None,
            tuning_labels=tuning,
            n_boot=200,
        )
        for attack in dict.fromkeys(a["attack"] for a in out["attacks"]):
            by_label = [a for a in out["attacks"] if a["attack"] == attack]
            pooled = next(a for a in by_label if a["label"] == "all")
            rows.append(
                {"model": kind, **{c: v for c, v in pooled.items() if c != "label"}}
                | {
                    "worst_label_auc_hi": max(a["auc_hi"] for a in by_label if a["label"] != "all"),
                    "reference_subjects": out["reference_subjects"],
                    "tuning_mean_auroc": perf["auroc"].mean(),
                    "tuning_mean_brier": perf["brier"].mean(),
                    "fit_s": round(fit_s, 1),
                }
            )
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    from twinml.cohort import TaskDefinition, build_labels
    from twinml.data import read_meds, read_subject_splits

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lightgbm,logistic,gru,overfit")
    parser.add_argument("--n-subjects", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0, help="the simulated cohort's seed")
    parser.add_argument("--dp", default="", help="comma-separated epsilons: the DP table instead of the attacks")
    parser.add_argument("--dp-epochs", type=int, default=6)
    parser.add_argument("--dp-lr", type=float, default=5e-3)
    parser.add_argument("--dp-kind", default="gru", choices=("gru", "transformer"), help="the DP table's model")
    parser.add_argument("--rmia", type=int, default=0, help="reference models (0: the loss-threshold attack only)")
    parser.add_argument("--params", default="{}", help='JSON, kind -> settings: {"lightgbm": {"num_leaves": 7}}')
    args = parser.parse_args()
    root = simulated(args.n_subjects, args.seed)
    events = read_meds(root)
    task = TaskDefinition(
        name="privacy", horizons_days=[365, 730], prediction_times={"start": "2012-01-01"}, outcomes=OUTCOMES
    )
    labels = build_labels(events, task=task, subject_splits=read_subject_splits(root)).labels
    split = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", "held_out")}
    if args.dp:
        eps = [float(e) for e in args.dp.split(",")]
        table = _dp_table(events, split, eps, args.dp_epochs, args.dp_lr, args.dp_kind)
        print(table.round(3).to_string(index=False))
        return
    table = _attack_table(events, split, args.models.split(","), args.rmia, json.loads(args.params))
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
