"""Run MEDS-Tab (``meds-tab==0.2.0``, XGBoost) as an external baseline on a MEDS dataset.

MEDS-Tab is installed into its own virtualenv (it pins its own polars / hydra / xgboost stack), and is
driven only through its command-line tools, exactly as its usage guide describes:

1. ``meds-tab-describe``                 code/feature frequencies           (task-independent)
2. ``meds-tab-tabularize-static``        static/present, static/first       (task-independent)
3. ``meds-tab-tabularize-time-series``   code/*, value/* over each window   (task-independent)
4. ``meds-tab-cache-task``               align labels with the tabularized rows (per task)
5. ``meds-tab-xgboost --multirun``       hydra-optuna sweep, ``n_trials`` XGBoost fits, each scored
                                         on the tuning split; the best one (by tuning AUROC) is reloaded
                                         by MEDS-Tab's evaluation callback, which writes
                                         ``best_trial/held_out_predictions.parquet`` itself.

Layout inside ``work_dir`` (wiped at the start of each run so the timings are honest)::

    meds-tab.log                  stdout/stderr of every MEDS-Tab command
    tasks/<task>/<task>.parquet   the label file (MEDS LabelSchema), as ``input_label_dir``
    tabular/                      MEDS-Tab ``output_dir``: metadata/codes.parquet, tabularize/,
                                  <task>/labels/<split>/<shard>.parquet, <task>/task_cache/
    models/<task>/                ``time_output_model_dir``: sweep_results/<trial>/, best_trial/,
                                  hydra/optimization_results.yaml, sweep_results_summary.parquet

The MEDS dataset must have the standard layout ``data/{train,tuning,held_out}/<shard>.parquet`` (shards
directly in the split folder, rows sorted by subject_id then time); MEDS-Tab reads ``data/`` only.

Behaviour of MEDS-Tab 0.2.0 as shipped (not patched here, on purpose):

* every ``value/*`` matrix is empty: ``get_long_value_df`` matches raw codes against feature names
  ending in ``/value``; ``value_features_empty`` in the result reports it.
* ``code/count`` counts the *timestamps* at which a code occurs within the window, and within each
  (subject, timestamp) group the last event row is skipped (``compute_agg`` uses the inclusive max index
  as an exclusive slice end), so a code that is alone at its timestamp contributes nothing.
* an aggregation with no feature at all (``static/first`` when no static code has a numeric value)
  aborts tabularization, so such aggregations are dropped up front (``dropped_aggs``).

This module has no dependency on twinml; it needs pandas (with pyarrow) on the calling side.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

MEDS_TAB_REQUIREMENT = "meds-tab==0.2.0"

#: MEDS-Tab's default aggregation set (``configs/tabularization/default.yaml`` in 0.2.0).
DEFAULT_AGGS = (
    "static/present",
    "static/first",
    "code/count",
    "value/count",
    "value/sum",
    "value/sum_sqd",
    "value/min",
    "value/max",
)

SPLITS = ("train", "tuning", "held_out")
_LOG_TAIL_LINES = 60

# Run with the MEDS-Tab venv's python: summarises the artefacts MEDS-Tab wrote (JSON on stdout).
_SUMMARY_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
import polars as pl
from omegaconf import OmegaConf

tabular_dir, model_dir = Path(sys.argv[1]), sys.argv[2]
out = {}
if model_dir == "-":
    # nnz / columns of every tabularized matrix, grouped by aggregation ("value/sum", "static/first" ...)
    nnz, cols = {}, {}
    for fp in sorted((tabular_dir / "tabularize").glob("**/*.npz")):
        agg = f"{fp.parent.name}/{fp.stem}"
        npz = np.load(fp)
        nnz[agg] = nnz.get(agg, 0) + int(npz["array"].shape[1])
        cols[agg] = int(npz["shape"][1])
    out["nnz_by_agg"], out["columns_by_agg"] = nnz, cols
    out["n_features_in_metadata"] = pl.read_parquet(tabular_dir / "metadata" / "codes.parquet").height
else:
    model_dir = Path(model_dir)
    opt = model_dir / "hydra" / "optimization_results.yaml"
    if opt.exists():
        res = OmegaConf.to_container(OmegaConf.load(opt))
        out["best_params"], out["best_tuning_auroc_optuna"] = res.get("best_params"), res.get("best_value")
    out["n_trials_logged"] = len(list((model_dir / "sweep_results").glob("*/performance.log")))
print(json.dumps(out))
"""


