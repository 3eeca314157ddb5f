"""The Synthea CSV export to raw event rows (before the quality gate).

Tables (``patients``, ``encounters``, ``conditions``, ``observations``, ``medications``,
``procedures``, ``immunizations``, ``allergies``, ``careplans``, ``devices``) are mapped the
same way as the FHIR reader maps the same patients: same codes, same times, same subject ids
(from the patient UUID), so one patient gives the same MEDS events through either form.
Vocabularies come from the table (conditions SNOMED, medications RxNorm, observations LOINC,
immunizations CVX) unless a ``SYSTEM`` column (newer Synthea) names another.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from .._validation import ConfigError
from ._fhir import NAMESPACES

__all__ = ["read_synthea_csv", "RACES", "ETHNICITIES"]

# Synthea's lowercase race/ethnicity words -> the US Core (OMB) display names FHIR carries.
RACES = {
    "white": "White",
    "black": "Black or African American",
    "asian": "Asian",
    "native": "American Indian or Alaska Native",
    "hawaiian": "Native Hawaiian or Other Pacific Islander",
    "other": "Other",
}
ETHNICITIES = {"hispanic": "Hispanic or Latino", "nonhispanic": "Not Hispanic or Latino"}
# a system URL maps as in FHIR (immunizations read http://hl7.org/fhir/sid/cvx in newer Synthea: CVX/140,
# not http://hl7.org/fhir/sid/cvx/140 beside a few CVX/140)
_SYSTEMS = {
    "SNOMED-CT": "SNOMED",
    "SNOMED": "SNOMED",
    "RXNORM": "RxNorm",
    "LOINC": "LOINC",
    "CVX": "CVX",
    "ICD-10-CM": "ICD10CM",
    "ICD10CM": "ICD10CM",
    **NAMESPACES,
}
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


def _read(root: Path, name: str, chunk_rows: int | None = None):
    """``name``.csv(.gz) as string frames of at most ``chunk_rows`` rows (one frame if None); None if absent."""
    for f in (root / f"{name}.csv", root / f"{name}.csv.gz"):
        if f.exists():
            return (
                _clean(pd.read_csv(f, dtype=str, keep_default_na=False, chunksize=chunk_rows))
                if chunk_rows
                else next(_clean([pd.read_csv(f, dtype=str, keep_default_na=False)]))
            )
    return None


def _clean(frames):
    for df in frames:
        df = df.astype("string").replace({"": pd.NA}).reset_index(drop=True)
        df.columns = [c.upper() for c in df.columns]
        yield df


def _rows(subject, time, code, value=None, text=None):
    na = pd.Series(pd.NA, index=subject.index, dtype="string")
    return pd.DataFrame(
        {
            "subject_ref": subject,
            "time": time,
            "code": code,
            "numeric_value": na if value is None else value,
            "text_value": na if text is None else text,
        }
    )


def _codes(df, default_ns):
    ns = pd.Series(default_ns, index=df.index, dtype="string")
    if "SYSTEM" in df:  # a known system's namespace, else the system as written, else the table's default
        ns = df["SYSTEM"].map(_SYSTEMS).astype("string").fillna(df["SYSTEM"]).fillna(default_ns)
    return (ns.astype("string") + "/" + df["CODE"]).where(df["CODE"].notna())


def read_synthea_csv(
    path, *, chunk_rows: int = 500_000, displays: dict | None = None
) -> tuple[Iterator[tuple[str, pd.DataFrame]], pd.DataFrame]:
    """Raw rows as ``(table, frame)`` chunks (each with ``subject_ref``) read lazily, at most ``chunk_rows``
    source rows at a time, and the patients (``subject_ref``, ``birth``, ``death``).

    ``displays``, if given, is filled as the chunks are read with each code's first ``DESCRIPTION``
    (the code metadata's descriptions)."""
    root = Path(path)
    patients = _read(root, "patients") if root.is_dir() else None
    if patients is None:
        raise ConfigError(f"{root}: a Synthea CSV export needs patients.csv.")
    subjects = pd.DataFrame(
        {
            "subject_ref": patients["ID"],
            "birth": patients["BIRTHDATE"],
            "death": patients["DEATHDATE"] if "DEATHDATE" in patients else pd.NA,
        }
    )
    return _chunks(root, patients, chunk_rows, {} if displays is None else displays), subjects


def _note_displays(displays, code, df):
    if "DESCRIPTION" not in df:
        return
    pairs = pd.DataFrame({"code": code, "text": df["DESCRIPTION"]}).dropna().drop_duplicates("code")
    pairs = pairs[~pairs["code"].isin(displays.keys())]
    displays.update(zip(pairs["code"].astype(str), pairs["text"].astype(str)))


def _chunks(root, patients, chunk_rows, displays):
    pid = patients["ID"]
    const = lambda v: pd.Series(v, index=patients.index, dtype="string")  # noqa: E731
    parts = [
        _rows(pid, patients["BIRTHDATE"], const("MEDS_BIRTH")),
        _rows(pid, const(pd.NA), ("GENDER//" + patients["GENDER"]).astype("string")),
        _rows(pid, const(pd.NA), ("RACE//" + patients["RACE"].map(RACES)).astype("string")),
        _rows(pid, const(pd.NA), ("ETHNICITY//" + patients["ETHNICITY"].map(ETHNICITIES)).astype("string")),
    ]
    if "DEATHDATE" in patients:
        dead = patients["DEATHDATE"].notna()
        parts.append(_rows(pid[dead], patients.loc[dead, "DEATHDATE"], const("MEDS_DEATH")[dead]))
    yield "Patient", pd.concat(parts, ignore_index=True)  # unknown race words reach the gate, not the floor
    for name, (table, ns, start, abated) in TABLES.items():
        for df in _read(root, name, chunk_rows) or ():
            code = _codes(df, ns)
            _note_displays(displays, code, df)
            yield table, _rows(df["PATIENT"], df[start], code)
            if abated and "STOP" in df:
                stop = df["STOP"].notna()
                yield (
                    table,
                    _rows(df.loc[stop, "PATIENT"], df.loc[stop, "STOP"], (code[stop] + "//ABATED").astype("string")),
                )
    for obs in _read(root, "observations", chunk_rows) or ():
        numeric = obs.get("TYPE", pd.Series("numeric", index=obs.index)).fillna("numeric") == "numeric"
        code = _codes(obs, "LOINC")
        _note_displays(displays, code, obs)
        yield (
            "Observation",
            _rows(obs["PATIENT"], obs["DATE"], code, obs["VALUE"].where(numeric), obs["VALUE"].where(~numeric)),
        )
