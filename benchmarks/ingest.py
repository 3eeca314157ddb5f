"""Ingestion throughput and peak memory per source.

FHIR: a directory of bundles (e.g. from `synthea -p 500 ...`). OMOP: an export built from the
simulator (person, observation_period, death, visit_occurrence, condition_occurrence,
drug_exposure, measurement as Parquet), so its size is a knob.
Run: .venv/bin/python benchmarks/ingest.py [--fhir DIR] [--omop-subjects N]
Each source is ingested in a fresh process so peak memory is its own.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

CHILD = r"""
import json, resource, sys, time
from twinml.ingest import ingest
t = time.perf_counter()
r = ingest(sys.argv[1], sys.argv[2], sys.argv[3], reference_time="2030-01-01",
           source_namespaces=json.loads(sys.argv[4]) or None)
secs = time.perf_counter() - t
print(json.dumps({"rows_read": r.rows_read, "rows_kept": r.rows_kept, "rows_quarantined": r.rows_quarantined,
                  "seconds": secs, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""


def run(source, path, out, namespaces=None):
    res = subprocess.run([sys.executable, "-c", CHILD, source, str(path), str(out), json.dumps(namespaces or {})],
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{source} ingestion failed:\n{res.stderr[-3000:]}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"{source}: {r['rows_read']:,} rows read ({r['rows_kept']:,} kept, {r['rows_quarantined']:,} quarantined) "
          f"in {r['seconds']:.1f} s = {r['rows_read'] / r['seconds']:,.0f} rows/s; peak RSS {r['peak_gb']:.2f} GB")


def omop_from_simulator(n_subjects: int, root: Path) -> None:
    """Write the simulator's events as OMOP CDM tables (source values keep the real codes)."""
    from twinml.simulate import simulate

    ev = simulate(n_subjects=n_subjects, seed=0).events.to_pandas()
    ev["code"] = ev["code"].astype(str)
    pid = ev["subject_id"]
    static = ev[ev["time"].isna()]
    birth = ev[ev["code"] == "MEDS_BIRTH"].set_index("subject_id")["time"]
    sex = static[static["code"].str.startswith("GENDER//")].set_index("subject_id")["code"].str[-1]
    person = pd.DataFrame({"person_id": birth.index, "year_of_birth": birth.dt.year, "month_of_birth": birth.dt.month,
                           "day_of_birth": birth.dt.day, "gender_concept_id": sex.reindex(birth.index).map({"F": 8532, "M": 8507}),
                           "race_concept_id": 8527, "ethnicity_concept_id": 38003564})
    start = ev[ev["code"] == "OBSERVATION_PERIOD//START"].set_index("subject_id")["time"]
    end = ev[ev["code"] == "OBSERVATION_PERIOD//END"].set_index("subject_id")["time"]
    root.mkdir(parents=True, exist_ok=True)
    person.to_parquet(root / "person.parquet")
    pd.DataFrame({"person_id": start.index, "observation_period_start_date": start.dt.date,
                  "observation_period_end_date": end.reindex(start.index).dt.date}).to_parquet(root / "observation_period.parquet")
    death = ev[ev["code"] == "MEDS_DEATH"]
    pd.DataFrame({"person_id": death["subject_id"], "death_datetime": death["time"]}).to_parquet(root / "death.parquet")
    dyn = ev[ev["time"].notna()]
    kinds = {"measurement": "LOINC/", "drug_exposure": "RxNorm/", "condition_occurrence": "SNOMED/"}
    concept = dict(measurement="measurement", drug_exposure="drug", condition_occurrence="condition")
    for table, prefix in kinds.items():
        part = dyn[dyn["code"].str.startswith(prefix)]
        name = concept[table]
        cols = {"person_id": part["subject_id"], f"{name}_concept_id": np.arange(len(part)) % 1000 + 3_000_000,
                ("measurement_datetime" if table == "measurement" else f"{name}_start_datetime" if table == "condition_occurrence"
                 else "drug_exposure_start_datetime"): part["time"],
                f"{name}_source_value": part["code"].str.removeprefix(prefix)}
        if table == "measurement":
            cols["value_as_number"] = part["numeric_value"]
        pd.DataFrame(cols).to_parquet(root / f"{table}.parquet")
    print(f"OMOP export from {n_subjects:,} simulated subjects: {len(pid):,} MEDS events")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fhir", type=Path)
    p.add_argument("--omop-subjects", type=int, default=10_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        if args.fhir:
            n = sum(1 for _ in args.fhir.glob("*.json*"))
            print(f"FHIR: {n} bundle files, {sum(f.stat().st_size for f in args.fhir.glob('*.json*')) / 1e6:.0f} MB")
            run("fhir", args.fhir, d / "fhir_meds")
        if args.omop_subjects:
            omop_from_simulator(args.omop_subjects, d / "omop")
            run("omop", d / "omop", d / "omop_meds", {"measurement": "LOINC", "drug_exposure": "RxNorm",
                                                      "condition_occurrence": "SNOMED"})


if __name__ == "__main__":
    main()
