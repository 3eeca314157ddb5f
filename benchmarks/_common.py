"""Helpers shared by the benchmark scripts (not part of `make test`)."""

import resource
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def peak_rss_gb() -> float:
    """Peak resident memory of this process image so far, in GB.

    Reads VmHWM from /proc: ``getrusage().ru_maxrss`` survives fork + exec, so a child started
    from a large benchmark process would report the parent's size (measured: it did).
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(fn, repeat=3):
    """Best and all wall times of ``repeat`` calls (the machine is shared: report the best and the spread)."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), times, out


def simulated(n_subjects: int, seed: int = 0, **settings) -> Path:
    """A cached simulated MEDS directory (created on first use); ``settings`` go to ``simulate``."""
    from twinml.simulate import simulate

    suffix = "".join(f"-{k}={v}" for k, v in sorted(settings.items()))
    path = CACHE / f"sim-{n_subjects}-{seed}{suffix}"
    if not (path / "metadata" / "dataset.json").exists():
        simulate(n_subjects=n_subjects, seed=seed, **settings).write(path, overwrite=True)
    return path
