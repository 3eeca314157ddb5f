"""Sequence models vs gradient boosting vs the oracle, and where the CPU time goes.

On a simulated cohort (default 20,000 subjects) prints, per outcome x horizon, the held-out
AUROC of the GRU, the Transformer, the gradient-boosting baseline and the oracle; training
seconds per epoch; inference subjects/second; and the achieved GFLOP/s of GRU inference
against an fp32 matrix-multiply peak measured in the same run.
Run: .venv/bin/python benchmarks/sequence.py [N_SUBJECTS] [EPOCHS]
     [--kinds gru,transformer,record,blend,hist_gb] [--params JSON] [--blend-params JSON]
     [--seeds 0,1,2,3,4]   (sequence models: one per seed, and their averaged risks as "gru x5")
On an ingested dataset instead (e.g. Synthea FHIR through `twinml ingest`; no oracle there):
     .venv/bin/python benchmarks/sequence.py --meds DIR [--outcomes t2d=SNOMED/44054006,...] [--start 2015-01-01]
"""

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from _common import simulated

from twinml.cohort import TaskDefinition, build_labels
from twinml.data import read_meds, read_subject_splits
from twinml.evaluation import evaluate_risks
from twinml.models import BlendRiskModel, RecordRiskModel, SequenceRiskModel, TabularRiskModel
from twinml.pipeline import load_truth

OUTCOMES = {"t2d": "SNOMED/44054006", "mi": "SNOMED/22298006", "stroke": "SNOMED/230690007", "ckd": "SNOMED/433144002"}


