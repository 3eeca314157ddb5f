"""twinml beside MEDS-Tab on real-shaped records: the Synthea population in ../shared/synthea-dev.

    .venv/bin/python benchmarks/realdata.py [--models lightgbm,logistic] [--medstab] [--n-trials 20]

1. Ingests ``../shared/synthea-dev`` (its CSV form) with ``twinml ingest``: subjects split 60/20/20
   (seed 0) into ``train`` / ``tuning`` / ``held_out``, cached under ``benchmarks/.cache``.
2. Builds the task family of the issue "Real records, real rivals" as MEDS label files (the
   ``LabelSchema`` ACES writes), one per task: a prediction time every 31 December 23:59:59 from 1990
   to 2024; adults (>= 18) alive at t with an encounter in the 3 years up to t and no diagnosis of
   the condition at or before t; label = first diagnosis in (t, t + 365 days].
3. Trains twinml's models on those files (``task.labels``, one model for all tasks; early stopping
   and calibration on the tuning split) and, with ``--medstab``, MEDS-Tab 0.2.0 itself (its XGBoost,
   windows 30d/365d/full, its default aggregations, 20 tuning trials a task) in a virtualenv of its
   own, on the same rows and split.
4. Prints per task and model: held-out rows, positives, AUROC with a 95 % subject-bootstrap
   interval, ECE (equal-mass, 10 bins), and fit times; and twinml's featurization time against
   MEDS-Tab's tabularization.

Choose on the tuning split (``--report tuning``) or, less noisily, on out-of-fold risks of the train and
tuning subjects (``--report cv``); the held-out split is for the final figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE  # noqa: E402

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "synthea-dev"
TASKS = {  # name -> SNOMED codes of the diagnosis
    "t2d": ["44054006"],
    "htn": ["59621000"],
    "ckd": ["431855005", "431856006", "433144002", "431857002", "46177005"],
    "mi": ["22298006", "401314000", "401303003"],
    "ihd": ["414545008"],
    "prediabetes": ["714628002"],
    "stroke": ["230690007"],
    "hf": ["88805009", "84114007"],
    "af": ["49436004"],
}
MAIN = ("t2d", "htn", "ckd", "mi", "ihd")
HORIZON = 365
_US_DAY = 86_400 * 1_000_000


def _digest(files) -> str:
    """SHA-256 over the given files' relative names and bytes (sorted), as hex."""
    import hashlib

    h = hashlib.sha256()
    for root, f in sorted(files, key=lambda rf: str(rf[1].relative_to(rf[0]))):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _ingest_digest() -> str:
    """What the cached MEDS dataset depends on: twinml's ingest and MEDS-writing code (the CSV form
    ``synthea-dev-csv`` made by ``../shared/synthea-dev/to_csv.py`` is kept: that script is read-only)."""
    pkg = Path(__file__).resolve().parents[1] / "twinml"
    files = [f for sub in ("ingest", "data") for f in (pkg / sub).rglob("*.py")] + [
        pkg / "_io.py",
        pkg / "_validation.py",
    ]
    return _digest([(pkg, f) for f in files])


def data_digest(root: Path) -> str:
    """A digest of a MEDS dataset's event files (what MEDS-Tab's cached results depend on)."""
    return _digest([(root, f) for f in (root / "data").rglob("*.parquet")])


def meds_dataset(synthea: Path = SYNTHEA, progress=print) -> Path:
    """The Synthea population as a MEDS dataset, ingested once and reused until twinml's ingest or
    MEDS-writing code changes (then ingested again from the cached CSV form)."""
    import shutil

    out = CACHE / "synthea-dev-meds"
    stamp = CACHE / "synthea-dev-meds.ingest-digest"
    want = _ingest_digest()
    if (out / "metadata" / "dataset.json").exists():
        if stamp.exists() and stamp.read_text() == want:
            return out
        progress(f"{out}: twinml's ingest code changed since it was made (or it has no digest); ingesting again")
        shutil.rmtree(out)
    from twinml.ingest import ingest

    csv = CACHE / "synthea-dev-csv"
    if not (csv / "patients.csv").exists():
        subprocess.run([sys.executable, str(synthea / "to_csv.py"), str(csv)], check=True)
    t0 = time.perf_counter()
    ingest(
        "synthea-csv", csv, out, reference_time="2026-01-01", seed=0, split_fractions=(0.6, 0.2, 0.2), progress=progress
    )
    stamp.write_text(want)
    progress(f"ingested {synthea} -> {out} in {time.perf_counter() - t0:.0f}s")
    return out


