"""``ingest(source, path, out)``: records in, a MEDS dataset out, every row accounted for."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .._validation import ConfigError
from ._fhir import RowCollector, iter_resources, subject_key
from ._gate import QualityGate, exact_int
from ._omop import read_omop
from ._synthea_csv import read_synthea_csv

__all__ = ["ingest", "IngestReport", "SOURCES", "load_pseudonym_key"]

SOURCES = ("fhir", "synthea-csv", "omop", "meds")
QUARANTINE_FILE = "quality/quarantine.parquet"
SUMMARY_FILE = "quality/summary.json"


@dataclass
class IngestReport:
    """Counts of what was read, kept and quarantined, per table and reason."""

    out: Path | None
    summary: pd.DataFrame          # table, reason, rows (reasons plus "read" and "kept")
    rows_read: int
    rows_kept: int
    rows_quarantined: int
    skipped_resources: dict

    def to_dict(self) -> dict:
        return {"rows_read": self.rows_read, "rows_kept": self.rows_kept, "rows_quarantined": self.rows_quarantined,
                "skipped_resources": self.skipped_resources, "by_table": self.summary.to_dict("records")}


def load_pseudonym_key(*, env_var: str = "TWINML_PSEUDONYM_KEY", key_file=None) -> bytes:
    """The pseudonymisation key from a file or an environment variable (never logged or written)."""
    if key_file is not None:
        key = Path(key_file).read_bytes().strip()
        where = f"key file {key_file}"
    else:
        key = os.environ.get(env_var, "").encode()
        where = f"environment variable {env_var}"
    if len(key) < 16:
        raise ConfigError(f"pseudonymisation: the key from {where} must be at least 16 bytes; got {len(key)}.")
    return key


def ingest(source: str, path, out=None, *, reference_time=None, seed: int = 0, split_fractions=(0.8, 0.1, 0.1),
           pseudonym_key: bytes | None = None, source_namespaces: dict | None = None, overwrite: bool = False,
           progress=None) -> IngestReport:
    """Turn a source export into a MEDS dataset through the data-quality gate.

    Parameters
    ----------
    source : {"fhir", "synthea-csv", "omop", "meds"}
        ``meds`` validates an existing MEDS directory and writes nothing.
    path : directory or file of the export.
    out : MEDS directory to write (with ``quality/quarantine.parquet`` and ``quality/summary.json``).
    reference_time : events after it are future-dated (default: now).
    seed, split_fractions : subject-level random splits written to ``metadata/subject_splits.parquet``.
    pseudonym_key : bytes, optional
        Subject ids become an HMAC of the source ids under this key (see :func:`load_pseudonym_key`);
        source ids then appear nowhere in the output, quarantine included.
    source_namespaces : dict, optional
        OMOP only: ``{table: vocabulary}`` to code that table's source values as ``vocabulary/value``.
    """
    say = progress or (lambda msg: None)
    if source not in SOURCES:
        raise ConfigError(f"ingest: 'source' must be one of {list(SOURCES)}. "
                          f"Got {source!r} instead.")
    if source == "meds":
        from ..data import read_meds

        events = read_meds(path)
        summary = pd.DataFrame({"table": "events", "reason": ["read", "kept"], "rows": [len(events)] * 2})
        say(f"{path}: valid MEDS, {len(events):,} events")
        return IngestReport(None, summary, len(events), len(events), 0, {})
    if out is None:
        raise ConfigError(f"ingest: 'out' (the MEDS directory to write) is required for source {source!r}.")
    tables, subjects, skipped, displays = _read_source(source, path, pseudonym_key, source_namespaces, say)
    events, quarantine, summary = _gate_all(tables, subjects, QualityGate(reference_time=reference_time))
    read = int(summary.loc[summary["reason"] == "read", "rows"].sum())
    if len(events) + len(quarantine) != read:
        raise RuntimeError(f"ingest: {read} rows read but {len(events)} kept + {len(quarantine)} quarantined")
    report = IngestReport(Path(out), summary, read, len(events), len(quarantine), skipped)
    _write(out, events, quarantine, report, displays, seed, split_fractions, overwrite, etl=f"twinml.ingest.{source}")
    say(f"{read:,} rows read: {len(events):,} kept, {len(quarantine):,} quarantined -> {out}")
    mlflow = sys.modules.get("mlflow")  # only when the caller tracks: plain ingestion never imports mlflow
    if mlflow is not None and mlflow.active_run() is not None:
        from ..tracking import log_ingest_report

        log_ingest_report(report)
    return report


def _read_source(source, path, key, source_namespaces, say):
    """Raw rows per table (``subject_id`` set, ``subject_ref`` kept only without a key) and the subjects."""
    if source == "fhir":
        return _from_fhir(path, key, say)
    if source == "synthea-csv":
        tables, patients = read_synthea_csv(path)
        subjects = _subject_frame(patients["subject_ref"], patients["birth"], patients["death"], key)
        return _with_subject_ids(tables, key), subjects, {}, {}
    tables, subjects = read_omop(path, source_namespaces=source_namespaces)
    if not key:
        return tables, subjects.assign(subject_id=exact_int(subjects["subject_id"])), {}, {}
    # person_id is the source id: hash each distinct one once, as for FHIR and Synthea
    tables = _with_subject_ids({t: df.rename(columns={"subject_id": "subject_ref"}) for t, df in tables.items()}, key)
    ids = [None if pd.isna(r) else subject_key(r, key) for r in subjects["subject_id"]]  # one per person
    return tables, subjects.assign(subject_id=ids), {}, {}


def _gate_all(tables, subjects, gate):
    """Every table through the gate: kept events (sorted), the quarantine, and the counts."""
    kept, quarantined, summaries = [], [], []
    known = subjects.dropna(subset=["subject_id"])
    for table, raw in tables.items():
        refs = raw.pop("subject_ref") if "subject_ref" in raw else None
        res = gate.apply(raw, table=table, subjects=known)
        kept.append(res.kept)
        q = res.quarantined
        quarantined.append(q.assign(subject_ref=refs[q["row"]].to_numpy()) if refs is not None else q)
        summaries.append(res.summary)
    events = pd.concat(kept, ignore_index=True).sort_values(["subject_id", "time", "code"], na_position="first",
                                                            kind="stable")
    return events, pd.concat(quarantined, ignore_index=True), pd.concat(summaries, ignore_index=True)


def _from_fhir(path, key, say):
    collector = RowCollector()
    for i, (_, resource) in enumerate(iter_resources(path), start=1):
        collector.add(resource)
        if i % 200_000 == 0:
            say(f"read {i:,} FHIR resources")
    tables = _with_subject_ids({t: pd.DataFrame(cols) for t, cols in collector.tables.items()}, key)
    info = pd.DataFrame(collector.patients.values())
    subjects = _subject_frame(pd.Series(list(collector.patients), dtype=object), info.get("birth"), info.get("death"), key)
    return tables, subjects, dict(collector.skipped), collector.displays


def _with_subject_ids(tables, key):
    """``subject_ref`` (a source id) -> ``subject_id``; the source id stays beside the row only without
    pseudonymisation (for the quarantine file)."""
    out = {}
    for table, raw in tables.items():
        ids = {r: subject_key(r, key) for r in raw["subject_ref"].dropna().unique()}
        raw = raw.copy()
        raw.insert(0, "subject_id", raw["subject_ref"].map(ids).astype("object"))
        out[table] = raw if not key else raw.drop(columns="subject_ref")
    return out


def _subject_frame(refs, birth, death, key) -> pd.DataFrame:
    parse = lambda s: pd.to_datetime(pd.Series(s, dtype=object) if s is not None else pd.Series([None] * len(refs)),  # noqa: E731
                                     errors="coerce", utc=True, format="mixed").dt.tz_localize(None).to_numpy()
    return pd.DataFrame({"subject_id": [subject_key(r, key) for r in refs], "birth": parse(birth), "death": parse(death)})


def _write(out, events, quarantine, report, displays, seed, split_fractions, overwrite, etl):
    from .._version import __version__
    from ..data import write_meds

    ids = np.sort(events["subject_id"].unique())
    rng = np.random.default_rng(seed)
    names = np.array(["train", "tuning", "held_out"])
    splits = pd.DataFrame({"subject_id": ids, "split": names[np.searchsorted(np.cumsum(split_fractions)[:-1],
                                                                            rng.random(ids.size), side="right")]})
    codes = sorted(events["code"].unique())
    code_table = pd.DataFrame({"code": codes, "description": [displays.get(c) for c in codes],
                               "parent_codes": [[] for _ in codes]})
    table = pa.table({
        "subject_id": pa.array(events["subject_id"].to_numpy(np.int64)),
        "time": pa.array(events["time"].to_numpy("datetime64[us]"), pa.timestamp("us")),
        "code": pa.array(events["code"].astype(str).to_numpy(object), pa.string()),
        "numeric_value": pa.array(events["numeric_value"].to_numpy(np.float32), pa.float32(),
                                  mask=events["numeric_value"].isna().to_numpy()),
        "text_value": pa.array(events["text_value"].astype(object).where(events["text_value"].notna(), None),
                               pa.large_string()),
    })
    extra = {QUARANTINE_FILE: lambda p: quarantine.astype("string").to_parquet(p, index=False),
             SUMMARY_FILE: lambda p: p.write_text(json.dumps(report.to_dict(), indent=2, default=int))}
    write_meds(out, events=table, subject_splits=splits, codes=code_table, dataset_name=Path(out).name,
               etl_name=etl, etl_version=__version__, overwrite=overwrite, extra=extra)
