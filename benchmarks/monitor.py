"""Production monitoring on panels whose shifts we planted: is every shift caught, and nothing else?

    .venv/bin/python benchmarks/monitor.py drift   [--n-subjects 20000] [--seeds 5]
    .venv/bin/python benchmarks/monitor.py degrade [--n-subjects 20000]
    .venv/bin/python benchmarks/monitor.py scale   [--n-subjects 1000000]
    .venv/bin/python benchmarks/monitor.py synthea

- ``drift``: per seed, a reference panel (simulator seed 100 + s) and current panels (seed 200 + s)
  without a shift and with each planted shift from 2016 on (simulator ``drift`` knobs): visits 0.6 times
  as often, HbA1c read 0.3 % higher (a new assay), statins written under a new code; and three smaller
  ones (visits x0.85, HbA1c +0.1, a fifth of statins recoded) to show the detection limit. Both panels
  are profiled at 2019-06-30 over a one-year window and compared with the default policy; the table says
  which groups were flagged, the largest PSI and the unseen-code rate, and which groups a stricter
  policy (``min_psi`` 0.02) flags. Wanted: the planted group named on every seed for the large shifts,
  nothing flagged (and the unseen-code gate passed) without a shift.
- ``degrade``: one simulated population whose type 2 diabetes hazard doubles from 2016-01-01. LightGBM
  is trained on the rows before 2015 (temporal split) and registered; the panel is scored every quarter
  2013-2018; ``twinml monitor --history ... --outcomes`` reports AUROC and O/E by quarter, and
  ``twinml recalibrate`` fits an update on the prediction times of 2016-07-01..2017-06-30 (labels
  complete by mid-2018) and registers version 2. Both versions are then scored on the quarters after the
  window (2017-07..2018-10): wanted, version 2's O/E within [0.9, 1.1].
- ``synthea``: the Synthea dev population (as ``benchmarks/realdata.py`` ingests it; run that once first)
  against itself five years later: the panel of 2014-12-31 as reference, the panel of 2019-12-31 as
  current. Nothing was planted: this is the calendar drift of real-shaped records (an older population,
  new vaccines and survey instruments), what an operator would see.
- ``scale``: monitoring a panel of ``--n-subjects`` (default 10^6) against a reference of the same size:
  wall time and peak memory (wanted < 2 min, < 4 GB). Each panel is a 100k-subject simulation (seeds 0
  and 1) tiled with new subject ids (simulating 10^6 subjects at once needs more memory than we have).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, peak_rss_gb, simulated  # noqa: E402

AS_OF = "2019-06-30"
SENSITIVE_PSI = 0.02  # a stricter policy, also reported: what the small shifts need
# degrade: the T2D hazard doubles from 2014 (year 4 of 2010-2019); the model learns from the rows before 2013
SHIFT_YEAR, TRAIN_BEFORE, TEST_FROM = 4, "2013-01-01", "2014-01-01"
YEARS, LAST_QUARTER = 12, "2020-10-01"  # 2010-2021: the last quarter's 1-year outcomes are all in
# The monitor is read on DECIDED: the recalibration window is the last year whose labels are complete then,
# and the recalibrated version is judged on the scores made after that date.
DECIDED = "2019-01-01"
WINDOW = ("2017-01-01", "2017-12-31")
SCENARIOS = {
    "none": (None, None),
    "visit rate x0.6": ({"from_year": 6, "visit_rate_ratio": 0.6}, "activity"),
    "HbA1c assay +0.3": ({"from_year": 6, "lab_offset": {"hba1c": 0.3}}, "labs"),
    "statin recoded": ({"from_year": 6, "recode": {"RxNorm/83367": "RxNorm/617312"}}, "codes"),
    # smaller shifts: how much it takes to be caught (reported, not required)
    "visit rate x0.85": ({"from_year": 6, "visit_rate_ratio": 0.85}, "activity"),
    "HbA1c assay +0.1": ({"from_year": 6, "lab_offset": {"hba1c": 0.1}}, "labs"),
    "statin recoded 20%": ({"from_year": 6, "recode": {"RxNorm/83367": "RxNorm/617312"}, "recode_share": 0.2}, "codes"),
}


def drift(n_subjects: int, seeds: int) -> None:
    from twinml.monitoring import MonitorPolicy, compare_panels, profile_events
    from twinml.simulate import simulate

    policy, sensitive = MonitorPolicy(), MonitorPolicy(min_psi=SENSITIVE_PSI)
    rows = []
    for s in range(seeds):
        reference = profile_events(simulate(n_subjects=n_subjects, seed=100 + s).events, AS_OF)
        for name, (knobs, wanted) in SCENARIOS.items():
            current = profile_events(simulate(n_subjects=n_subjects, seed=200 + s, drift=knobs).events, AS_OF)
            t = time.perf_counter()
            comparison = compare_panels(reference, current, policy)
            flagged = {g["group"]: g["flagged"] for g in comparison["groups"] if g["drifted"]}
            unseen = comparison["unseen_codes"]["rate"]
            ok = (not flagged and unseen <= 0.01) if wanted is None else wanted in flagged
            strict = compare_panels(reference, current, sensitive)
            also = [g["group"] for g in strict["groups"] if g["drifted"]]
            rows.append(
                {
                    "seed": s,
                    "scenario": name,
                    "flagged groups": "; ".join(f"{g}: {', '.join(f[:2])}" for g, f in flagged.items()) or "none",
                    "largest PSI": round(max(f["psi"] for f in comparison["features"]), 3),
                    "unseen-code rate": round(unseen, 4),
                    "as planted": "yes" if ok else "NO",
                    f"groups flagged at min_psi {SENSITIVE_PSI}": ", ".join(also) or "none",
                    "compare s": round(time.perf_counter() - t, 1),
                }
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    summary = table.groupby("scenario", sort=False)["as planted"].apply(lambda x: f"{(x == 'yes').sum()}/{len(x)}")
    print(summary.to_string())


def _train(root: Path, meds: Path, uri: str) -> None:
    from twinml.config import load_config
    from twinml.pipeline import train

    config = load_config(
        {
            "name": "monitor-degrade",
            "seed": 0,
            "data": {"source": "meds", "path": str(meds)},
            "task": {
                "name": "t2d-yearly",
                "outcomes": {"t2d": {"codes": ["SNOMED/44054006"]}},
                "horizons_days": [365],
                "prediction_times": {"strategy": "yearly", "start": "2012-01-01", "every_days": 91},
                "split": {"strategy": "temporal", "train_before": TRAIN_BEFORE, "test_from": TEST_FROM},
            },
            "model": {"kind": "lightgbm"},
            "evaluation": {"splits": ["held_out_same_period"], "n_bootstrap": 0},
            "tracking": {"experiment": "monitor-bench", "register_as": "t2d-monitored"},
        }
    )
    train(config, tracking_uri=uri)


def _score_quarters(version: int, meds: Path, out: Path, uri: str, quarters) -> list[Path]:
    from twinml.scoring import score

    files = []
    for q in quarters:
        f = out / f"v{version}-{q.date()}.parquet"
        if not f.exists():
            score(f"models:/t2d-monitored/{version}", meds, q, f, tracking_uri=uri)
        files.append(f)
    return files


def _held_out_panel(meds: Path, panel: Path) -> None:
    """A copy of ``meds`` with its held-out subjects only (the subject splits say which)."""
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    splits = pd.read_parquet(meds / "metadata" / "subject_splits.parquet")
    keep = splits.loc[splits["split"] == "held_out", "subject_id"].to_numpy()
    shutil.copytree(meds / "metadata", panel / "metadata")
    (panel / "data").mkdir(parents=True)
    for f in sorted((meds / "data").rglob("*.parquet")):
        table = pq.read_table(f)
        part = table.filter(pc.is_in(table.column("subject_id"), value_set=pa_array(keep)))
        if part.num_rows:
            pq.write_table(part, panel / "data" / f.name)


def pa_array(values):
    import pyarrow as pa

    return pa.array(values)


def degrade(n_subjects: int) -> None:
    import numpy as np

    from twinml.evaluation import poisson_interval
    from twinml.monitoring import recalibrate, run_monitor
    from twinml.simulate import simulate

    root = CACHE / f"monitor-degrade-{n_subjects}"
    meds, panel = root / "meds", root / "panel"
    if not (meds / "metadata" / "dataset.json").exists():
        knobs = {"from_year": SHIFT_YEAR, "hazard_ratio": {"t2d": 2.0}}
        simulate(n_subjects=n_subjects, seed=7, years=YEARS, drift=knobs, split_fractions=(0.45, 0.05, 0.5)).write(meds)
    if not (panel / "data").exists():
        _held_out_panel(meds, panel)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    if not (root / "trained").exists():
        _train(root, meds, uri)
        (root / "trained").touch()
    meds = panel  # the deployed panel: the subjects the model never trained on
    (root / "scores").mkdir(exist_ok=True)
    quarters = pd.date_range("2013-01-01", LAST_QUARTER, freq="QS")
    t = time.perf_counter()
    v1 = _score_quarters(1, meds, root / "scores", uri, quarters)
    print(f"scored {len(v1)} quarters with version 1 in {time.perf_counter() - t:.0f}s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_monitor(
            history=v1, outcomes=meds, model_uri="models:/t2d-monitored/1", tracking_uri=uri, out=Path(tmp) / "m"
        )
    print(_table(res.report["performance"]["rows"], "version 1"))
    print(res.report["performance"]["recommendations"])
    report = recalibrate("models:/t2d-monitored/1", meds, start=WINDOW[0], end=WINDOW[1], tracking_uri=uri)
    print(f"recalibrated: version {report.version}, {report.updates}")
    after = [q for q in quarters if q >= pd.Timestamp(DECIDED)]
    v2 = _score_quarters(int(report.version), meds, root / "scores", uri, after)
    old = [f for f, q in zip(v1, quarters) if q >= pd.Timestamp(DECIDED)]
    for label, files in ((f"version 1, from {DECIDED}", old), (f"version {report.version}, from {DECIDED}", v2)):
        res = run_monitor(history=files, outcomes=meds, model_uri="models:/t2d-monitored/1", tracking_uri=uri)
        rows = [r for r in res.report["performance"]["rows"] if not r["suppressed"]]
        print(_table(rows, label))
        events = sum(r["events"] for r in rows)
        expected = sum(r["n"] * r["mean_risk"] for r in rows)
        lo, hi = poisson_interval(np.array([float(events)]))
        oe = f"{events / expected:.3f} [{lo[0] / expected:.3f}, {hi[0] / expected:.3f}]"
        print(f"pooled over {len(rows)} quarters: O/E {oe}")


def _table(rows, title) -> str:
    df = pd.DataFrame(rows)
    cols = [
        "period",
        "n",
        "events",
        "auroc",
        "auroc_lo",
        "auroc_hi",
        "observed_expected",
        "oe_lo",
        "oe_hi",
        "calibration_slope",
    ]
    return f"\n{title}\n" + df[[c for c in cols if c in df]].round(3).to_string(index=False)


def scale(n_subjects: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from twinml.monitoring import MonitorPolicy, run_monitor

    tiles = -(-n_subjects // 100_000)
    panels, written = {}, False
    for name, seed in (("reference", 0), ("current", 1)):
        base = simulated(100_000, seed)
        path = CACHE / f"monitor-scale-{n_subjects}-{name}"
        if not (path / "done").exists():
            (path / "data").mkdir(parents=True, exist_ok=True)
            for f in sorted((base / "data").rglob("*.parquet")):
                table = pq.read_table(f)
                for k in range(tiles):
                    sid = pa.array(table.column("subject_id").to_numpy() + k * 10_000_000, pa.int64())
                    out = path / "data" / f"{f.parent.name}-{f.stem}-{k}.parquet"
                    pq.write_table(table.set_column(0, "subject_id", sid), out)
            (path / "done").touch()
            written = True
        panels[name] = path
    if written:
        print("panels written; run again to measure (this process's peak memory includes the writing)")
        return
    t = time.perf_counter()
    res = run_monitor(
        panels["reference"], panels["current"], policy=MonitorPolicy(), reference_as_of=AS_OF, current_as_of=AS_OF
    )
    seconds = time.perf_counter() - t
    print(
        f"{res.report['reference']['subjects']:,} vs {res.report['current']['subjects']:,} subjects in the window "
        f"(panels of {tiles * 100_000:,}): {seconds:.1f}s, peak RSS {peak_rss_gb():.2f} GB; "
        f"flagged: {[g['group'] for g in res.report['groups'] if g['drifted']] or 'none'}"
    )


def synthea() -> None:
    from twinml.monitoring import run_monitor

    meds = CACHE / "synthea-dev-meds"
    if not (meds / "data").exists():
        sys.exit(f"{meds} is missing: run benchmarks/realdata.py once (it ingests the Synthea dev population)")
    t = time.perf_counter()
    res = run_monitor(meds, meds, reference_as_of="2014-12-31 23:59:59", current_as_of="2019-12-31 23:59:59")
    ref, cur = res.report["reference"]["subjects"], res.report["current"]["subjects"]
    print(f"{time.perf_counter() - t:.1f}s; subjects in the window {ref:,} -> {cur:,}")
    for g in res.report["groups"]:
        worst = f"{g['worst']['feature']} {g['worst']['psi']:.3f}"
        print(f"{g['group']}: {g['tested']} tested, {len(g['flagged'])} flagged; largest PSI {worst}")
    flagged = sorted((f for f in res.report["features"] if f["flagged"]), key=lambda f: -f["psi"])
    for f in flagged:
        what = f"{f['feature']} ({f.get('description') or ''})"
        print(f"  {f['group']:<10} {what[:70]:<70} PSI {f['psi']:.3f}  p_adj {f['p_adjusted']:.4f}")
    print(f"unseen-code rate {res.report['unseen_codes']['rate']:.4f}; passed: {res.passed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["drift", "degrade", "scale", "synthea"])
    parser.add_argument("--n-subjects", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    if args.what == "drift":
        drift(args.n_subjects or 20_000, args.seeds)
    elif args.what == "degrade":
        degrade(args.n_subjects or 20_000)
    elif args.what == "synthea":
        synthea()
    else:
        scale(args.n_subjects or 1_000_000)


if __name__ == "__main__":
    main()
