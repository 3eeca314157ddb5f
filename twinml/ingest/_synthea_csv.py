"""The Synthea CSV export to raw event rows (before the quality gate).

Tables (``patients``, ``encounters``, ``conditions``, ``observations``, ``medications``,
``procedures``, ``immunizations``, ``allergies``, ``careplans``, ``devices``) are mapped the
same way as the FHIR reader maps the same patients: same codes, same times, same subject ids
(from the patient UUID), so one patient gives the same MEDS events through either form.
Vocabularies come from the table (conditions SNOMED, medications RxNorm, observations LOINC,
immunizations CVX) unless a ``SYSTEM`` column (newer Synthea) names another.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .._validation import ConfigError

__all__ = ["read_synthea_csv", "RACES", "ETHNICITIES"]

# Synthea's lowercase race/ethnicity words -> the US Core (OMB) display names FHIR carries.
RACES = {"white": "White", "black": "Black or African American", "asian": "Asian",
         "native": "American Indian or Alaska Native", "hawaiian": "Native Hawaiian or Other Pacific Islander",
         "other": "Other"}
ETHNICITIES = {"hispanic": "Hispanic or Latino", "nonhispanic": "Not Hispanic or Latino"}
_SYSTEMS = {"SNOMED-CT": "SNOMED", "SNOMED": "SNOMED", "RXNORM": "RxNorm", "LOINC": "LOINC", "CVX": "CVX",
            "ICD-10-CM": "ICD10CM", "ICD10CM": "ICD10CM", "http://snomed.info/sct": "SNOMED",
            "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm", "http://loinc.org": "LOINC"}
# table -> (FHIR-equivalent table name, default namespace, start column, has STOP -> //ABATED)
TABLES = {
    "encounters": ("Encounter", "SNOMED", "START", False),
    "conditions": ("Condition", "SNOMED", "START", True),
    "medications": ("MedicationRequest", "RxNorm", "START", False),
    "procedures": ("Procedure", "SNOMED", "START", False),
    "immunizations": ("Immunization", "CVX", "DATE", False),
    "allergies": ("AllergyIntolerance", "SNOMED", "START", False),
    "careplans": ("CarePlan", "SNOMED", "START", False),
    "devices": ("Device", "SNOMED", "START", False),
}


def _read(root: Path, name: str) -> pd.DataFrame | None:
    for f in (root / f"{name}.csv", root / f"{name}.csv.gz"):
        if f.exists():
            df = pd.read_csv(f, dtype=str, keep_default_na=False).astype("string").replace({"": pd.NA})
            df.columns = [c.upper() for c in df.columns]
            return df
    return None


def _rows(subject, time, code, value=None, text=None):
    na = pd.Series(pd.NA, index=subject.index, dtype="string")
    return pd.DataFrame({"subject_ref": subject, "time": time, "code": code,
                         "numeric_value": na if value is None else value, "text_value": na if text is None else text})


def _codes(df, default_ns):
    ns = pd.Series(default_ns, index=df.index, dtype="string")
    if "SYSTEM" in df:  # a known system's namespace, else the system as written, else the table's default
        ns = df["SYSTEM"].map(_SYSTEMS).astype("string").fillna(df["SYSTEM"]).fillna(default_ns)
    return (ns.astype("string") + "/" + df["CODE"]).where(df["CODE"].notna())


def read_synthea_csv(path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Raw rows per table (with ``subject_ref``) and the patients (``subject_ref``, ``birth``, ``death``)."""
    root = Path(path)
    patients = _read(root, "patients") if root.is_dir() else None
    if patients is None:
        raise ConfigError(f"{root}: a Synthea CSV export needs patients.csv.")
    pid = patients["ID"]
    const = lambda v: pd.Series(v, index=patients.index, dtype="string")  # noqa: E731
    parts = [_rows(pid, patients["BIRTHDATE"], const("MEDS_BIRTH")),
             _rows(pid, const(pd.NA), ("GENDER//" + patients["GENDER"]).astype("string")),
             _rows(pid, const(pd.NA), ("RACE//" + patients["RACE"].map(RACES)).astype("string")),
             _rows(pid, const(pd.NA), ("ETHNICITY//" + patients["ETHNICITY"].map(ETHNICITIES)).astype("string"))]
    if "DEATHDATE" in patients:
        dead = patients["DEATHDATE"].notna()
        parts.append(_rows(pid[dead], patients.loc[dead, "DEATHDATE"], const("MEDS_DEATH")[dead]))
    tables = {"Patient": pd.concat(parts, ignore_index=True)}  # unknown race words reach the gate, not the floor
    for name, (table, ns, start, abated) in TABLES.items():
        df = _read(root, name)
        if df is None:
            continue
        code = _codes(df, ns)
        rows = [_rows(df["PATIENT"], df[start], code)]
        if abated and "STOP" in df:
            stop = df["STOP"].notna()
            rows.append(_rows(df.loc[stop, "PATIENT"], df.loc[stop, "STOP"], (code[stop] + "//ABATED").astype("string")))
        tables[table] = pd.concat(rows, ignore_index=True)
    obs = _read(root, "observations")
    if obs is not None:
        numeric = obs.get("TYPE", pd.Series("numeric", index=obs.index)).fillna("numeric") == "numeric"
        tables["Observation"] = _rows(obs["PATIENT"], obs["DATE"], _codes(obs, "LOINC"),
                                      obs["VALUE"].where(numeric), obs["VALUE"].where(~numeric))
    subjects = pd.DataFrame({"subject_ref": pid, "birth": patients["BIRTHDATE"],
                             "death": patients["DEATHDATE"] if "DEATHDATE" in patients else pd.NA})
    return tables, subjects