def matmul_peak_gflops(n=2048, repeat=5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def gru_inference_flops(model, data) -> float:
    """FLOPs of the GRU recurrence actually computed (padded slots included): 12 d^2 per step per layer."""
    d = model.d_model
    steps = sum(
        int(data.lengths[rows].max(initial=1)) * rows.size for rows in model._batches(data.lengths, batch_size=1024)
    )
    return 12.0 * d * d * model.n_layers * steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("n_subjects", nargs="?", type=int, default=20_000)
    p.add_argument("epochs", nargs="?", type=int, default=12)
    p.add_argument("--kinds", default="gru,transformer,hist_gb")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--params", default="{}", help='extra SequenceRiskModel arguments as JSON, e.g. {"lr": 1e-3}')
    p.add_argument(
        "--blend-params", default="{}", help='BlendRiskModel arguments as JSON, e.g. {"record_weight": "auto"}'
    )
    p.add_argument("--seeds", default="0", help="sequence models: train one per seed and also report their average")
    p.add_argument(
        "--sim-seed", type=int, default=0, help="seed of the simulated cohort (another cohort of the same size)"
    )
    p.add_argument("--meds", help="an ingested MEDS directory instead of the simulator (no oracle)")
    p.add_argument("--outcomes", default=None, help="name=CODE,... (default: the simulator's four outcomes)")
    p.add_argument(
        "--start", default=None, help="first yearly prediction time (default 2012-01-01; --meds: 2015-01-01)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = args.meds or simulated(args.n_subjects, args.sim_seed)
    events = read_meds(root)
    truth = load_truth(root) if not args.meds else None
    outcomes = dict(o.split("=", 1) for o in args.outcomes.split(",")) if args.outcomes else OUTCOMES
    task = TaskDefinition(
        name="bench",
        outcomes={k: {"codes": [v]} for k, v in outcomes.items()},
        horizons_days=[90, 180, 365, 730],
        prediction_times={"start": args.start or ("2015-01-01" if args.meds else "2012-01-01")},
    )
    labels = build_labels(events, task=task, subject_splits=read_subject_splits(root)).labels
    split = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", "held_out")}
    peak = matmul_peak_gflops()
    print(
        f"{events['subject_id'].nunique():,} subjects ({root}); positives per label in train/held-out: "
        + ", ".join(
            f"{c} {int(split['train'][c].sum())}/{int(split['held_out'][c].sum())}"
            for c in labels.columns
            if c.endswith("_365d")
        )
    )
    print(
        f"rows train/tuning/held-out {len(split['train']):,}/{len(split['tuning']):,}/"
        f"{len(split['held_out']):,}; torch threads {args.threads}; fp32 matmul peak {peak:.0f} GFLOP/s"
    )
    tables = []
    seeds = [int(x) for x in args.seeds.split(",")]
    for kind in args.kinds.split(","):
        t = time.perf_counter()
        if kind in ("gru", "transformer"):
            params = {"n_layers": 1 if kind == "gru" else 2, "random_state": seeds[0], **json.loads(args.params)}
            model = SequenceRiskModel(
                kind=kind, max_epochs=args.epochs, n_threads=args.threads, calibration="platt", **params
            ).fit(events, split["train"], tuning_labels=split["tuning"], progress=print)
            print(f"{kind} params: {model.get_params()}")
            epochs = [h["seconds"] for h in model.history_]
            print(f"{kind}: {len(epochs)} epochs (best {model.best_epoch_}), {np.median(epochs):.1f} s/epoch median")
        elif kind in ("record", "blend"):
            record = {"max_epochs": args.epochs, "n_threads": args.threads, **json.loads(args.params)}
            if kind == "record":
                model = RecordRiskModel(calibration="platt", random_state=seeds[0], **record)
            else:
                blend = json.loads(args.blend_params)
                model = BlendRiskModel(record_params=record, random_state=seeds[0], **blend)
            model.fit(events, split["train"], tuning_labels=split["tuning"], progress=print)
        else:
            model = TabularRiskModel(kind=kind).fit(events, split["train"])
        fit_s = time.perf_counter() - t
        held = split["held_out"]
        # every subject once, at its last prediction time (longest history), as in a panel scoring run
        subjects = (
            labels.groupby("subject_id", sort=False).tail(1)[["subject_id", "prediction_time"]].reset_index(drop=True)
        )
        model.predict_risk(events, subjects.head(256))  # warm-up
        infer_s = min(_timed(lambda: model.predict_risk(events, subjects)) for _ in range(3))  # noqa: B023 (called here)
        line = (
            f"{kind}: fit {fit_s:.0f} s; inference {len(subjects) / infer_s:,.0f} subjects/s end to end "
            f"({len(subjects):,} subjects)"
        )
        if kind == "gru":
            data = model.featurizer_.transform(events, subjects)
            line += f"; mean sequence length {data.lengths.mean():.0f} (cap {model.max_len})"
            with torch.inference_mode():
                net_s = min(_timed(lambda: model._logits(data)) for _ in range(3))  # noqa: B023 (called here)
            gflops = gru_inference_flops(model, data) / net_s / 1e9
            line += (
                f"; network only {len(subjects) / net_s:,.0f} subjects/s, GRU recurrence {gflops:.1f} GFLOP/s "
                f"= {100 * gflops / peak:.0f}% of matmul peak"
            )
        print(line)
        cols = [c for c in model.label_columns_ if c.endswith(("365d", "730d"))]
        risk = model.predict_risk(events, held)
        res = evaluate_risks(held, risk, columns=cols, truth=truth, n_boot=100)
        res.insert(0, "model", kind)
        tables.append(res)
        if kind in ("gru", "transformer") and len(seeds) > 1:  # the same model from other seeds, averaged
            risks = [risk[cols].to_numpy()]
            for seed in seeds[1:]:
                other = SequenceRiskModel(
                    kind=kind,
                    max_epochs=args.epochs,
                    n_threads=args.threads,
                    calibration="platt",
                    **{**params, "random_state": seed},
                ).fit(events, split["train"], tuning_labels=split["tuning"])
                risks.append(other.predict_risk(events, held)[cols].to_numpy())
                one = evaluate_risks(
                    held, risk.assign(**dict(zip(cols, risks[-1].T))), columns=cols, truth=truth, n_boot=0
                )
                print(
                    f"{kind} seed {seed}: "
                    + ", ".join(f"{r['label']} {r['auroc']:.3f}" for r in one.to_dict("records"))
                )
            ens = evaluate_risks(
                held, risk.assign(**dict(zip(cols, np.mean(risks, axis=0).T))), columns=cols, truth=truth, n_boot=100
            )
            ens.insert(0, "model", f"{kind}x{len(seeds)}")
            tables.append(ens)
    out = pd.concat(tables)
    wide = out.pivot(index="label", columns="model", values="auroc")
    if "oracle_auroc" in out:
        wide["oracle"] = out.groupby("label")["oracle_auroc"].first()
    ece = out.pivot(index="label", columns="model", values="ece").add_prefix("ece_")
    pd.set_option("display.width", 200)
    print(pd.concat([wide, ece], axis=1).round(3).to_string())


if __name__ == "__main__":
    main()