class MedsTabError(RuntimeError):
    """A MEDS-Tab step failed; the message carries the tail of the log file."""


def _venv_bin(venv_dir: Path) -> Path:
    return Path(venv_dir) / ("Scripts" if os.name == "nt" else "bin")


def ensure_venv(venv_dir: Path, *, python: str = "python3", progress: Callable[[str], None] = print) -> Path:
    """Create ``venv_dir`` with MEDS-Tab installed, once; return the venv's bin directory.

    A stamp file (holding the ``pip freeze`` output) marks a finished install, so an interrupted install
    is redone on the next call.
    """
    venv_dir = Path(venv_dir)
    bin_dir = _venv_bin(venv_dir)
    stamp = venv_dir / ".meds-tab-installed"
    if stamp.exists() and stamp.read_text().startswith(MEDS_TAB_REQUIREMENT + "\n"):
        return bin_dir
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    log = venv_dir.parent / f"{venv_dir.name}-install.log"
    progress(f"meds-tab: creating virtualenv {venv_dir} (log: {log})")
    with open(log, "w") as fh:
        for cmd in (
            [python, "-m", "venv", str(venv_dir)],
            [str(bin_dir / "python"), "-m", "pip", "install", "--upgrade", "pip"],
            [str(bin_dir / "python"), "-m", "pip", "install", MEDS_TAB_REQUIREMENT],
        ):
            fh.write(f"\n$ {' '.join(cmd)}\n")
            fh.flush()
            if subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
                raise MedsTabError(f"installing MEDS-Tab failed: {' '.join(cmd)}\n{_tail(log)}")
    freeze = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    stamp.write_text(MEDS_TAB_REQUIREMENT + "\n" + freeze)
    return bin_dir


def _tail(path: Path, n: int = _LOG_TAIL_LINES) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _hydra_list(values: Sequence[str]) -> str:
    return "[" + ",".join(values) + "]"


def _auroc(y_true: pd.Series, score: pd.Series) -> float:
    """Mann-Whitney AUROC (ties count one half); NaN when only one class is present."""
    y = y_true.astype(bool).to_numpy()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = score.rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class _Runner:
    """Runs MEDS-Tab commands from one venv, appending their output to one log file."""

    def __init__(self, bin_dir: Path, log_path: Path):
        self.bin_dir = bin_dir
        self.log_path = log_path
        self.env = dict(os.environ)
        self.env["PATH"] = f"{bin_dir}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["VIRTUAL_ENV"] = str(bin_dir.parent)
        self.env["HYDRA_FULL_ERROR"] = "1"  # full tracebacks in the log
        self.env.pop("PYTHONPATH", None)
        self.env.pop("PYTHONHOME", None)

    def __call__(self, name: str, *args: str) -> float:
        """Run ``bin/<name> args...``; return its wall time in seconds."""
        cmd = [str(self.bin_dir / name), *args]
        with open(self.log_path, "a") as fh:
            fh.write(f"\n===== {time.strftime('%H:%M:%S')} $ {' '.join(cmd)}\n")
            fh.flush()
            t0 = time.perf_counter()
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env).returncode
            seconds = time.perf_counter() - t0
            fh.write(f"===== exit {rc} after {seconds:.1f}s\n")
        if rc != 0:
            raise MedsTabError(
                f"MEDS-Tab step `{name}` failed (exit {rc}); log {self.log_path}, last lines:\n" + _tail(self.log_path)
            )
        return seconds

    def python_json(self, script: str, *args: str) -> dict:
        out = subprocess.run(
            [str(self.bin_dir / "python"), "-c", script, *args],
            capture_output=True,
            text=True,
            env=self.env,
        )
        if out.returncode != 0:
            raise MedsTabError(f"reading MEDS-Tab outputs failed:\n{out.stderr[-4000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def _parallel_args(n_workers: int) -> list[str]:
    """Hydra args for MEDS-Tab's (rwlock-coordinated) parallel workers, as in its usage guide."""
    if n_workers <= 1:
        return []
    return [
        "--multirun",
        f"worker=range(0,{n_workers})",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_workers}",
    ]


