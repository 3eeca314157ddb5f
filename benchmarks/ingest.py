"""Ingestion throughput and peak memory per source.

FHIR: a directory of bundles (e.g. from `synthea -p 500 ...`). OMOP and Synthea CSV: exports
built from the simulator (OMOP: person, observation_period, death, condition_occurrence,
drug_exposure, measurement as Parquet; Synthea: patients, observations, conditions,
medications as CSV), so their size is a knob: 100,000 subjects give about 10^7 rows.
Run: .venv/bin/python benchmarks/ingest.py [--fhir DIR] [--omop-subjects N] [--csv-subjects N]
Each source is ingested in a fresh process so peak memory is its own; the reference is the
same process reading the source tables whole with pandas and doing nothing else.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

CHILD = r"""
import json, sys, time
sys.path.insert(0, '/BENCH/')
from _common import peak_rss_gb
from twinml.ingest import ingest
t = time.perf_counter()
r = ingest(sys.argv[1], sys.argv[2], sys.argv[3], reference_time="2030-01-01",
           source_namespaces=json.loads(sys.argv[4]) or None)
secs = time.perf_counter() - t
print(json.dumps({"rows_read": r.rows_read, "rows_kept": r.rows_kept, "rows_quarantined": r.rows_quarantined,
                  "seconds": secs, "peak_gb": peak_rss_gb()}))
"""

REFERENCE = r"""
import gzip, json, sys, time
sys.path.insert(0, '/BENCH/')
from _common import peak_rss_gb
from pathlib import Path
import orjson, pandas as pd
t, rows = time.perf_counter(), 0
for f in sorted(p for p in Path(sys.argv[1]).rglob("*") if p.is_file()):
    if f.name.endswith((".csv", ".csv.gz")):
        rows += len(pd.read_csv(f, dtype=str, keep_default_na=False))
    elif f.suffix == ".parquet":
        rows += len(pd.read_parquet(f))
    elif ".json" in f.name:
        data = (gzip.open if f.suffix == ".gz" else open)(f, "rb").read()
        if ".ndjson" in f.name:
            rows += sum(1 for _ in map(orjson.loads, data.splitlines()))
        else:
            rows += len(orjson.loads(data).get("entry", []))
print(json.dumps({"seconds": time.perf_counter() - t, "peak_gb": peak_rss_gb()}))
"""


# children import the peak-memory helper from this folder
CHILD = CHILD.replace("/BENCH/", str(Path(__file__).resolve().parent))
REFERENCE = REFERENCE.replace("/BENCH/", str(Path(__file__).resolve().parent))


def _child(code, *args):
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(source, path, out, namespaces=None):
    ref = _child(REFERENCE, path)
    print(
        f"{source} reference (read every file whole, parse only): {ref['seconds']:.1f} s, peak RSS "
        f"{ref['peak_gb']:.2f} GB"
    )
    r = _child(CHILD, source, path, out, json.dumps(namespaces or {}))
    print(
        f"{source}: {r['rows_read']:,} rows read ({r['rows_kept']:,} kept, {r['rows_quarantined']:,} quarantined) "
        f"in {r['seconds']:.1f} s = {r['rows_read'] / r['seconds']:,.0f} rows/s, {r['seconds'] / ref['seconds']:.1f} "
        "x the "
        f"reference; peak RSS {r['peak_gb']:.2f} GB"
    )


def _simulated_events(n_subjects):
    from _common import simulated

    from twinml.data import read_meds

    ev = read_meds(simulated(n_subjects)).sort_values(["subject_id", "time"], na_position="first", kind="stable")
    ev["code"] = ev["code"].astype(str)
    return ev


def synthea_csv_from_simulator(n_subjects: int, root: Path) -> None:
    """Write the simulator's events as a Synthea CSV export (SDOH and observation periods have no Synthea table)."""
    ev = _simulated_events(n_subjects)
    pid = "sim-" + ev["subject_id"].astype(str)
    static = ev[ev["time"].isna()].assign(pid=pid)
    birth = ev[ev["code"] == "MEDS_BIRTH"].assign(pid=pid).set_index("pid")["time"]
    death = ev[ev["code"] == "MEDS_DEATH"].assign(pid=pid).set_index("pid")["time"]
    sex = static[static["code"].str.startswith("GENDER//")].set_index("pid")["code"].str[-1]
    race = static[static["code"].str.startswith("RACE//")].set_index("pid")["code"].str[6:]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "Id": birth.index,
            "BIRTHDATE": birth.dt.strftime("%Y-%m-%d"),
            "DEATHDATE": death.reindex(birth.index).dt.strftime("%Y-%m-%d"),
            "GENDER": sex.reindex(birth.index),
            "RACE": race.reindex(birth.index).str.lower().replace({"hispanic": "white"}),
            "ETHNICITY": np.where(race.reindex(birth.index) == "Hispanic", "hispanic", "nonhispanic"),
        },
    ).to_csv(root / "patients.csv", index=False)
    dyn = ev[ev["time"].notna()]
    when = dyn["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    for table, prefix, date in (
        ("observations", "LOINC/", "DATE"),
        ("conditions", "SNOMED/", "START"),
        ("medications", "RxNorm/", "START"),
    ):
        part = dyn["code"].str.startswith(prefix)
        cols = {
            date: when[part],
            "PATIENT": pid.loc[dyn.index[part]],
            "CODE": dyn.loc[part, "code"].str.removeprefix(prefix),
        }
        if table == "observations":
            cols |= {"VALUE": dyn.loc[part, "numeric_value"], "TYPE": "numeric"}
        pd.DataFrame(cols).to_csv(root / f"{table}.csv", index=False)
    print(f"Synthea CSV export from {n_subjects:,} simulated subjects: {len(ev):,} MEDS events")