def task_label_files(
    events: pd.DataFrame, encounter_codes, out: Path, *, years=range(1990, 2025), min_age_years=18.0, lookback_years=3
) -> dict[str, Path]:
    """One MEDS label file per task (the rules in the module docstring), vectorised over subjects."""
    out.mkdir(parents=True, exist_ok=True)
    ev = events.dropna(subset=["time"])
    code = ev["code"].astype(str).to_numpy()
    sid, t_ev = ev["subject_id"].to_numpy(np.int64), ev["time"].to_numpy("datetime64[us]").astype(np.int64)
    first = lambda mask: pd.Series(t_ev[mask]).groupby(sid[mask]).min()  # noqa: E731
    subjects = np.unique(events["subject_id"].to_numpy(np.int64))
    birth = first(code == "MEDS_BIRTH").reindex(subjects).to_numpy(np.float64)
    death = first(code == "MEDS_DEATH").reindex(subjects).to_numpy(np.float64)
    times = np.array([np.datetime64(f"{y}-12-31T23:59:59", "us").astype(np.int64) for y in years])
    lookback = np.array([np.datetime64(f"{y - lookback_years}-12-31T23:59:59", "us").astype(np.int64) for y in years])
    s = np.repeat(np.arange(subjects.size), times.size)
    k = np.tile(np.arange(times.size), subjects.size)
    t = times[k]
    enc = np.isin(code, [f"SNOMED/{c}" for c in encounter_codes])
    grid = pd.DataFrame({"sid": subjects[s], "t": t, "row": np.arange(s.size)}).sort_values("t")
    visits = pd.DataFrame({"sid": sid[enc], "t": t_ev[enc], "visit": t_ev[enc]}).sort_values("t")
    last_visit = pd.merge_asof(grid, visits, on="t", by="sid", direction="backward").sort_values("row")
    last_visit = last_visit["visit"].to_numpy(np.float64)
    keep = (
        (t - birth[s] >= min_age_years * 365.25 * _US_DAY)
        & (np.isnan(death[s]) | (death[s] > t))
        & (last_visit > lookback[k])
    )
    files = {}
    for name, codes in TASKS.items():
        dx = first(np.isin(code, [f"SNOMED/{c}" for c in codes])).reindex(subjects).to_numpy(np.float64)
        d = dx[s]
        rows = keep & ~(d <= t)  # no diagnosis at or before t (NaN: never diagnosed)
        label = (d > t) & (d <= t + HORIZON * _US_DAY)
        frame = pd.DataFrame(
            {
                "subject_id": subjects[s[rows]],
                "prediction_time": t[rows].astype("datetime64[us]"),
                "boolean_value": label[rows],
            }
        )
        files[name] = out / f"{name}.parquet"
        frame.to_parquet(files[name], index=False)
    return files


def medstab_results(root, files, *, n_trials, aggs, rerun, progress):
    """MEDS-Tab's held-out predictions and timings, cached beside the labels they were made for."""
    cache = CACHE / "medstab-results"
    # the events and the label rows, not only their shapes: an ingest fix changes events, not label counts
    digest = json.dumps(
        {
            "events": data_digest(root),
            "labels": _digest([(f.parent, f) for f in files.values()]),
            "n_trials": n_trials,
            "aggs": aggs,
        }
    )
    if not rerun and (cache / "summary.json").exists():
        summary = json.loads((cache / "summary.json").read_text())
        if summary["labels"] == digest:
            progress(f"MEDS-Tab: reusing the results of {summary['date']} in {cache} (--medstab-rerun to redo)")
            for name, task in summary["tasks"].items():
                task["predictions"] = pd.read_parquet(cache / f"{name}.parquet")
            return summary
    from _medstab import ensure_venv, run_medstab

    progress("--- MEDS-Tab 0.2.0")
    venv = CACHE / "meds-tab-venv"
    ensure_venv(venv, progress=progress)
    out = run_medstab(
        root, files, CACHE / "medstab-work", venv_dir=venv, n_trials=n_trials, aggs=aggs, progress=progress
    )
    cache.mkdir(parents=True, exist_ok=True)
    keep = {
        "tabularize_seconds": out["tabularize_seconds"],
        "labels": digest,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "aggs": aggs,
        "value_features_empty": out.get("value_features_empty"),
        "dropped_aggs": out.get("dropped_aggs"),
        "tasks": {},
    }
    for name, task in out["tasks"].items():
        task["predictions"].to_parquet(cache / f"{name}.parquet", index=False)
        keep["tasks"][name] = {
            "fit_seconds": task["fit_seconds"],
            "medstab_held_out_auroc": task.get("medstab_held_out_auroc"),
        }
    (cache / "summary.json").write_text(json.dumps(keep, indent=2, default=str))
    for name, task in keep["tasks"].items():
        task["predictions"] = out["tasks"][name]["predictions"]
    return keep


