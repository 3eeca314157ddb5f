"""OMOP CDM v5.4 tables to raw event rows (before the quality gate).

Reads ``<table>.csv`` or ``<table>.parquet`` from a directory, or the tables of a DuckDB
database file (``.duckdb``; other databases can be copied into one with DuckDB's scanners). Concept ids become
``OMOP/<concept_id>``; where the user names the vocabulary of a table's source values
(``source_namespaces={"condition_occurrence": "ICD10CM"}``), a non-empty source value becomes
``ICD10CM/<value>`` instead. ``observation_period`` becomes ``OBSERVATION_PERIOD//START``/``END``
records, which labels use as the end of follow-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from .._validation import ConfigError

__all__ = ["read_omop", "OMOP_TABLES"]

# table -> (concept column, time columns in order of preference, value columns, source-value column)
OMOP_TABLES = {
    "visit_occurrence": ("visit_concept_id", ("visit_start_datetime", "visit_start_date"), {}, "visit_source_value"),
    "condition_occurrence": (
        "condition_concept_id",
        ("condition_start_datetime", "condition_start_date"),
        {},
        "condition_source_value",
    ),
    "drug_exposure": (
        "drug_concept_id",
        ("drug_exposure_start_datetime", "drug_exposure_start_date"),
        {},
        "drug_source_value",
    ),
    "measurement": (
        "measurement_concept_id",
        ("measurement_datetime", "measurement_date"),
        {"numeric": "value_as_number", "concept": "value_as_concept_id"},
        "measurement_source_value",
    ),
    "observation": (
        "observation_concept_id",
        ("observation_datetime", "observation_date"),
        {"numeric": "value_as_number", "text": "value_as_string", "concept": "value_as_concept_id"},
        "observation_source_value",
    ),
    "procedure_occurrence": (
        "procedure_concept_id",
        ("procedure_datetime", "procedure_date"),
        {},
        "procedure_source_value",
    ),
}
_GENDER = {"8532": "F", "8507": "M"}


class _Files:
    """OMOP tables as ``<table>.csv`` / ``.csv.gz`` / ``.parquet`` in a directory."""

    def __init__(self, root: Path):
        self.root = root
        self.names = {f.name.lower(): f for f in root.iterdir() if f.is_file()} if root.is_dir() else {}

    def chunks(self, table: str, chunk_rows: int | None) -> Iterator[pd.DataFrame] | None:
        """The table as string frames of at most ``chunk_rows`` rows (one frame if None), or None if absent."""
        for suffix in (".csv", ".csv.gz", ".parquet"):
            f = self.names.get(table + suffix)
            if f is None:
                continue
            if suffix == ".parquet":
                pf = pq.ParquetFile(f)
                if chunk_rows is None or not pf.metadata.num_rows:
                    return iter([_strings(pf.read().to_pandas())])
                return (_strings(b.to_pandas()) for b in pf.iter_batches(batch_size=chunk_rows))
            if chunk_rows is None:
                return iter([_strings(pd.read_csv(f, dtype=str, keep_default_na=False))])
            return (_strings(df) for df in pd.read_csv(f, dtype=str, keep_default_na=False, chunksize=chunk_rows))
        return None


class _DuckDB:
    """OMOP tables in a DuckDB database file (opened read-only)."""

    def __init__(self, path: Path):
        import duckdb

        self.con = duckdb.connect(str(path), read_only=True)
        self.tables = {r[0].lower(): r[0] for r in self.con.execute("SHOW TABLES").fetchall()}

    def chunks(self, table: str, chunk_rows: int | None) -> Iterator[pd.DataFrame] | None:
        name = self.tables.get(table)
        if name is None:
            return None
        if chunk_rows is None:
            return iter([_strings(self.con.execute(f'SELECT * FROM "{name}"').df())])
        reader = self.con.sql(f'SELECT * FROM "{name}"').to_arrow_reader(chunk_rows)
        return (_strings(b.to_pandas()) for b in reader)


def _whole(src, table):
    parts = src.chunks(table, None)
    return None if parts is None else next(parts)


def _strings(df: pd.DataFrame) -> pd.DataFrame:
    named = any(n is not None for n in df.index.names)
    if named or not isinstance(df.index, pd.RangeIndex):  # a pandas-written parquet may keep its index: it is data
        df = df.reset_index()
    df = df.reset_index(drop=True)
    df.columns = [c.lower() for c in df.columns]
    return df.astype("string").replace({"": pd.NA})


def _source(path: Path):
    if path.is_file() and path.suffix.lower() in (".duckdb", ".db"):
        return _DuckDB(path)
    return _Files(path)


def _first(df, cols):
    out = pd.Series(pd.NA, index=df.index, dtype="string")
    for c in cols:
        if c in df:
            out = out.fillna(df[c])
    return out


def _concept(series):
    return ("OMOP/" + series.str.replace(r"\.0$", "", regex=True)).where(series.notna())


def _frame(subject, time, code, value=None, text=None):
    n = len(subject)
    na = pd.Series(pd.NA, index=subject.index, dtype="string")
    return pd.DataFrame(
        {
            "subject_id": subject,
            "time": time if time is not None else na,
            "code": code,
            "numeric_value": value if value is not None else na,
            "text_value": text if text is not None else na,
        },
        index=range(n) if n == 0 else subject.index,
    )


def read_omop(
    path, *, source_namespaces: dict | None = None, chunk_rows: int = 500_000
) -> tuple[Iterator[tuple[str, pd.DataFrame]], pd.DataFrame]:
    """Raw rows as ``(table, frame)`` chunks read lazily (at most ``chunk_rows`` source rows at a
    time; person and death are read whole), and the subjects (``subject_id``, ``birth``, ``death``)."""
    root = Path(path)
    src = _source(root)
    person = _whole(src, "person")
    if person is None:
        raise ConfigError(
            f"{root}: an OMOP export needs a person table (person.csv, person.parquet, "
            "or a 'person' table in a .duckdb database)."
        )
    ns = source_namespaces or {}
    unknown = set(ns) - set(OMOP_TABLES)
    if unknown:
        raise ConfigError(
            f"omop: 'source_namespaces' names unknown tables {sorted(unknown)}; known: {sorted(OMOP_TABLES)}"
        )
    sid = person["person_id"]
    birth = _first(person, ["birth_datetime"])

    def part(col, default):  # "3", "3.0" (a float column written as CSV) or missing
        v = person[col] if col in person else pd.Series(pd.NA, index=person.index, dtype="string")
        return v.str.replace(r"\.0+$", "", regex=True).fillna(default).str.zfill(2)

    birth = birth.fillna(
        part("year_of_birth", pd.NA) + "-" + part("month_of_birth", "1") + "-" + part("day_of_birth", "1")
    )
    person_rows = pd.concat(
        [
            _frame(sid, birth, pd.Series("MEDS_BIRTH", index=sid.index, dtype="string")),
            _frame(
                sid,
                None,
                "GENDER//"
                + person["gender_concept_id"].map(lambda c: _GENDER.get(str(c), f"OMOP/{c}")).astype("string"),
            ),
            _frame(sid, None, ("RACE//OMOP/" + person["race_concept_id"]).astype("string")),
            _frame(sid, None, ("ETHNICITY//OMOP/" + person["ethnicity_concept_id"]).astype("string")),
        ],
        ignore_index=True,
    )
    death = pd.DataFrame({"person_id": pd.Series(dtype="string"), "death": pd.Series(dtype="string")})
    d = _whole(src, "death")
    if d is not None:
        death = pd.DataFrame({"person_id": d["person_id"], "death": _first(d, ["death_datetime", "death_date"])})
    parse = lambda s: pd.to_datetime(s, errors="coerce", format="mixed")  # noqa: E731
    subjects = pd.DataFrame({"subject_id": sid, "birth": parse(birth)})
    subjects = subjects.merge(
        death.assign(death=parse(death["death"])).rename(columns={"person_id": "subject_id"}),
        on="subject_id",
        how="left",
    )
    return _chunks(src, person_rows, death if d is not None else None, ns, chunk_rows), subjects


def _chunks(src, person_rows, death, ns, chunk_rows):
    yield "person", person_rows
    if death is not None:
        yield (
            "death",
            _frame(death["person_id"], death["death"], pd.Series("MEDS_DEATH", index=death.index, dtype="string")),
        )
    for o in src.chunks("observation_period", chunk_rows) or ():
        yield (
            "observation_period",
            pd.concat(
                [
                    _frame(
                        o["person_id"],
                        o["observation_period_start_date"],
                        pd.Series("OBSERVATION_PERIOD//START", index=o.index, dtype="string"),
                    ),
                    _frame(
                        o["person_id"],
                        o["observation_period_end_date"],
                        pd.Series("OBSERVATION_PERIOD//END", index=o.index, dtype="string"),
                    ),
                ],
                ignore_index=True,
            ),
        )
    for table, (concept, times, values, source) in OMOP_TABLES.items():
        for t in src.chunks(table, chunk_rows) or ():
            code = _concept(t[concept]) if concept in t else pd.Series(pd.NA, index=t.index, dtype="string")
            if table in ns and source in t:
                code = (ns[table] + "/" + t[source]).where(t[source].notna(), code)
            text = t[values["text"]] if "text" in values and values["text"] in t else None
            if "concept" in values and values["concept"] in t:
                coded = _concept(t[values["concept"]])
                text = coded if text is None else text.fillna(coded)
            value = t[values["numeric"]] if "numeric" in values and values["numeric"] in t else None
            yield table, _frame(t["person_id"], _first(t, times), code, value, text)
