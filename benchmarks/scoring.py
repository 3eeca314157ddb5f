"""Batch scoring throughput and peak memory: local engine and Spark local[2], GRU model.

Trains a GRU on the 20,000-subject simulated cohort (a few epochs: throughput does not depend
on how well it is trained), registers it in a SQLite MLflow store, and scores panels of
100,000 and 1,000,000 subjects at one as-of date. The 1,000,000-subject panel is the cached
100,000-subject simulation copied ten times with fresh subject ids (simulating 10^6 subjects
at once needs ~30 GB). Each scoring run is a fresh process, so its peak memory is its own.
The pure model-forward time is measured inside the same run on the same tensors (the
network's forward calls are timed), giving the ratio end-to-end / forward.
Run: .venv/bin/python benchmarks/scoring.py [--panels 100000,1000000] [--engines local,spark]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _common import CACHE, simulated

AS_OF = "2018-12-31"

CHILD = (
    r"""
import json, sys, time
sys.path.insert(0, '/BENCH/')
from _common import peak_rss_gb
import torch
from twinml.scoring import score

model_uri, events, out, engine, tracking = sys.argv[1:6]
torch.set_num_threads(2)
forward = {"seconds": 0.0, "calls": 0}
if engine == "local":  # time the network's forward calls inside the run (same tensors, same batches)
    import twinml.tracking as m  # score() looks the loader up here at call time
    real = m.load_registered_model
    def patched(*a, **k):
        loaded = real(*a, **k)
        net = loaded.model.net_
        inner = net.forward
        def timed(*args, **kw):
            t = time.perf_counter()
            r = inner(*args, **kw)
            forward["seconds"] += time.perf_counter() - t
            forward["calls"] += 1
            return r
        net.forward = timed
        return loaded
    m.load_registered_model = patched
t = time.perf_counter()
r = score(model_uri, events, "/AS_OF/", out, engine=engine, tracking_uri=tracking,
          spark_master="local[2]" if engine == "spark" else None)
secs = time.perf_counter() - t
print(json.dumps({"subjects": r.subjects, "scored": r.scored, "events": r.events_read, "seconds": secs,
                  "forward_seconds": forward["seconds"], "forward_calls": forward["calls"],
                  "peak_gb": peak_rss_gb()}))
"""
).replace("/AS_OF/", AS_OF)


# children import the peak-memory helper from this folder
CHILD = CHILD.replace("/BENCH/", str(Path(__file__).resolve().parent))


def million_panel() -> Path:
    """Ten copies of the cached 100,000-subject panel, subject ids shifted by 10^7 per copy."""
    src = simulated(100_000)
    out = CACHE / "panel-1000000"
    if (out / "metadata" / "dataset.json").exists():
        return out
    tmp = CACHE / ".panel-1000000.tmp"
    for k in range(10):
        for f in sorted((src / "data").rglob("*.parquet")):
            t = pq.read_table(f)
            t = t.set_column(0, "subject_id", pc.add(t.column("subject_id"), pa.scalar(k * 10_000_000, pa.int64())))
            dest = tmp / "data" / f.parent.name / f"{k}-{f.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t, dest)
    (tmp / "metadata").mkdir(parents=True, exist_ok=True)
    (tmp / "metadata" / "dataset.json").write_text((src / "metadata" / "dataset.json").read_text())
    tmp.rename(out)
    return out


def train_model(tracking: str) -> str:
    from twinml.config import load_config
    from twinml.pipeline import train

    cfg = load_config(
        {
            "name": "bench-scoring",
            "seed": 0,
            "data": {"source": "meds", "path": str(simulated(20_000))},
            "task": {
                "name": "bench",
                "outcomes": {
                    "t2d": {"codes": ["SNOMED/44054006"]},
                    "mi": {"codes": ["SNOMED/22298006"]},
                    "stroke": {"codes": ["SNOMED/230690007"]},
                    "ckd": {"codes": ["SNOMED/433144002"]},
                },
                "horizons_days": [90, 180, 365, 730],
                "prediction_times": {"start": "2012-01-01"},
            },
            "model": {"kind": "gru", "calibration": "platt", "params": {"max_epochs": 3, "n_threads": 2}},
            "evaluation": {"splits": ["held_out"], "n_bootstrap": 0},
            "tracking": {"experiment": "bench-scoring", "register_as": "bench-gru"},
        }
    )
    train(cfg, tracking_uri=tracking)
    return "models:/bench-gru/1"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--panels", default="100000,1000000")
    p.add_argument("--engines", default="local,spark")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        tracking = f"sqlite:///{d / 'mlflow.db'}"
        model = train_model(tracking)
        for n in map(int, args.panels.split(",")):
            events = simulated(100_000) if n == 100_000 else million_panel() if n == 1_000_000 else simulated(n)
            for engine in args.engines.split(","):
                out = d / f"scores-{n}-{engine}.parquet"
                res = subprocess.run(
                    [sys.executable, "-c", CHILD, model, str(events), str(out), engine, tracking],
                    capture_output=True,
                    text=True,
                )
                if res.returncode:
                    raise SystemExit(f"scoring failed:\n{res.stderr[-3000:]}")
                r = json.loads(res.stdout.strip().splitlines()[-1])
                line = (
                    f"{n:,} subjects, {engine}: {r['seconds']:.1f} s end to end = {r['subjects'] / r['seconds']:,.0f} "
                    f"subjects/s ({r['scored']:,} scored, {r['events']:,} events read); peak RSS {r['peak_gb']:.2f} GB"
                    + (
                        " (the driver process only: the JVM and Spark's Python workers are not counted)"
                        if engine == "spark"
                        else ""
                    )
                )
                if r["forward_calls"]:
                    line += (
                        f"; model forward {r['forward_seconds']:.1f} s in {r['forward_calls']} batches -> "
                        f"end-to-end / forward = {r['seconds'] / r['forward_seconds']:.2f}"
                    )
                print(line, flush=True)
                out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