# tabular kinds: TabularRiskModel's own arguments (the rest of a kind's --params go to its classifier)
_OWN_KEYS = ("windows_days", "aggregates", "min_code_count", "min_text_subjects", "subject_shares")


def fit_twinml(kind, events, task, labels, *, n_trials, progress, params=None):
    from twinml.models import BlendRiskModel, RecordRiskModel, SequenceRiskModel, TabularRiskModel

    train = labels[labels["split"] == "train"].reset_index(drop=True)
    tune = labels[labels["split"] == "tuning"].reset_index(drop=True)
    params = dict(params or {})
    if kind == "record":
        model = RecordRiskModel(calibration="platt", **params)
    elif kind == "blend":
        model = BlendRiskModel(calibration="platt", **params)
    elif kind in ("gru", "transformer"):
        model = SequenceRiskModel(kind=kind, calibration="platt", **params)
    else:
        # Platt scaling on the tuning split: monotone, so it leaves AUROC as it is (isotonic would tie
        # risks and, judged on the split it was fitted on, flatter the tuning figures)
        own = {k: params.pop(k) for k in _OWN_KEYS if k in params}
        model = TabularRiskModel(
            kind=kind,
            calibration="sigmoid",
            n_trials=n_trials if kind == "lightgbm" else 0,
            model_params=params or None,
            **own,
        )
    t0 = time.perf_counter()
    model.fit(events, train, tuning_labels=tune, progress=progress)
    return model, time.perf_counter() - t0


def cv_folds(labels, n_folds, seed=0):
    """Each non-held-out row's fold (0..n_folds-1), by subject (a seeded shuffle of the train and tuning
    subjects); held-out rows get -1 and are never read."""
    dev = labels["split"] != "held_out"
    subjects = np.unique(labels.loc[dev, "subject_id"].to_numpy())
    fold_of = pd.Series(np.random.default_rng(seed).permutation(subjects.size) % n_folds, index=subjects)
    return np.where(dev, labels["subject_id"].map(fold_of).fillna(-1).to_numpy(), -1).astype(int)


def fit_cv(kind, events, task, labels, *, n_folds, n_trials, progress, params=None, blend_weights=()):
    """Out-of-fold risks over the train and tuning subjects: for each fold, the model trains on the
    other folds and early-stops and calibrates on this one. A less noisy place to choose than the one
    tuning split (every train/tuning subject is scored once); the held-out split is not read.

    ``blend_weights`` (blend only): also the blend's uncalibrated risks at each of these record weights,
    from the same fitted members (its logit is linear in theirs and calibration is monotone, so their
    AUROC is the recalibrated blend's), as ``{weight: risks}``."""
    fold = cv_folds(labels, n_folds)
    dev = labels[fold >= 0].reset_index(drop=True)
    fold = fold[fold >= 0]
    parts, seconds, by_weight = [], 0.0, {w: [] for w in blend_weights}
    for f in range(n_folds):
        cv = dev.assign(split=np.where(fold == f, "tuning", "train"))
        progress(f"fold {f + 1}/{n_folds}: {int((fold == f).sum()):,} rows scored")
        model, fit_s = fit_twinml(kind, events, task, cv, n_trials=n_trials, progress=progress, params=params)
        rows = cv[fold == f]
        index = rows[["subject_id", "prediction_time"]]
        parts.append(model.predict_risk(events, index).set_index(rows.index))
        for w, risk in (model.predict_risk_at_weights(events, index, blend_weights) if blend_weights else {}).items():
            by_weight[w].append(risk.set_index(rows.index))
        seconds += fit_s
    risks = pd.concat(parts).sort_index()
    return dev, risks, fold, seconds / n_folds, {w: pd.concat(got).sort_index() for w, got in by_weight.items()}


