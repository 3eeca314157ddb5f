"""The living twin: a saved state advanced over new events, against a full rescore of the whole history.

    .venv/bin/python benchmarks/update.py [--source sim|synthea] [--n-subjects 10000] [--batches 5]
    .venv/bin/python benchmarks/update.py --panel 1000000

1. Fits a whole-record GRU (``RecordRiskModel``, its defaults but ``--epochs``; its quality does not
   matter here) on the training subjects' yearly prediction rows.
2. Exactness: feeds every subject's events to a twin state in ``--batches`` batches (cut at equally
   spaced dates; static rows with the first) and, after each, compares the risks read from the
   state with ``predict_risk`` on the whole history up to the cut: max |difference| over all
   subjects and labels.
3. Speed: from the state at the last cut but one, 1 % of subjects get their next visit (their events of
   the following 90 days); times ``advance`` + ``state_risks`` for them against a full rescore of
   the whole panel (``predict_risk`` over every subject's history), best of 3, in the same run.

With ``--panel N`` (100000 or 1000000: the scoring benchmark's panels), end to end from files, each
step a fresh process (its own peak memory): ``score --state`` at 2018-12-31 writes the panel's
state; 1 % of subjects (random among those with a visit in the next 90 days, seed 0) get their
events of those 90 days as a MEDS directory;
``update`` to 2019-03-31 is timed against ``score`` of the whole panel at that date, each in a
process warmed up by the same call on a small input (imports, the MLflow store and the model load
are per-process costs, paid once by a long-running service; the warm-up times are printed too),
and the updated subjects' scores are compared with the full rescore's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_gb, simulated, timed  # noqa: E402


def _window(events, lo, hi):
    t = events["time"]
    keep = (t.isna() | (t <= hi)) if lo is None else ((t > lo) & (t <= hi))
    return events[keep.to_numpy()].reset_index(drop=True)


CHILD = r"""
import json, sys, time
sys.path.insert(0, BENCH)
from _common import peak_rss_gb
import torch
from twinml import scoring
torch.set_num_threads(2)
what, args, warm = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
profile = args.pop("profile", "") == "True"
fn = getattr(scoring, what)
t = time.perf_counter()
if warm:  # the same call on a small input first: imports, the registry and the model load warmed up
    fn(**warm)
warm_s = time.perf_counter() - t
t = time.perf_counter()
if profile:
    import cProfile, pstats
    prof = cProfile.Profile()
    r = prof.runcall(fn, **args)
else:
    r = fn(**args)
secs = time.perf_counter() - t
if profile:
    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
