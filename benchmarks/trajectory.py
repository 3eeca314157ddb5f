"""Trajectory forecasts of key labs: the twin's quantile head against last-value-carried-forward,
a per-code LightGBM regressor on the tabular features, and (on the simulator) the oracle.

    .venv/bin/python benchmarks/trajectory.py [--data sim|synthea] [--n-subjects 20000] [--report tuning|held_out]
                                              [--params JSON] [--json FILE]

For every prediction row of the report split, each key code and each horizon h (90, 180, 365 days),
the target is the code's reading nearest ``t + h`` within ``t + h +/- h/2``
(:func:`twinml.features.readings_near_horizons`); rows without one are not scored for that cell.

- **twin**: ``RecordRiskModel(trajectory_codes=CODES).predict_trajectory`` (the median and the 80 %
  interval conformalised on the tuning split), the model the other benchmarks train (same task).
- **LOCF**: the code's last reading at or before t (the training mean where there is none).
- **LightGBM**: one ``LGBMRegressor`` per code and horizon (L1 objective, since MAE is the score;
  early stopping on the tuning rows) on ``TabularFeaturizer``'s windowed aggregates.
- **oracle** (simulator only): the noise-free value of the latent state the target reading read
  (``truth/readings.parquet``); its MAE is the measurement-noise floor no forecast can beat.

Prints per code and horizon: scored rows, MAE of each method, scaled MAE (MAE / the SD of the
code's targets on the training rows), the twin's gain over the better baseline with a 95 %
subject-bootstrap interval, and the 80 % interval's coverage and mean width. Choose on the tuning
split; report the held-out split once.
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
from _common import CACHE, simulated  # noqa: E402

HORIZONS = (90, 180, 365)
SIM_CODES = {
    "HbA1c": "LOINC/4548-4",
    "glucose": "LOINC/2345-7",
    "SBP": "LOINC/8480-6",
    "LDL": "LOINC/13457-7",
    "eGFR": "LOINC/33914-3",
    "BMI": "LOINC/39156-5",
}
SYNTHEA_CODES = {
    "HbA1c": "LOINC/4548-4",
    "glucose": "LOINC/2339-0",
    "SBP": "LOINC/8480-6",
    "LDL": "LOINC/18262-6",
    "eGFR": "LOINC/33914-3",
    "BMI": "LOINC/39156-5",
}
SIM_OUTCOMES = {
    "t2d": "SNOMED/44054006",
    "mi": "SNOMED/22298006",
    "stroke": "SNOMED/230690007",
    "ckd": "SNOMED/433144002",
}


def load(args, say):
    """Events, labels (with split) and the reading truth (simulator) of the chosen data."""
    from twinml.cohort import TaskDefinition, build_labels
    from twinml.data import read_meds, read_subject_splits
    from twinml.pipeline import load_reading_truth

    if args.data == "sim":
        root = simulated(args.n_subjects, args.sim_seed)
        if load_reading_truth(root) is None:  # cached by a twinml from before the reading truth: simulate again
            from twinml.simulate import simulate

            simulate(n_subjects=args.n_subjects, seed=args.sim_seed).write(root, overwrite=True)
        task = TaskDefinition(
            name="bench",
            outcomes={k: {"codes": [v]} for k, v in SIM_OUTCOMES.items()},
            horizons_days=[90, 180, 365, 730],
            prediction_times={"start": "2012-01-01"},
        )
        events = read_meds(root)
        labels = build_labels(events, task=task, subject_splits=read_subject_splits(root)).labels
        return events, labels, SIM_CODES, load_reading_truth(root)
    from realdata import HORIZON, SYNTHEA, meds_dataset, task_label_files

    root = meds_dataset(progress=say)
    events = read_meds(root)
    enc = pd.read_parquet(SYNTHEA / "encounters.parquet", columns=["CODE"])["CODE"].dropna().astype(str).unique()
    files = task_label_files(events, enc, CACHE / "synthea-dev-labels")
    task = TaskDefinition(name="synthea-1y", labels={k: str(v) for k, v in files.items()}, horizons_days=[HORIZON])
    labels = build_labels(events, task=task, subject_splits=read_subject_splits(root)).labels
    return events, labels, SYNTHEA_CODES, None


def last_values(events, index, codes, fallback):
    """LOCF: each code's last reading at or before each row's prediction time (``fallback`` if none)."""
    from twinml._arrays import NAT, EventArrays, events_upto
    from twinml.features._common import prediction_queries

    ev = EventArrays(events)
    q_rank, q_time = prediction_queries(ev, index)
    out = np.tile(np.asarray(fallback, np.float64), (len(index), 1))
    for j, code in enumerate(codes):
        sel = np.flatnonzero(ev.codes_matching(codes=[code]) & (ev.time != NAT) & ~np.isnan(ev.value))
        start, upto, _ = events_upto(ev.subject[sel], ev.time[sel], q_rank, q_time)
        has = upto > start
        out[has, j] = ev.value[sel][upto[has] - 1]
    return out


def lightgbm_forecasts(events, split, targets, codes, say):
    """One L1 LightGBM regressor per code and horizon on the tabular features; predictions for the report rows."""
    import lightgbm as lgb

    from twinml.features import TabularFeaturizer

    fz = TabularFeaturizer().fit(events[events["subject_id"].isin(split["train"]["subject_id"].unique())])
    X = {
        s: fz.transform(events, split[s][["subject_id", "prediction_time"]]).tocsr().astype(np.float32)
        for s in ("train", "tuning", "report")
    }
    out = np.full(targets["report"].shape, np.nan)
    for j, name in enumerate(codes):
        for k, h in enumerate(HORIZONS):
            tr, tu = (~np.isnan(targets[s][:, j, k]) for s in ("train", "tuning"))
            reg = lgb.LGBMRegressor(
                objective="l1",
                n_estimators=2000,
                learning_rate=0.05,
                num_leaves=31,
                min_child_samples=20,
                subsample=0.8,
                subsample_freq=1,
                colsample_bytree=0.5,
                n_jobs=2,
                random_state=0,
                verbose=-1,
            )
            reg.fit(
                X["train"][tr],
                targets["train"][tr, j, k],
                eval_X=X["tuning"][tu],
                eval_y=targets["tuning"][tu, j, k],
                callbacks=[lgb.early_stopping(50, verbose=False)],
            )
            out[:, j, k] = reg.predict(X["report"])
            say(f"LightGBM {name} {h}d: {tr.sum():,} train targets, {reg.best_iteration_} trees")
    return out


def bootstrap_gain(subject, err_best, err_twin, n_boot=200, seed=0):
    """95 % subject-bootstrap interval of MAE(best baseline) - MAE(twin)."""
    codes, inv = np.unique(subject, return_inverse=True)
    d = np.bincount(inv, err_best - err_twin, minlength=codes.size)
    n = np.bincount(inv, minlength=codes.size).astype(np.float64)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(codes.size, np.full(codes.size, 1.0 / codes.size), size=n_boot)
    gains = (w @ d) / (w @ n)
    return np.percentile(gains, [2.5, 97.5])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="sim", choices=["sim", "synthea"])
    p.add_argument("--n-subjects", type=int, default=20_000)
    p.add_argument("--sim-seed", type=int, default=0)
    p.add_argument("--report", default="held_out", choices=["tuning", "held_out"])
    p.add_argument("--params", type=json.loads, default={}, help="RecordRiskModel arguments as JSON")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    import torch

    from twinml.features import readings_near_horizons
    from twinml.models import RecordRiskModel

    torch.set_num_threads(args.threads)
    events, labels, named, truth = load(args, say)
    names, codes = list(named), list(named.values())
    split = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", args.report)}
    split["report"] = split[args.report]
    say(
        f"{events['subject_id'].nunique():,} subjects; rows train/tuning/{args.report} "
        f"{len(split['train']):,}/{len(split['tuning']):,}/{len(split['report']):,}"
    )
    targets, times = {}, {}
    for s in ("train", "tuning", "report"):
        targets[s], times[s] = readings_near_horizons(events, split[s], codes, HORIZONS)

    t0 = time.perf_counter()
    model = RecordRiskModel(calibration="platt", **{"trajectory_codes": codes, **args.params})
    model.fit(events, split["train"], tuning_labels=split["tuning"], progress=say)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr = model.predict_trajectory(events, split["report"][["subject_id", "prediction_time"]])
    predict_s = time.perf_counter() - t0
    shape = (len(split["report"]), len(codes), len(HORIZONS))
    twin = {c: tr[c].to_numpy(np.float64).reshape(shape) for c in ("forecast", "lower_80", "upper_80")}

    train_mean = np.nanmean(targets["train"], axis=(0, 2))
    locf = np.repeat(last_values(events, split["report"], codes, train_mean)[:, :, None], len(HORIZONS), axis=2)
    t0 = time.perf_counter()
    lgbm = lightgbm_forecasts(events, split, targets, names, say)
    lgbm_s = time.perf_counter() - t0
    oracle = None
    if truth is not None:
        flat = pd.DataFrame(
            {
                "subject_id": np.repeat(split["report"]["subject_id"].to_numpy(), len(codes) * len(HORIZONS)),
                "time": times["report"].reshape(-1).astype("datetime64[us]"),
                "code": np.tile(np.repeat(codes, len(HORIZONS)), len(split["report"])),
            }
        )
        truth = truth.assign(code=truth["code"].astype(str))
        m = flat.merge(
            truth[["subject_id", "time", "code", "expected_value"]], on=["subject_id", "time", "code"], how="left"
        )
        oracle = m["expected_value"].to_numpy(np.float64).reshape(shape)

    y = targets["report"]
    sd = np.nanstd(targets["train"], axis=0)  # (codes, horizons)
    subj = split["report"]["subject_id"].to_numpy()
    rows, ok_all = [], True
    for j, name in enumerate(names):
        for k, h in enumerate(HORIZONS):
            m = ~np.isnan(y[:, j, k])
            yy = y[m, j, k]
            err = {
                "LOCF": np.abs(locf[m, j, k] - yy),
                "LightGBM": np.abs(lgbm[m, j, k] - yy),
                "twin": np.abs(twin["forecast"][m, j, k] - yy),
            }
            if oracle is not None:
                err["oracle"] = np.abs(oracle[m, j, k] - yy)
            mae = {key: float(e.mean()) for key, e in err.items()}
            best = min(("LOCF", "LightGBM"), key=mae.get)
            lo, hi = bootstrap_gain(subj[m], err[best], err["twin"])
            cover = float(((twin["lower_80"][m, j, k] <= yy) & (yy <= twin["upper_80"][m, j, k])).mean())
            width = float((twin["upper_80"][m, j, k] - twin["lower_80"][m, j, k]).mean())
            ok_all &= mae["twin"] < min(mae["LOCF"], mae["LightGBM"])
            rows.append(
                {
                    "code": name,
                    "horizon": h,
                    "n": int(m.sum()),
                    **{f"MAE {key}": v for key, v in mae.items()},
                    **{f"sMAE {key}": v / sd[j, k] for key, v in mae.items()},
                    "gain vs best": mae[best] - mae["twin"],
                    "gain 95% CI": f"[{lo:.3g}, {hi:.3g}]",
                    "coverage 80%": cover,
                    "width 80%": width,
                }
            )
    table = pd.DataFrame(rows)
    say(
        f"\n{args.data}, {args.report} split: trajectory forecasts (MAE in the code's units; sMAE = MAE / SD of "
        f"the training targets)"
    )
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    tf = model.trajectory_
    say(
        f"twin below both baselines in every cell: {ok_all}; coverage {table['coverage 80%'].min():.3f}-"
        f"{table['coverage 80%'].max():.3f}; record GRU + trajectory head fit {fit_s:.0f}s (head best epochs "
        f"{tf.best_epochs}), "
        f"predict_trajectory {predict_s:.1f}s for {len(split['report']):,} rows; LightGBM 18 fits {lgbm_s:.0f}s"
    )
    if args.json:
        args.json.write_text(json.dumps({"table": rows, "fit_seconds": fit_s, "lightgbm_seconds": lgbm_s}, indent=2))


if __name__ == "__main__":
    main()