def _usable_aggs(feature_codes_fp: Path, aggs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``aggs`` into those with at least one feature in MEDS-Tab's describe output, and the rest.

    MEDS-Tab aborts on an aggregation without features (e.g. ``static/first`` when no static code carries
    a numeric value: "No static features found. Remove the aggregation function static/first").
    """
    names = pd.read_parquet(feature_codes_fp, columns=["code"])["code"]
    suffix = {"static/present": "/static/present", "static/first": "/static/first", "code": "/code", "value": "/value"}
    used, dropped = [], []
    for agg in aggs:
        sfx = suffix[agg] if agg.startswith("static/") else suffix[agg.split("/")[0]]
        (used if names.str.endswith(sfx).any() else dropped).append(agg)
    return used, dropped


def _write_labels(src: Path, dst: Path) -> int:
    """Copy a MEDS label file, sorted by (subject_id, prediction_time) as polars' join_asof requires."""
    df = pd.read_parquet(src, columns=["subject_id", "prediction_time", "boolean_value"])
    df = df.sort_values(["subject_id", "prediction_time"], kind="stable").reset_index(drop=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(dst, index=False)
    return len(df)


def run_medstab(
    meds_dir: Path,
    label_files: Mapping[str, Path],
    work_dir: Path,
    *,
    venv_dir: Path,
    windows: Sequence[str] = ("30d", "365d", "full"),
    aggs: Sequence[str] = DEFAULT_AGGS,
    n_trials: int = 20,
    seed: int = 0,
    min_code_inclusion_count: int = 10,
    tune_min_code_inclusion_count: bool = False,
    n_workers: int = 1,
    progress: Callable[[str], None] = print,
) -> dict:
    """Tabularize ``meds_dir`` with MEDS-Tab and fit its tuned XGBoost model for every task.

    Args:
        meds_dir: MEDS dataset root (with ``data/{train,tuning,held_out}/*.parquet``).
        label_files: task name -> parquet in the MEDS LabelSchema (subject_id, prediction_time,
            boolean_value); rows of all splits in one file.
        work_dir: scratch directory for MEDS-Tab's outputs (emptied first).
        venv_dir: where MEDS-Tab's virtualenv lives (created on first use).
        windows: MEDS-Tab ``tabularization.window_sizes``.
        aggs: MEDS-Tab ``tabularization.aggs`` (default: its default set).
        n_trials: optuna trials of the hydra sweep per task (``hydra.sweeper.n_trials``).
        seed: seed of the optuna TPE sampler (XGBoost itself runs with its default seed).
        min_code_inclusion_count: code-frequency cut used for tabularization and task caching.
        tune_min_code_inclusion_count: if False (default, as in MEDS-Tab's documented HPO command,
            which passes the same ``tabularization.min_code_inclusion_count`` to every stage) the code
            cut is fixed, which removes it from the sweep. If True, MEDS-Tab's shipped search space also
            samples it per trial from ``tag(log, range(10, 1000000))`` -- which hydra-optuna-sweeper 1.3
            turns into a *uniform* integer (the log tag is ignored for ``range``), so on a dataset whose
            most frequent code has fewer than ~1e5 occurrences most trials keep no code at all and score 0.
        n_workers: parallel MEDS-Tab workers (joblib) for tabularization, caching and the sweep.
        progress: callable taking one status line.

    Returns:
        ``{"tabularize_seconds", "step_seconds", "aggs", "dropped_aggs", "value_features_empty",
        "tabular_summary", "log",
        "tasks": {task: {"predictions", "fit_seconds", "cache_seconds", "sweep_seconds",
        "held_out_auroc", "medstab_held_out_auroc", "medstab_tuning_auroc", "best_params",
        "n_trials_logged", "n_labels", "best_trial_dir"}}}``. ``predictions`` holds the held_out rows that
        MEDS-Tab scored: subject_id, prediction_time, boolean_value, predicted_boolean_probability.
    """
    meds_dir, work_dir = Path(meds_dir).resolve(), Path(work_dir).resolve()
    data_dir = meds_dir / "data"
    for split in SPLITS:
        if not any((data_dir / split).glob("*.parquet")):
            raise FileNotFoundError(f"no MEDS shards in {data_dir / split}")
    for task in label_files:  # task names end up in hydra overrides and paths
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", task):
            raise ValueError(f"task name {task!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]*")

    bin_dir = ensure_venv(Path(venv_dir).resolve(), progress=progress)
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    tabular_dir = work_dir / "tabular"
    run = _Runner(bin_dir, work_dir / "meds-tab.log")

    code_filter = [f"tabularization.min_code_inclusion_count={min_code_inclusion_count}"]
    par = _parallel_args(n_workers)

    # ---- task-independent tabularization ------------------------------------------------------
    steps: dict[str, float] = {}
    progress("meds-tab: describe codes")
    steps["describe"] = run("meds-tab-describe", f"input_dir={data_dir}", f"output_dir={tabular_dir}")
    used_aggs, dropped_aggs = _usable_aggs(tabular_dir / "metadata" / "codes.parquet", aggs)
    if dropped_aggs:
        progress(f"meds-tab: dropping aggregations without any feature in this dataset: {dropped_aggs}")
    common = [
        f"input_dir={data_dir}",
        f"output_dir={tabular_dir}",
        f"tabularization.window_sizes={_hydra_list(windows)}",
        f"tabularization.aggs={_hydra_list(used_aggs)}",
    ]
    progress("meds-tab: tabularize static")
    steps["tabularize_static"] = run("meds-tab-tabularize-static", *common, *code_filter)
    progress("meds-tab: tabularize time series")
    steps["tabularize_time_series"] = run("meds-tab-tabularize-time-series", *par, *common, *code_filter)
    tabularize_seconds = sum(steps.values())
    progress(f"meds-tab: tabularized in {tabularize_seconds:.1f}s")

    tab_summary = run.python_json(_SUMMARY_SCRIPT, str(tabular_dir), "-")
    value_nnz = [v for k, v in tab_summary["nnz_by_agg"].items() if k.startswith("value/")]
    value_empty = bool(value_nnz) and sum(value_nnz) == 0

    # ---- per task: cache labels + rows, then the sweep -----------------------------------------
    tasks: dict[str, dict] = {}
    for task, label_fp in label_files.items():
        label_dir = work_dir / "tasks" / task
        n_labels = _write_labels(Path(label_fp), label_dir / f"{task}.parquet")
        model_dir = work_dir / "models" / task
        progress(f"meds-tab[{task}]: cache task ({n_labels} labels)")
        cache_s = run(
            "meds-tab-cache-task",
            *par,
            *common,
            *code_filter,
            f"input_label_dir={label_dir}",
            f"task_name={task}",
        )
        progress(f"meds-tab[{task}]: xgboost sweep, {n_trials} trials")
        sweep_s = run(
            "meds-tab-xgboost",
            "--multirun",
            *common,
            *([] if tune_min_code_inclusion_count else code_filter),
            f"task_name={task}",
            f"output_model_dir={model_dir}",
            # a fixed path instead of ${now:...}, which each joblib worker would resolve on its own
            f"time_output_model_dir={model_dir}",
            f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.n_jobs={max(n_workers, 1)}",
            f"hydra.sweeper.sampler.seed={seed}",
            f"hydra.launcher.n_jobs={max(n_workers, 1)}",
        )
        tasks[task] = _collect_task(
            run, data_dir, tabular_dir, task, model_dir, Path(label_fp), cache_s, sweep_s, n_labels
        )
        t = tasks[task]
        progress(
            f"meds-tab[{task}]: fit {t['fit_seconds']:.1f}s, held-out AUROC {t['held_out_auroc']:.4f} "
            f"(MEDS-Tab logged {t['medstab_held_out_auroc']:.4f})"
        )

    return {
        "tabularize_seconds": tabularize_seconds,
        "step_seconds": steps,
        "aggs": used_aggs,
        "dropped_aggs": dropped_aggs,
        "value_features_empty": value_empty,
        "tabular_summary": tab_summary,
        "log": str(run.log_path),
        "tasks": tasks,
    }


def _collect_task(
    run: _Runner,
    data_dir: Path,
    tabular_dir: Path,
    task: str,
    model_dir: Path,
    label_fp: Path,
    cache_s: float,
    sweep_s: float,
    n_labels: int,
) -> dict:
    """Read MEDS-Tab's held-out predictions and logged scores for one finished task."""
    best = model_dir / "best_trial"
    pred_fp = best / "held_out_predictions.parquet"
    if not pred_fp.exists():
        # e.g. every trial kept no code ("No codes meet loading criteria, trial returning 0 AUC"): the
        # evaluation callback then only warns, and the command still exits 0.
        raise MedsTabError(
            f"MEDS-Tab's sweep for {task!r} left no {pred_fp} (no trial saved a model?); log "
            f"{run.log_path}, last lines:\n{_tail(run.log_path)}"
        )
    pred = pd.read_parquet(pred_fp)
    cols = ["subject_id", "prediction_time", "boolean_value", "predicted_boolean_probability"]
    pred = pred[cols].reset_index(drop=True)

    # Check the row mapping against the label file we were given: same (subject, time) -> same label,
    # and every held-out label row scored once (MEDS-Tab keeps the first of duplicate rows).
    labels = pd.read_parquet(label_fp, columns=cols[:3]).drop_duplicates(cols[:2], keep="first")
    held_shards = sorted((data_dir / "held_out").glob("*.parquet"))
    held_subjects = pd.concat(pd.read_parquet(fp, columns=["subject_id"]) for fp in held_shards)["subject_id"].unique()
    expected = labels[labels["subject_id"].isin(held_subjects)]
    merged = pred.merge(expected, on=cols[:2], how="outer", suffixes=("", "_given"), indicator=True)
    if (
        len(pred) != len(expected)
        or (merged["_merge"] != "both").any()
        or (merged["boolean_value"].astype(bool) != merged["boolean_value_given"].astype(bool)).any()
    ):
        raise MedsTabError(f"held-out predictions in {pred_fp} do not line up with the labels in {label_fp}")

    perf = pd.read_parquet(model_dir / "sweep_results_summary.parquet")  # sorted by tuning_auc, desc
    info = run.python_json(_SUMMARY_SCRIPT, str(tabular_dir), str(model_dir))
    return {
        "predictions": pred,
        "fit_seconds": cache_s + sweep_s,
        "cache_seconds": cache_s,
        "sweep_seconds": sweep_s,
        "held_out_auroc": _auroc(pred["boolean_value"], pred["predicted_boolean_probability"]),
        "medstab_held_out_auroc": float(perf["test_auc"].iloc[0]),
        "medstab_tuning_auroc": float(perf["tuning_auc"].iloc[0]),
        "best_params": info.get("best_params"),
        "n_trials_logged": info.get("n_trials_logged"),
        "n_labels": n_labels,
        "best_trial_dir": str(best),
    }


if __name__ == "__main__":  # pragma: no cover - manual runs
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("meds_dir", type=Path)
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("--label", action="append", required=True, metavar="TASK=PATH")
    ap.add_argument("--venv", type=Path, required=True)
    ap.add_argument("--n-trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-workers", type=int, default=1)
    a = ap.parse_args()
    res = run_medstab(
        a.meds_dir,
        dict(s.split("=", 1) for s in a.label),
        a.work_dir,
        venv_dir=a.venv,
        n_trials=a.n_trials,
        seed=a.seed,
        n_workers=a.n_workers,
    )
    for t in res["tasks"].values():
        t["predictions"] = f"<{len(t.pop('predictions'))} rows>"
    json.dump(res, sys.stdout, indent=1, default=str)
    print()