print(json.dumps({"seconds": secs, "warm_seconds": warm_s, "peak_gb": peak_rss_gb()}))
"""


def _child(what, warm=None, **kwargs):
    import json
    import subprocess

    code = CHILD.replace("BENCH", repr(str(Path(__file__).resolve().parent)))
    as_text = lambda d: {k: str(v) for k, v in (d or {}).items()}  # noqa: E731
    res = subprocess.run(
        [sys.executable, "-c", code, what, json.dumps(as_text(kwargs)), json.dumps(as_text(warm))],
        capture_output=True,
        text=True,
    )
    if res.returncode:
        raise SystemExit(f"{what} failed:\n{res.stderr[-3000:]}")
    if kwargs.get("profile"):
        print(res.stderr[-12000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def panel_benchmark(n: int, epochs: int, profile: bool = False):
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from scoring import million_panel

    from twinml.config import load_config
    from twinml.pipeline import train

    t1, t2 = "2018-12-31", "2019-03-31"
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        tracking = f"sqlite:///{d / 'mlflow.db'}"
        cfg = load_config(
            {
                "name": "bench-update",
                "seed": 0,
                "data": {"source": "meds", "path": str(simulated(20_000))},
                "task": {
                    "name": "bench",
                    "outcomes": {"t2d": {"codes": ["SNOMED/44054006"]}, "mi": {"codes": ["SNOMED/22298006"]}},
                    "horizons_days": [365, 730],
                    "prediction_times": {"start": "2012-01-01"},
                },
                "model": {"kind": "record", "calibration": "platt", "params": {"max_epochs": epochs, "n_threads": 2}},
                "evaluation": {"splits": ["held_out"], "n_bootstrap": 0},
                "tracking": {"experiment": "bench-update", "register_as": "bench-record"},
            }
        )
        train(cfg, tracking_uri=tracking)
        model = "models:/bench-record/1"
        panel = simulated(100_000) if n == 100_000 else million_panel()
        files = sorted((panel / "data").rglob("*.parquet"))
        parts, n_subj = [], 0
        for f in files:  # events in (t1, t2]
            tbl = pq.read_table(f, columns=["subject_id", "time", "code", "numeric_value"]).to_pandas()
            n_subj += tbl["subject_id"].nunique()
            keep = (tbl["time"] > pd.Timestamp(t1)) & (tbl["time"] <= pd.Timestamp(t2))
            parts.append(tbl[keep.to_numpy()])
        later = pd.concat(parts)
        # 1 % of the panel: subjects with a visit in the window, with their events there
        candidates = later["subject_id"].unique()
        movers = np.random.default_rng(0).choice(candidates, size=n_subj // 100, replace=False)
        new = later[later["subject_id"].isin(movers)].sort_values(["subject_id", "time"], kind="stable")
        n_visits = new.groupby("subject_id")["time"].nunique()
        (d / "new" / "data").mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pandas(new.assign(code=new["code"].astype(str)), preserve_index=False),
            d / "new" / "data" / "0.parquet",
        )
        print(
            f"panel {panel}: {n_subj:,} subjects; {movers.size:,} of them get their events in ({t1}, {t2}]: "
            f"{len(new):,} new events, {n_visits.mean():.1f} visits each on average"
        )
        base = _child(
            "score",
            model_uri=model,
            events_dir=panel,
            as_of=t1,
            out=d / "s1.parquet",
            tracking_uri=tracking,
            state_dir=d / "state",
        )
        size = sum(f.stat().st_size for f in (d / "state").iterdir()) / 1e6
        print(f"score --state at {t1}: {base['seconds']:.1f} s, peak {base['peak_gb']:.2f} GB; state {size:,.0f} MB")
        import shutil

        shutil.copytree(d / "state", d / "state-warm")
        up = _child(
            "update",
            model_uri=model,
            state_dir=d / "state",
            events_dir=d / "new",
            as_of=t2,
            out=d / "u.parquet",
            tracking_uri=tracking,
            **({"profile": True} if profile else {}),
            warm={
                "model_uri": model,
                "state_dir": d / "state-warm",
                "events_dir": d / "new",
                "as_of": t2,
                "out": d / "u-warm.parquet",
                "tracking_uri": tracking,
            },
        )
        full = _child(
            "score",
            model_uri=model,
            events_dir=panel,
            as_of=t2,
            out=d / "s2.parquet",
            tracking_uri=tracking,
            warm={
                "model_uri": model,
                "events_dir": d / "new",
                "as_of": t2,
                "out": d / "s-warm.parquet",
                "tracking_uri": tracking,
            },
        )
        u = pd.read_parquet(d / "u.parquet").set_index("subject_id")
        f2 = pd.read_parquet(d / "s2.parquet").set_index("subject_id").loc[u.index]
        cols = [c for c in u.columns if c.endswith("d") and c not in ("status", "model_version")]
        ok = u["status"] == "scored"
        diff = float(np.abs(u.loc[ok, cols].to_numpy() - f2.loc[ok, cols].to_numpy()).max())
        print(
            f"update of {len(u):,} subjects to {t2}: {up['seconds']:.2f} s, peak {up['peak_gb']:.2f} GB; full rescore "
            f"of the panel: {full['seconds']:.1f} s, peak {full['peak_gb']:.2f} GB -> "
            f"{full['seconds'] / up['seconds']:.1f}x "
            f"(each timed in a process warmed by the same call on a small input: imports, registry, model load; the "
            f"warm-up took {up['warm_seconds']:.1f} s / {full['warm_seconds']:.1f} s, so end to end from a cold start "
            f"{(full['seconds'] + full['warm_seconds']) / (up['seconds'] + up['warm_seconds']):.1f}x at most); "
            f"max |update - rescore| over {int(ok.sum()):,} scored subjects: {diff:.1e}"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="sim", choices=["sim", "synthea"])
    p.add_argument("--n-subjects", type=int, default=10_000, help="simulator only")
    p.add_argument("--batches", type=int, default=5, help="at least 2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--panel", type=int, choices=[100_000, 1_000_000], help="end to end from files (see above)")
    p.add_argument("--profile", action="store_true", help="--panel: print the update's top functions (cProfile)")
    args = p.parse_args(argv)
    if args.panel:
        return panel_benchmark(args.panel, args.epochs, args.profile)

    from twinml.cohort import TaskDefinition, build_labels
    from twinml.data import read_meds, read_subject_splits
    from twinml.models import RecordRiskModel
    from twinml.scoring import TwinState, advance, state_risks

    if args.source == "sim":
        root = simulated(args.n_subjects, 0)
        first, last = pd.Timestamp("2011-01-01"), pd.Timestamp("2019-12-31")
        task = TaskDefinition(
            name="update-bench",
            outcomes={"t2d": {"codes": ["SNOMED/44054006"]}, "mi": {"codes": ["SNOMED/22298006"]}},
            horizons_days=[365],
            prediction_times={"start": "2012-01-01"},
        )
    else:
        from realdata import meds_dataset

        root = meds_dataset()
        first, last = pd.Timestamp("1990-01-01"), pd.Timestamp("2019-12-31")
        task = TaskDefinition(
            name="update-bench",
            outcomes={"t2d": {"codes": ["SNOMED/44054006"]}, "htn": {"codes": ["SNOMED/59621000"]}},
            horizons_days=[365],
            prediction_times={"start": "2005-01-01"},
        )
    events = read_meds(root)
    labels = build_labels(events, task=task, subject_splits=read_subject_splits(root)).labels
    train = labels[labels["split"] == "train"].reset_index(drop=True)
    tune = labels[labels["split"] == "tuning"].reset_index(drop=True)
    n_subj = events["subject_id"].nunique()
    print(f"{args.source}: {len(events):,} events, {n_subj:,} subjects ({root})")
    t0 = time.perf_counter()
    model = RecordRiskModel(max_epochs=args.epochs, n_threads=args.threads, calibration="platt")
    model.fit(events, train, tuning_labels=tune)
    print(f"fitted RecordRiskModel ({args.epochs} epochs) in {time.perf_counter() - t0:.0f}s")
    cols = model.label_columns_

    cuts = pd.date_range(first, last, periods=args.batches + 1)[1:]
    state, worst, lo, before_last = TwinState.empty(model), 0.0, None, None
    print("\n| batch | cut | events in batch | subjects touched | state rows | max abs diff vs full rescore |")
    print("|---|---|---|---|---|---|")
    for k, hi in enumerate(cuts, start=1):
        batch = _window(events, lo, hi)
        state, touched = advance(model, state, batch, hi)
        if (touched["status"] != "").any():
            raise RuntimeError(f"batch {k}: {int((touched['status'] != '').sum())} subjects refused")
        upto = _window(events, None, hi)
        upto = upto[upto["subject_id"].isin(state.subject_id)].reset_index(drop=True)
        got = state_risks(model, state, hi)[cols].to_numpy()
        want = model.predict_risk(upto, pd.DataFrame({"subject_id": state.subject_id, "prediction_time": hi}))[cols]
        diff = float(np.abs(got - want.to_numpy()).max())
        worst = max(worst, diff)
        print(f"| {k} | {hi.date()} | {len(batch):,} | {len(touched):,} | {len(state):,} | {diff:.2e} |")
        if k == len(cuts) - 1:
            before_last = state
        lo = hi
    print(f"\nworst difference over {args.batches} batches: {worst:.2e} (claim: <= 1e-5)")

    # speed: from the state at the last cut but one, 1 % of subjects get their next 90 days of events
    state, hi = before_last, cuts[-2]
    nxt = hi + pd.Timedelta(days=90)
    later = _window(events, hi, nxt)
    movers = later["subject_id"].drop_duplicates().sample(frac=1.0, random_state=0)
    movers = movers.iloc[: max(1, len(state) // 100)]
    new = later[later["subject_id"].isin(movers)].reset_index(drop=True)
    upto = _window(events, None, nxt)
    index = pd.DataFrame({"subject_id": upto["subject_id"].unique(), "prediction_time": nxt})

    def do_update():
        st, touched = advance(model, state, new, nxt)
        rows = np.searchsorted(st.subject_id, touched["subject_id"].to_numpy(np.int64))
        return state_risks(model, st.take(rows), nxt)

    up_s, up_all, _ = timed(do_update)
    full_s, full_all, _ = timed(lambda: model.predict_risk(upto, index))
    print(
        f"\nupdate of {len(movers):,} subjects ({len(new):,} new events) from a state of {len(state):,}: "
        f"{up_s:.2f}s (runs {', '.join(f'{t:.2f}' for t in up_all)}); full rescore of {len(index):,} subjects "
        f"({len(upto):,} events): {full_s:.2f}s (runs {', '.join(f'{t:.2f}' for t in full_all)}); "
        f"ratio {full_s / up_s:.1f}x; peak RSS {peak_rss_gb():.1f} GB"
    )


if __name__ == "__main__":
    main()