def omop_from_simulator(n_subjects: int, root: Path) -> None:
    """Write the simulator's events as OMOP CDM tables (source values keep the real codes)."""
    ev = _simulated_events(n_subjects)
    pid = ev["subject_id"]
    static = ev[ev["time"].isna()]
    birth = ev[ev["code"] == "MEDS_BIRTH"].set_index("subject_id")["time"]
    sex = static[static["code"].str.startswith("GENDER//")].set_index("subject_id")["code"].str[-1]
    person = pd.DataFrame(
        {
            "person_id": birth.index,
            "year_of_birth": birth.dt.year,
            "month_of_birth": birth.dt.month,
            "day_of_birth": birth.dt.day,
            "gender_concept_id": sex.reindex(birth.index).map({"F": 8532, "M": 8507}),
            "race_concept_id": 8527,
            "ethnicity_concept_id": 38003564,
        }
    )
    start = ev[ev["code"] == "OBSERVATION_PERIOD//START"].set_index("subject_id")["time"]
    end = ev[ev["code"] == "OBSERVATION_PERIOD//END"].set_index("subject_id")["time"]
    root.mkdir(parents=True, exist_ok=True)
    person.to_parquet(root / "person.parquet")
    pd.DataFrame(
        {
            "person_id": start.index,
            "observation_period_start_date": start.dt.date,
            "observation_period_end_date": end.reindex(start.index).dt.date,
        }
    ).to_parquet(root / "observation_period.parquet")
    death = ev[ev["code"] == "MEDS_DEATH"]
    pd.DataFrame({"person_id": death["subject_id"], "death_datetime": death["time"]}).to_parquet(root / "death.parquet")
    dyn = ev[ev["time"].notna()]
    kinds = {"measurement": "LOINC/", "drug_exposure": "RxNorm/", "condition_occurrence": "SNOMED/"}
    concept = dict(measurement="measurement", drug_exposure="drug", condition_occurrence="condition")
    for table, prefix in kinds.items():
        part = dyn[dyn["code"].str.startswith(prefix)]
        name = concept[table]
        cols = {
            "person_id": part["subject_id"],
            f"{name}_concept_id": np.arange(len(part)) % 1000 + 3_000_000,
            (
                "measurement_datetime"
                if table == "measurement"
                else f"{name}_start_datetime"
                if table == "condition_occurrence"
                else "drug_exposure_start_datetime"
            ): part["time"],
            f"{name}_source_value": part["code"].str.removeprefix(prefix),
        }
        if table == "measurement":
            cols["value_as_number"] = part["numeric_value"]
        pd.DataFrame(cols).to_parquet(root / f"{table}.parquet")
    print(f"OMOP export from {n_subjects:,} simulated subjects: {len(pid):,} MEDS events")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fhir", type=Path)
    p.add_argument("--omop-subjects", type=int, default=10_000)
    p.add_argument("--csv-subjects", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        if args.fhir:
            n = sum(1 for _ in args.fhir.glob("*.json*"))
            print(f"FHIR: {n} bundle files, {sum(f.stat().st_size for f in args.fhir.glob('*.json*')) / 1e6:.0f} MB")
            run("fhir", args.fhir, d / "fhir_meds")
        if args.omop_subjects:
            omop_from_simulator(args.omop_subjects, d / "omop")
            run(
                "omop",
                d / "omop",
                d / "omop_meds",
                {"measurement": "LOINC", "drug_exposure": "RxNorm", "condition_occurrence": "SNOMED"},
            )
            shutil.rmtree(d / "omop_meds")
        if args.csv_subjects:
            synthea_csv_from_simulator(args.csv_subjects, d / "csv")
            run("synthea-csv", d / "csv", d / "csv_meds")


if __name__ == "__main__":
    main()