def score_folds(labels, risks, fold, columns):
    """Per task: AUROC averaged over the folds, with the lowest and highest fold as its range (pooling
    the folds' risks would mix calibrators fitted on different folds), ECE averaged, rows and positives
    summed."""
    per = [
        score(labels[fold == f].reset_index(drop=True), risks[fold == f].reset_index(drop=True), columns, n_boot=0)
        for f in np.unique(fold)
    ]
    cat = pd.concat(per)
    by = cat.groupby(level=0)
    out = pd.DataFrame({"n": by["n"].sum(), "positives": by["positives"].sum(), "ece": by["ece"].mean()})
    out["auroc"], out["auroc_lo"], out["auroc_hi"] = by["auroc"].mean(), by["auroc"].min(), by["auroc"].max()
    return out.loc[list(columns)]


def paired_differences(labels, risks_a, risks_b, columns, *, n_boot, seed=0):
    """AUROC of ``risks_a`` minus that of ``risks_b`` on the same rows, per task and for the mean of the
    five main tasks, with 95 % intervals from one subject bootstrap shared by both models and every task
    (so the intervals are of the difference itself, narrower than two separate intervals suggest)."""
    from sklearn.metrics import roc_auc_score

    subject = labels["subject_id"].to_numpy()
    subjects, inverse = np.unique(subject, return_inverse=True)
    rows_of = pd.Series(np.arange(subject.size)).groupby(inverse).apply(np.asarray).to_numpy()
    main = [c for c in columns if c.removesuffix(f"_{HORIZON}d") in MAIN]

    def diffs(rows):
        out = {}
        for c in columns:
            y = labels[c].to_numpy()[rows]
            known = pd.notna(y)
            yk = y[known].astype(bool)
            if yk.all() or not yk.any():
                return None
            a, b = risks_a[c].to_numpy()[rows][known], risks_b[c].to_numpy()[rows][known]
            out[c] = roc_auc_score(yk, a) - roc_auc_score(yk, b)
        out["mean of the five main tasks"] = float(np.mean([out[c] for c in main]))
        return out

    point = diffs(np.arange(subject.size))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, subjects.size, subjects.size)
        d = diffs(np.concatenate(rows_of[pick]))
        if d is not None:
            boots.append(d)
    return {
        k: (v, *np.quantile([b[k] for b in boots], [0.025, 0.975])) if boots else (v, np.nan, np.nan)
        for k, v in (point or {}).items()
    }


