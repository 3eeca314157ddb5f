"""The living twin: a saved state advanced over new events, against a full rescore of the whole history.

    .venv/bin/python benchmarks/update.py [--source sim|synthea] [--n-subjects 10000] [--batches 5]

1. Fits a whole-record GRU (``RecordRiskModel``, its defaults but ``--epochs``; its quality does not
   matter here) on the training subjects' yearly prediction rows.
2. Exactness: feeds every subject's events to a twin state in ``--batches`` batches (cut at equally
   spaced dates; static rows with the first) and, after each, compares the risks read from the
   state with ``predict_risk`` on the whole history up to the cut: max |difference| over all
   subjects and labels.
3. Speed: from the state at the last cut but one, 1 % of subjects get their next visit (their events of
   the following 90 days); times ``advance`` + ``state_risks`` for them against a full rescore of
   the whole panel (``predict_risk`` over every subject's history), best of 3, in the same run.
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="sim", choices=["sim", "synthea"])
    p.add_argument("--n-subjects", type=int, default=10_000, help="simulator only")
    p.add_argument("--batches", type=int, default=5, help="at least 2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    from twinml.cohort import TaskDefinition, build_labels
    from twinml.data import read_meds, read_subject_splits
    from twinml.models import RecordRiskModel
    from twinml.scoring import TwinState, advance, state_risks

    if args.source == "sim":
        root = simulated(args.n_subjects, 0)
        first, last = pd.Timestamp("2011-01-01"), pd.Timestamp("2019-12-31")
        task = TaskDefinition(name="update-bench", outcomes={"t2d": {"codes": ["SNOMED/44054006"]},
                                                             "mi": {"codes": ["SNOMED/22298006"]}},
                              horizons_days=[365], prediction_times={"start": "2012-01-01"})
    else:
        from realdata import meds_dataset

        root = meds_dataset()
        first, last = pd.Timestamp("1990-01-01"), pd.Timestamp("2019-12-31")
        task = TaskDefinition(name="update-bench", outcomes={"t2d": {"codes": ["SNOMED/44054006"]},
                                                             "htn": {"codes": ["SNOMED/59621000"]}},
                              horizons_days=[365], prediction_times={"start": "2005-01-01"})
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
    movers = movers.iloc[:max(1, len(state) // 100)]
    new = later[later["subject_id"].isin(movers)].reset_index(drop=True)
    upto = _window(events, None, nxt)
    index = pd.DataFrame({"subject_id": upto["subject_id"].unique(), "prediction_time": nxt})

    def do_update():
        st, touched = advance(model, state, new, nxt)
        rows = np.searchsorted(st.subject_id, touched["subject_id"].to_numpy(np.int64))
        return state_risks(model, st.take(rows), nxt)

    up_s, up_all, _ = timed(do_update)
    full_s, full_all, _ = timed(lambda: model.predict_risk(upto, index))
    print(f"\nupdate of {len(movers):,} subjects ({len(new):,} new events) from a state of {len(state):,}: "
          f"{up_s:.2f}s (runs {', '.join(f'{t:.2f}' for t in up_all)}); full rescore of {len(index):,} subjects "
          f"({len(upto):,} events): {full_s:.2f}s (runs {', '.join(f'{t:.2f}' for t in full_all)}); "
          f"ratio {full_s / up_s:.1f}x; peak RSS {peak_rss_gb():.1f} GB")


if __name__ == "__main__":
    main()
