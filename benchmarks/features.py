"""Tabular feature build time and memory for 100,000 simulated subjects (~10^7 events).

Reference measured in the same run: the single-window, three-aggregate pandas groupby
(count/last/mean per subject x code) that MEASURED.md quotes at ~1.3 s on this machine kind.
Run: .venv/bin/python benchmarks/features.py [N_SUBJECTS]
"""

import subprocess
import sys

from _common import simulated, timed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
CHILD = r"""
import sys, time
sys.path.insert(0, "benchmarks")
from _common import peak_rss_gb
from twinml.data import read_meds, read_subject_splits
from twinml.cohort import TaskDefinition, build_labels
from twinml.features import TabularFeaturizer
root = sys.argv[1]
ev = read_meds(root)
task = TaskDefinition(name="b", outcomes={"mi": {"codes": ["SNOMED/22298006"]}}, horizons_days=[365],
                      prediction_times={"start": "2012-01-01"})
lab = build_labels(ev, task=task, subject_splits=read_subject_splits(root)).labels
base = peak_rss_gb()
t = time.perf_counter()
f = TabularFeaturizer(windows_days=(30, 365, None)).fit(ev)
X = f.transform(ev, lab)
print(f"{time.perf_counter() - t:.2f} {peak_rss_gb():.2f} {base:.2f} {X.shape[0]} {X.shape[1]} {X.nnz} {len(ev)}")
"""


def main():
    root = simulated(N)
    from twinml.cohort import TaskDefinition, build_labels
    from twinml.data import read_meds, read_subject_splits
    from twinml.features import TabularFeaturizer

    ev = read_meds(root)
    task = TaskDefinition(
        name="b",
        outcomes={"mi": {"codes": ["SNOMED/22298006"]}},
        horizons_days=[365],
        prediction_times={"start": "2012-01-01"},
    )
    lab = build_labels(ev, task=task, subject_splits=read_subject_splits(root)).labels
    dyn = ev[ev["time"].notna()]

    def reference():
        return dyn.groupby(["subject_id", "code"], observed=True)["numeric_value"].agg(["count", "last", "mean"])

    def ours():
        f = TabularFeaturizer(windows_days=(30, 365, None)).fit(ev)
        return f.transform(ev, lab)

    ref_best, ref_all, _ = timed(reference)
    best, all_runs, X = timed(ours)
    print(f"events: {len(ev):,}  subjects: {N:,}  prediction rows: {len(lab):,}")
    print(
        f"features: {X.shape[1]} columns, {X.nnz:,} non-zeros (windows 30/365/all days; count,last,mean,min,max + "
        "recency)"
    )
    print(
        f"reference pandas groupby (1 window, 3 aggregates, no prediction times): best {ref_best:.2f}s "
        f"{[f'{t:.2f}' for t in ref_all]}"
    )
    print(
        f"twinml fit+transform (3 windows, 5 aggregates + recency, {len(lab):,} prediction times): best {best:.2f}s "
        f"{[f'{t:.2f}' for t in all_runs]}"
    )
    print(f"ratio twinml / reference: {best / ref_best:.1f}x")
    cold = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, check=True)
    secs, peak, base, *_ = cold.stdout.split()
    print(f"fresh process (cold memory): fit+transform {secs}s; peak RSS {peak} GB (events + labels alone: {base} GB)")


if __name__ == "__main__":
    main()