def score(labels, risks, columns, *, n_boot, seed=0):
    from twinml.evaluation import evaluate_risks

    return evaluate_risks(labels, risks, columns=columns, n_boot=n_boot, seed=seed).set_index("label")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        default="lightgbm,logistic",
        help="twinml models, comma-separated "
        "(lightgbm, logistic, hist_gb, record, blend, gru, transformer; record: the whole-record GRU; "
        "blend: that GRU and LightGBM as one model)",
    )
    p.add_argument("--n-trials", type=int, default=0, help="optuna trials per task for lightgbm (0: defaults)")
    p.add_argument("--medstab", action="store_true", help="also run MEDS-Tab 0.2.0 (creates its virtualenv)")
    p.add_argument("--medstab-trials", type=int, default=20)
    p.add_argument(
        "--medstab-aggs",
        default="static/present,code/count",
        help="MEDS-Tab aggregations. Its value/* ones are left out by default: MEDS-Tab 0.2.0 as shipped "
        "leaves every value/* column empty (a bug in its code-name filter), so they add no feature, "
        "only about three quarters of its tabularization time (pass the full list to include them)",
    )
    p.add_argument(
        "--medstab-rerun",
        action="store_true",
        help="rerun MEDS-Tab even if its results for these labels are cached (it takes the better part of an hour)",
    )
    p.add_argument(
        "--report",
        default="held_out",
        choices=["tuning", "held_out", "cv"],
        help="the split the table reports (choose on tuning or cv; report held_out once). cv: --folds subject "
        "folds of the train and tuning subjects, each scored by a model trained on the others (and early-stopped "
        "and calibrated on it, so its ECE flatters; read its AUROC): AUROC averaged over folds with the lowest "
        "and highest fold, fit time per fold",
    )
    p.add_argument("--folds", type=int, default=5, help="subject folds for --report cv")
    p.add_argument(
        "--blend-weights",
        type=lambda v: [float(w) for w in v.split(",")],
        default=[],
        help="with --report cv and the blend: also score it at these record weights (comma-separated), from the "
        "same fitted members, before calibration (AUROC as calibrated; ECE not)",
    )
    p.add_argument(
        "--params",
        type=json.loads,
        default={},
        help='JSON: parameters per model kind, e.g. \'{"record": {"n_last_values": 32}}\' (tabular '
        "kinds take TabularRiskModel's windows_days, aggregates, min_code_count, min_text_subjects, "
        "subject_shares and their estimator's params)",
    )
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--json", type=Path, help="write every figure here as JSON")
    args = p.parse_args(argv)
    if args.blend_weights and (args.report != "cv" or "blend" not in args.models.split(",")):
        p.error("--blend-weights scores the blend's cv folds: it needs --report cv and blend in --models")
    say = lambda msg: print(msg, flush=True)  # noqa: E731

    from twinml.cohort import TaskDefinition, build_labels
    from twinml.data import read_meds, read_subject_splits
    from twinml.features import TabularFeaturizer

    root = meds_dataset(progress=say)
    events = read_meds(root)
    say(f"{len(events):,} events, {events['subject_id'].nunique():,} subjects")
    enc = pd.read_parquet(SYNTHEA / "encounters.parquet", columns=["CODE"])["CODE"].dropna().astype(str).unique()
    files = task_label_files(events, enc, CACHE / "synthea-dev-labels")
    task = TaskDefinition(name="synthea-1y", labels={k: str(v) for k, v in files.items()}, horizons_days=[HORIZON])
    cohort = build_labels(events, task=task, subject_splits=read_subject_splits(root))
    labels = cohort.labels
    columns = task.label_columns
    say(f"labels: {len(labels):,} prediction rows; {cohort.label_counts.to_string(index=False)}")

    train = labels[labels["split"] == "train"].reset_index(drop=True)
    fz = TabularFeaturizer().fit(events[events["subject_id"].isin(train["subject_id"].unique())])
    t0 = time.perf_counter()
    X = fz.transform(events, labels)
    featurize_s = time.perf_counter() - t0
    say(
        f"twinml featurization: {X.shape[0]:,} rows x {X.shape[1]:,} columns, {X.nnz:,} non-zeros in {featurize_s:.1f}s"
    )

    report = labels[labels["split"] == args.report].reset_index(drop=True)
    results = {"featurize_seconds": featurize_s, "rows": int(len(labels)), "models": {}}
    kept_risks = {}  # model -> its risks on the reported rows
    for kind in filter(None, args.models.split(",")):
        say(f"--- twinml {kind}")
        if args.report == "cv":
            if args.medstab:
                p.error("--medstab scores the held-out split only; not with --report cv")
            report, risks, fold, fit_s, weighted = fit_cv(
                kind,
                events,
                task,
                labels,
                n_folds=args.folds,
                n_trials=args.n_trials,
                progress=say,
                params=args.params.get(kind),
                blend_weights=args.blend_weights if kind == "blend" else (),
            )
            results["models"][f"twinml {kind}"] = {
                "fit_seconds": fit_s,
                "metrics": score_folds(report, risks, fold, columns),
            }
            for w, r in weighted.items():
                results["models"][f"blend, record_weight {w:g} (uncalibrated: read AUROC)"] = {
                    "fit_seconds": fit_s,
                    "metrics": score_folds(report, r, fold, columns),
                }
            continue
        model, fit_s = fit_twinml(
            kind, events, task, labels, n_trials=args.n_trials, progress=say, params=args.params.get(kind)
        )
        risks = model.predict_risk(events, report[["subject_id", "prediction_time"]])
        best = getattr(model, "best_epoch_", None)
        if best is not None:
            say(f"twinml {kind}: best epoch {best}, tuning loss {min(h['tuning_loss'] for h in model.history_):.5f}")
        results["models"][f"twinml {kind}"] = {
            "fit_seconds": fit_s,
            "metrics": score(report, risks, columns, n_boot=args.n_boot),
        }
        kept_risks[f"twinml {kind}"] = risks
        say(f"twinml {kind}: fit {fit_s:.1f}s")

    base = "twinml lightgbm"
    if base in kept_risks and len(kept_risks) > 1:  # what the issue compares: each other model against LightGBM
        results["versus_lightgbm"] = {
            name: paired_differences(report, r, kept_risks[base], columns, n_boot=args.n_boot)
            for name, r in kept_risks.items()
            if name != base
        }
    if args.medstab:
        out = medstab_results(
            root,
            files,
            n_trials=args.medstab_trials,
            aggs=args.medstab_aggs.split(","),
            rerun=args.medstab_rerun,
            progress=say,
        )
        results["medstab_tabularize_seconds"] = out["tabularize_seconds"]
        per_task = {}
        medstab_risks = report[["subject_id", "prediction_time"]].copy()
        for name, res in out["tasks"].items():
            pred = res["predictions"]
            col = f"{name}_{HORIZON}d"
            merged = report[["subject_id", "prediction_time", col]].merge(
                pred[["subject_id", "prediction_time", "predicted_boolean_probability"]],
                on=["subject_id", "prediction_time"],
                how="left",
            )
            if merged.loc[merged[col].notna(), "predicted_boolean_probability"].isna().any():
                raise RuntimeError(f"MEDS-Tab predictions miss rows of task {name}")
            risks = merged[["subject_id", "prediction_time"]].assign(**{col: merged["predicted_boolean_probability"]})
            medstab_risks[col] = risks[col].to_numpy()
            per_task[col] = score(report, risks, [col], n_boot=args.n_boot).iloc[0]
            per_task[col]["fit_seconds"] = res["fit_seconds"]
        results["models"]["MEDS-Tab"] = {
            "fit_seconds": sum(r["fit_seconds"] for r in out["tasks"].values()),
            "metrics": pd.DataFrame(per_task).T,
        }
        results["versus_medstab"] = {
            name: paired_differences(report, r, medstab_risks, columns, n_boot=args.n_boot)
            for name, r in kept_risks.items()
        }
    _print(results, columns, args.report)
    if args.json:
        args.json.write_text(json.dumps(_jsonable(results), indent=2))


