"""The what-if twin against econml's meta-learners and a naive model, scored on counterfactual truth.

On a simulated cohort whose prescribing is confounded (sicker patients are treated more), trains
twinml's TreatmentResponseModel on the factual plans (configs/plans.yaml) and, per plan and target
label, econml's T-, X- and DR-learners on the tabular features plus a naive model (crude risk
per plan, ignoring who got treated). Prints on held-out rows, over the (row, plan) pairs twinml
holds in support: PEHE, ATE error, band coverage, and the share of the oracle policy's risk
reduction reached by "give each patient the plan with the lowest estimated risk".
The cohort is simulated with treatment_decisions="yearly_review": treatments start only at yearly
reviews (the ground-truth times), chosen from what the review measured and past outcomes.
Run: .venv/bin/python benchmarks/whatif.py [N_SUBJECTS] [EPOCHS] [--labels t2d_365d,mi_365d]
     [--learners t,x,dr] [--params JSON] [--sim-seed 0] [--effect-scale 1.0] [--json OUT]
econml is a benchmark-only dependency: pip install -e .[benchmarks]
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import CACHE, simulated
from scipy.stats import norm

from twinml.cohort import TaskDefinition, build_labels
from twinml.cohort._plans import factual_plans, load_plans
from twinml.data import read_meds, read_subject_splits
from twinml.features import TabularFeaturizer
from twinml.pipeline import load_truth
from twinml.whatif import TreatmentResponseModel, effect_scores, policy_value, true_plan_risks

OUTCOMES = {"t2d": "SNOMED/44054006", "mi": "SNOMED/22298006", "stroke": "SNOMED/230690007", "ckd": "SNOMED/433144002"}


def econml_learners(names, seed):
    from econml.dr import DRLearner
    from econml.metalearners import TLearner, XLearner
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    def reg():
        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, early_stopping=True, random_state=seed)

    def clf():
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, early_stopping=True, random_state=seed)

    make = {
        "t": lambda: TLearner(models=reg()),
        "x": lambda: XLearner(models=reg(), propensity_model=clf()),
        "dr": lambda: DRLearner(
            model_propensity=clf(), model_regression=reg(), model_final=reg(), cv=2, random_state=seed
        ),
    }
    return {f"econml {n.upper()}-learner": make[n] for n in names}


def naive_effects(y, plan, n_plans, z):
    """Crude risk per plan in training (no adjustment): effect and band, the same for every patient."""
    rate = np.array([np.nanmean(y[plan == p]) if (plan == p).any() else np.nan for p in range(n_plans)])
    n = np.array([np.isfinite(y[plan == p]).sum() for p in range(n_plans)])
    se = np.sqrt(rate * (1 - rate) / np.maximum(n, 1) + rate[0] * (1 - rate[0]) / max(n[0], 1))
    return rate - rate[0], rate - rate[0] - z * se, rate - rate[0] + z * se


def main():
    p = argparse.ArgumentParser()
    p.add_argument("n_subjects", nargs="?", type=int, default=20_000)
    p.add_argument("epochs", nargs="?", type=int, default=15)
    p.add_argument("--labels", default="t2d_365d,mi_365d,stroke_365d,ckd_365d")
    p.add_argument("--learners", default="t,x,dr")
    p.add_argument(
        "--params",
        default="{}",
        help='TreatmentResponseModel settings as JSON, nested for the encoder: {"encoder__d_model": 32, "n_boot": 20}',
    )
    p.add_argument("--sim-seed", type=int, default=0)
    p.add_argument("--effect-scale", type=float, default=1.0, help="simulator treatment_effect_scale (0: no effect)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("--save-model", default=None, help="pickle the fitted twinml model here (for diagnosis)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # treatments start only at yearly reviews, the ground-truth times: the records' decisions are the plans
    settings = {"treatment_decisions": "yearly_review"}
    if args.effect_scale != 1.0:
        settings["treatment_effect_scale"] = args.effect_scale
    root = simulated(args.n_subjects, args.sim_seed, **settings)
    events = read_meds(root)
    truth = load_truth(root)
    plans = load_plans(Path(__file__).resolve().parent.parent / "configs" / "plans.yaml")
    names = plans.names
    task = TaskDefinition(
        name="whatif",
        outcomes={k: {"codes": [v]} for k, v in OUTCOMES.items()},
        horizons_days=[365, 730],
        prediction_times={"start": "2012-01-01"},
    )
    labels = build_labels(events, task=task, subject_splits=read_subject_splits(root)).labels
    split = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", "held_out")}
    fp = {s: factual_plans(events, split[s], plans) for s in split}
    counts = fp["train"]["plan"].value_counts(dropna=False)
    print(
        f"{events['subject_id'].nunique():,} subjects ({root}); train rows {len(split['train']):,}, "
        f"held-out {len(split['held_out']):,}; factual plans in train: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )

    t0 = time.perf_counter()
    params = {"encoder__max_epochs": args.epochs, "encoder__n_threads": args.threads, **json.loads(args.params)}
    model = (
        TreatmentResponseModel(plans=plans)
        .set_params(**params)
        .fit(events, split["train"], tuning_labels=split["tuning"], progress=print)
    )
    fit_s = time.perf_counter() - t0
    if args.save_model:
        import pickle

        with open(args.save_model, "wb") as f:
            pickle.dump(model, f)
    held = split["held_out"]
    t0 = time.perf_counter()
    pred = model.predict_plans(events, held)
    pred_s = time.perf_counter() - t0
    print(
        f"twinml: fit {fit_s:.0f} s ({len(model.history_)} epochs, best {model.best_epoch_}); "
        f"predict_plans {len(held) / pred_s:,.0f} rows/s; params {model.get_params()}"
    )
    print("in support (held-out share): " + ", ".join(f"{n} {s:.1%}" for n, s in zip(names, pred.in_support.mean(0))))

    # tabular features for econml (fitted on train events, as twinml's vocabulary is)
    t0 = time.perf_counter()
    train_subjects = split["train"]["subject_id"].unique()
    feat = TabularFeaturizer().fit(events[events["subject_id"].isin(train_subjects)])
    X_train = feat.transform(events, split["train"]).toarray().astype(np.float32)
    X_held = feat.transform(events, held).toarray().astype(np.float32)
    print(f"tabular features: {X_train.shape[1]:,} columns ({time.perf_counter() - t0:.0f} s)")
    plan_train = pd.Index(names).get_indexer(fp["train"]["plan"])  # -1: matches no plan
    z = norm.ppf(0.5 + model.band / 2.0)

    rows, policy = [], []
    for label in args.labels.split(","):
        outcome, h = label.rsplit("_", 1)
        o, hj = model.outcomes_.index(outcome), model.horizons_.index(int(h[:-1]))
        true_risk = true_plan_risks(truth, held, names, label)
        true_eff = true_risk - true_risk[:, :1]
        y = split["train"][label].astype("Float64").to_numpy(np.float64, na_value=np.nan)
        methods = {"twinml": (pred.effect[:, :, o, hj], pred.effect_lo[:, :, o, hj], pred.effect_hi[:, :, o, hj])}
        e, lo, hi = naive_effects(y, plan_train, len(names), z)
        methods["naive (crude risk per plan)"] = tuple(np.broadcast_to(a, (len(held), len(names))) for a in (e, lo, hi))
        for lname, make in econml_learners(args.learners.split(","), 0).items():
            est = np.zeros((len(held), len(names)))
            t0 = time.perf_counter()
            for pi in range(1, len(names)):
                use = np.isin(plan_train, [0, pi]) & np.isfinite(y) & ~fp["train"][f"already_on/{names[pi]}"].to_numpy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    learner = make().fit(y[use], (plan_train[use] == pi).astype(int), X=X_train[use])
                    est[:, pi] = np.ravel(learner.effect(X_held))
            print(f"{label}: {lname} fitted in {time.perf_counter() - t0:.0f} s")
            methods[lname] = (est, None, None)
        for mname, (e, lo, hi) in methods.items():
            for pi in range(1, len(names)):
                s = effect_scores(
                    e[:, pi],
                    true_eff[:, pi],
                    pred.in_support[:, pi],
                    None if lo is None else lo[:, pi],
                    None if hi is None else hi[:, pi],
                )
                rows.append({"label": label, "plan": names[pi], "method": mname, **s})
            policy.append({"label": label, "method": mname, **policy_value(e, true_risk, pred.in_support)})

    scores = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    for label, g in scores.groupby("label", sort=False):
        print(f"\n== {label}: effects on held-out (row, plan) pairs in twinml's support ==")
        print(g.drop(columns="label").to_string(index=False, float_format=lambda v: f"{v:.5f}"))
    tw = scores[scores["method"] == "twinml"]
    pooled = float((tw["coverage"] * tw["n"]).sum() / tw["n"].sum())
    best = scores.loc[scores.groupby(["label", "plan"], sort=False)["pehe"].idxmin(), ["label", "plan", "method"]]
    print(
        f"\ntwinml: {model.band:.0%} bands cover the true effect for {pooled:.1%} of in-support (row, plan, label) "
        f"triples; lowest PEHE in {int((best['method'] == 'twinml').sum())} of {len(best)} (label, plan) cells; "
        "elsewhere: "
        + (", ".join(f"{r.label}/{r.plan}: {r.method}" for r in best.itertuples() if r.method != "twinml") or "none")
    )
    print("\n== policy: lowest estimated risk among the reference and in-support plans ==")
    print(pd.DataFrame(policy).to_string(index=False, float_format=lambda v: f"{v:.5f}"))
    if args.json:
        out = {
            "settings": vars(args),
            "scores": rows,
            "policy": policy,
            "fit_seconds": fit_s,
            "pooled_coverage": pooled,
            "in_support": dict(zip(names, map(float, pred.in_support.mean(0)))),
        }
        CACHE.mkdir(exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
