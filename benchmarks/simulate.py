"""Simulator speed at scale: 100,000 subjects (~10^7 events) should take under 2 minutes on 2 cores.

Run: .venv/bin/python benchmarks/simulate.py [N_SUBJECTS]
"""

import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_gb

from twinml.simulate import simulate

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


def main():
    t = time.perf_counter()
    cohort = simulate(n_subjects=N, seed=0, progress=lambda m: print(f"  [{time.perf_counter() - t:6.1f}s] {m}"))
    sim_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        t2 = time.perf_counter()
        cohort.write(Path(d) / "meds")
        write_s = time.perf_counter() - t2
    print(f"subjects {N:,}; events {cohort.events.num_rows:,}; ground-truth rows {len(cohort.truth):,}")
    print(
        f"simulate {sim_s:.1f}s + write {write_s:.1f}s = {sim_s + write_s:.1f}s (budget 120 s); "
        f"peak RSS {peak_rss_gb():.2f} GB"
    )


if __name__ == "__main__":
    main()