def _print(results, columns, split):
    models = results["models"]
    if split == "cv":
        print("\n## Figures (subject folds of the train and tuning subjects), 1-year onset; AUROC, mean over folds")
        print("[lowest, highest fold] / ECE, mean over folds (each fold calibrated on itself: it flatters)\n")
    else:
        print(f"\n## Figures ({split} split), 1-year onset; AUROC [95% subject-bootstrap CI] / ECE\n")
    print("| task | rows | positives | " + " | ".join(models) + " |")
    print("|---|---|---|" + "---|" * len(models))
    for c in columns:
        first = next(iter(models.values()))["metrics"].loc[c]
        cells = []
        for m in models.values():
            r = m["metrics"].loc[c]
            cells.append(f"{r['auroc']:.3f} [{r['auroc_lo']:.3f}, {r['auroc_hi']:.3f}] / {r['ece']:.4f}")
        print(
            f"| {c.removesuffix(f'_{HORIZON}d')} | {int(first['n']):,} | {int(first['positives'])} | "
            + " | ".join(cells)
            + " |"
        )
    for label, subset in (("mean of the five main tasks", [f"{t}_{HORIZON}d" for t in MAIN]), ("mean of all", columns)):
        means = [f"{m['metrics'].loc[subset, 'auroc'].mean():.3f}" for m in models.values()]
        print(f"| {label} | | | " + " | ".join(means) + " |")
    per = " per fold" if split == "cv" else ""
    print(f"| fit, all tasks (s){per} | | | " + " | ".join(f"{m['fit_seconds']:.0f}" for m in models.values()) + " |")
    for key, title in (("versus_medstab", "twinml minus MEDS-Tab"), ("versus_lightgbm", "minus twinml lightgbm")):
        if results.get(key):
            _print_differences(results[key], title)
    print(f"\ntwinml featurization {results['featurize_seconds']:.1f}s", end="")
    if "medstab_tabularize_seconds" in results:
        t = results["medstab_tabularize_seconds"]
        print(f"; MEDS-Tab tabularization {t:.0f}s ({t / results['featurize_seconds']:.0f}x)", end="")
    print()


def _print_differences(vs, title):
    print(f"\n## {title}, AUROC [95% paired subject-bootstrap CI]\n")
    print("| task | " + " | ".join(vs) + " |")
    print("|---|" + "---|" * len(vs))
    for key in next(iter(vs.values())):
        cells = [f"{d[key][0]:+.3f} [{d[key][1]:+.3f}, {d[key][2]:+.3f}]" for d in vs.values()]
        print(f"| {key.removesuffix(f'_{HORIZON}d')} | " + " | ".join(cells) + " |")


def _jsonable(obj):
    if isinstance(obj, pd.DataFrame):
        return json.loads(obj.reset_index().to_json(orient="records"))
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


if __name__ == "__main__":
    main()
