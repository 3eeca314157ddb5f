"""``ingest(source, path, out)``: records in, a MEDS dataset out, every row accounted for."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import refuse_existing
from .._validation import ConfigError, check_positive_int
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
    summary: pd.DataFrame  # table, reason, rows (reasons plus "read" and "kept")
    rows_read: int
    rows_kept: int
    rows_quarantined: int
    skipped_resources: dict

    def to_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "skipped_resources": self.skipped_resources,
            "by_table": self.summary.to_dict("records"),
        }


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


def ingest(
    source: str,
    path,
    out=None,
    *,
    reference_time=None,
    seed: int = 0,
    split_fractions=(0.8, 0.1, 0.1),
    pseudonym_key: bytes | None = None,
    source_namespaces: dict | None = None,
    overwrite: bool = False,
    chunk_rows: int = 500_000,
    bucket_rows: int = 1_000_000,
    progress=None,
) -> IngestReport:
    """Turn a source export into a MEDS dataset through the data-quality gate.

    The source streams through in chunks: raw rows are staged on disk in buckets of subjects, then
    each bucket is gated, de-duplicated and sorted alone, so memory is bounded by the chunk and
    bucket sizes, not by the input.

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
    chunk_rows : int
        Source rows read at a time (CSV/Parquet/database rows; FHIR: event rows).
    bucket_rows : int
        Rough number of rows per subject bucket; the bucket count comes from the input's size.
    """
    say = progress or (lambda msg: None)
    if source not in SOURCES:
        raise ConfigError(f"ingest: 'source' must be one of {list(SOURCES)}. Got {source!r} instead.")
    check_positive_int(chunk_rows, name="chunk_rows", owner="ingest")
    check_positive_int(bucket_rows, name="bucket_rows", owner="ingest")
    if source == "meds":
        from ..data import read_meds

        events = read_meds(path)
        summary = pd.DataFrame({"table": "events", "reason": ["read", "kept"], "rows": [len(events)] * 2})
        say(f"{path}: valid MEDS, {len(events):,} events")
        return IngestReport(None, summary, len(events), len(events), 0, {})
    if out is None:
        raise ConfigError(f"ingest: 'out' (the MEDS directory to write) is required for source {source!r}.")
    out = Path(out)
    refuse_existing(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_buckets = _bucket_count(Path(path), bucket_rows)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.staging.", dir=out.parent) as tmp:
        spool = _Spool(Path(tmp), n_buckets)
        source_rows = _read_source(source, Path(path), pseudonym_key, source_namespaces, chunk_rows)
        for table, raw in source_rows.chunks:
            spool.add(table, raw)
            say(f"read {spool.n_rows:,} rows into {n_buckets} subject bucket(s)")
        staged = _gate_buckets(spool, source_rows.subjects(), QualityGate(reference_time=reference_time), say)
        read = int(staged.summary.loc[staged.summary["reason"] == "read", "rows"].sum())
        if staged.n_kept + staged.n_quarantined != read or read != spool.n_rows:
            raise RuntimeError(
                f"ingest: {read} rows read but {staged.n_kept} kept + {staged.n_quarantined} quarantined"
            )
        report = IngestReport(out, staged.summary, read, staged.n_kept, staged.n_quarantined, source_rows.skipped)
        _write(
            out, staged, report, source_rows.displays, seed, split_fractions, overwrite, etl=f"twinml.ingest.{source}"
        )
    say(f"{read:,} rows read: {staged.n_kept:,} kept, {staged.n_quarantined:,} quarantined -> {out}")
    if "mlflow" in sys.modules:  # only when the caller may be tracking: plain ingestion never imports mlflow
        from ..tracking import log_ingest_report

        log_ingest_report(report)  # into the caller's active run, if there is one
    return report


# Rough rows per input byte, to size the subject buckets before reading (over-estimates are cheap).
_ROWS_PER_BYTE = {
    ".json": 1 / 1500,
    ".ndjson": 1 / 1500,
    ".csv": 1 / 50,
    ".parquet": 1 / 10,
    ".duckdb": 1 / 10,
    ".db": 1 / 10,
}


def _bucket_count(path: Path, bucket_rows: int) -> int:
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
    rows = 0.0
    for f in files:
        suffixes = [s.lower() for s in f.suffixes]
        zipped = suffixes[-1:] == [".gz"]
        kind = suffixes[-2] if zipped and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
        rows += f.stat().st_size * _ROWS_PER_BYTE.get(kind, 1 / 50) * (8 if zipped else 1)
    return int(min(1024, max(1, np.ceil(rows / bucket_rows))))


@dataclass
class _SourceRows:
    """A source's raw rows as lazy ``(table, frame)`` chunks; ``subjects()`` is complete once they are read."""

    chunks: Iterator[tuple[str, pd.DataFrame]]
    subjects: Callable[[], pd.DataFrame]
    skipped: dict
    displays: dict


def _read_source(source, path, key, source_namespaces, chunk_rows) -> _SourceRows:
    """Raw rows per table (``subject_id`` set, ``subject_ref`` kept only without a key) and the subjects."""
    ids = _SubjectIds(key)
    if source == "fhir":
        return _from_fhir(path, ids, chunk_rows)
    if source == "synthea-csv":
        displays: dict[str, str] = {}  # filled as the chunks are read, like the FHIR reader's
        chunks, patients = read_synthea_csv(path, chunk_rows=chunk_rows, displays=displays)
        subjects = _subject_frame(patients["subject_ref"], patients["birth"], patients["death"], ids)
        return _SourceRows(((t, ids.assign(raw)) for t, raw in chunks), lambda: subjects, {}, displays)
    chunks, subjects = read_omop(path, source_namespaces=source_namespaces, chunk_rows=chunk_rows)
    if not key:
        subjects = subjects.assign(subject_id=exact_int(subjects["subject_id"]))
        return _SourceRows(chunks, lambda: subjects, {}, {})
    # person_id is the source id: hash each distinct one once, as for FHIR and Synthea
    chunks = ((t, ids.assign(raw.rename(columns={"subject_id": "subject_ref"}))) for t, raw in chunks)
    subjects = subjects.assign(subject_id=[None if pd.isna(r) else ids.of(r) for r in subjects["subject_id"]])
    return _SourceRows(chunks, lambda: subjects, {}, {})


def _from_fhir(path, ids, chunk_rows) -> _SourceRows:
    collector = RowCollector()

    def chunks():
        for _, resource in iter_resources(path):
            collector.add(resource)
            if collector.n_rows >= chunk_rows:
                yield from _fhir_frames(collector.take(), ids)
        yield from _fhir_frames(collector.take(), ids)

    def subjects():
        info = pd.DataFrame(collector.patients.values())
        return _subject_frame(
            pd.Series(list(collector.patients), dtype=object), info.get("birth"), info.get("death"), ids
        )

    return _SourceRows(chunks(), subjects, collector.skipped, collector.displays)


def _fhir_frames(tables, ids):
    for table, cols in tables.items():
        yield table, ids.assign(pd.DataFrame(cols))


class _SubjectIds:
    """Source ids -> subject ids (hashed, keyed when pseudonymising), each distinct id hashed once."""

    def __init__(self, key):
        self.key, self.cache = key, {}

    def of(self, ref) -> int:
        sid = self.cache.get(ref)
        if sid is None:
            sid = self.cache[ref] = subject_key(ref, self.key)
        return sid

    def assign(self, raw: pd.DataFrame) -> pd.DataFrame:
        """``subject_ref`` (a source id) -> ``subject_id``; the source id stays beside the row only without
        pseudonymisation (for the quarantine file)."""
        refs = raw["subject_ref"]
        mapping = {r: self.of(r) for r in refs.dropna().unique()}
        raw = raw.copy()
        raw.insert(0, "subject_id", refs.map(mapping).astype("object"))
        return raw if not self.key else raw.drop(columns="subject_ref")


class _Spool:
    """Raw rows staged on disk as strings, in buckets of subjects (``subject_id mod n_buckets``).

    Every rule of the gate looks at one row, at the subjects table, or (exact duplicates) at the
    rows of one subject in one table, so gating bucket by bucket gives what gating everything at
    once would. ``_row`` keeps each row's position in its source table for the quarantine.
    """

    def __init__(self, root: Path, n_buckets: int):
        self.root, self.n_buckets = root, n_buckets
        self.parts: list[list[tuple[str, Path]]] = [[] for _ in range(n_buckets)]
        self.rows_per_table: dict[str, int] = {}
        self.n_rows = 0
        self._seq = 0

    def add(self, table: str, raw: pd.DataFrame) -> None:
        start = self.rows_per_table.setdefault(table, 0)
        n = len(raw)
        if not n:
            return
        self.rows_per_table[table] = start + n
        self.n_rows += n
        raw = raw.reset_index(drop=True)
        sid = raw["subject_id"]
        sid = sid if pd.api.types.is_integer_dtype(sid) else exact_int(sid)
        bucket = sid.fillna(0).to_numpy(np.int64) % self.n_buckets  # unparseable ids: bucket 0, quarantined there
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(self.n_buckets + 1))
        staged = pa.Table.from_pandas(raw.astype("string").iloc[order], preserve_index=False).replace_schema_metadata(
            None
        )
        staged = staged.append_column("_row", pa.array(np.arange(start, start + n)[order]))
        self._seq += 1
        for b in np.flatnonzero(np.diff(bounds)):
            f = self.root / f"b{b}" / f"{self._seq}.parquet"
            f.parent.mkdir(exist_ok=True)
            pq.write_table(staged.slice(bounds[b], bounds[b + 1] - bounds[b]), f)
            self.parts[b].append((table, f))


@dataclass
class _Gated:
    kept_files: list  # per bucket: sorted, typed MEDS events (Parquet)
    quarantine_files: list  # per bucket: quarantined rows as strings (Parquet)
    subject_ids: np.ndarray
    codes: list
    summary: pd.DataFrame
    n_kept: int
    n_quarantined: int


_QUARANTINE_COLUMNS = (
    "subject_id",
    "time",
    "code",
    "numeric_value",
    "text_value",
    "table",
    "row",
    "reason",
    "subject_ref",
)


def _gate_buckets(spool: _Spool, subjects: pd.DataFrame, gate: QualityGate, say) -> _Gated:
    """Each bucket through the gate: kept events sorted by (subject, time, code), the quarantine, the counts."""
    known = subjects.dropna(subset=["subject_id"])
    kept_files, q_files, ids, codes, summaries = [], [], [], set(), []
    n_kept = n_q = 0
    for b, parts in enumerate(spool.parts):
        kept, quarantined = [], []
        for table in dict.fromkeys(t for t, _ in parts):
            raw = pa.concat_tables([pq.read_table(f) for t, f in parts if t == table]).to_pandas(
                types_mapper={pa.string(): pd.StringDtype()}.get
            )
            rows = raw.pop("_row").to_numpy()
            refs = raw.pop("subject_ref") if "subject_ref" in raw else None
            res = gate.apply(raw, table=table, subjects=known)
            kept.append(res.kept)
            q = res.quarantined.assign(row=rows[res.quarantined["row"].to_numpy(np.int64)])
            quarantined.append(q.assign(subject_ref=refs[res.quarantined["row"]].to_numpy()) if refs is not None else q)
            summaries.append(res.summary)
        if not parts:
            continue
        events = pd.concat(kept, ignore_index=True).sort_values(
            ["subject_id", "time", "code"], na_position="first", kind="stable"
        )
        n_kept += len(events)
        ids.append(events["subject_id"].unique())
        codes.update(events["code"].unique())
        kept_files.append(_write_part(spool.root / f"kept-{b}.parquet", _events_table(events)))
        q = pd.concat(quarantined, ignore_index=True)
        n_q += len(q)
        if len(q):
            q = q.reindex(columns=[c for c in _QUARANTINE_COLUMNS if c in q]).astype("string")
            q_files.append(
                _write_part(spool.root / f"quarantine-{b}.parquet", pa.Table.from_pandas(q, preserve_index=False))
            )
        say(f"gated subject bucket {b + 1}/{spool.n_buckets}")
    empty = [
        pd.DataFrame({"table": t, "reason": ["read", "kept"], "rows": [0, 0]})
        for t, n in spool.rows_per_table.items()
        if n == 0
    ]
    summary = (
        pd.concat(summaries + empty, ignore_index=True)
        if summaries or empty
        else pd.DataFrame({"table": pd.Series(dtype=str), "reason": pd.Series(dtype=str), "rows": pd.Series(dtype=int)})
    )
    tables = list(spool.rows_per_table)
    summary = (
        summary.groupby(["table", "reason"], sort=False, as_index=False)["rows"]
        .sum()
        .assign(
            _t=lambda d: d["table"].map({t: i for i, t in enumerate(tables)}),
            _r=lambda d: d["reason"].map({"read": 0, "kept": 1}).fillna(2),
        )
        .sort_values(["_t", "_r", "reason"], kind="stable")
        .drop(columns=["_t", "_r"])
        .reset_index(drop=True)
    )
    all_ids = np.concatenate(ids) if ids else np.empty(0, np.int64)
    return _Gated(kept_files, q_files, all_ids, sorted(codes), summary, n_kept, n_q)


def _write_part(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def _subject_frame(refs, birth, death, ids: _SubjectIds) -> pd.DataFrame:
    parse = lambda s: (  # noqa: E731
        pd.to_datetime(
            pd.Series(s, dtype=object) if s is not None else pd.Series([None] * len(refs)),
            errors="coerce",
            utc=True,
            format="mixed",
        )
        .dt.tz_localize(None)
        .to_numpy()
    )
    return pd.DataFrame({"subject_id": [ids.of(r) for r in refs], "birth": parse(birth), "death": parse(death)})


def _events_table(events: pd.DataFrame) -> pa.Table:
    return pa.table(
        {
            "subject_id": pa.array(events["subject_id"].to_numpy(np.int64)),
            "time": pa.array(events["time"].to_numpy("datetime64[us]"), pa.timestamp("us")),
            "code": pa.array(events["code"].astype(str).to_numpy(object), pa.string()),
            "numeric_value": pa.array(
                events["numeric_value"].to_numpy(np.float32),
                pa.float32(),
                mask=events["numeric_value"].isna().to_numpy(),
            ),
            "text_value": pa.array(
                events["text_value"].astype(object).where(events["text_value"].notna(), None), pa.large_string()
            ),
        }
    )


def _write(out, gated: _Gated, report, displays, seed, split_fractions, overwrite, etl):
    from .._version import __version__
    from ..data import write_meds

    ids = np.sort(gated.subject_ids)
    rng = np.random.default_rng(seed)
    names = np.array(["train", "tuning", "held_out"])
    splits = pd.DataFrame(
        {
            "subject_id": ids,
            "split": names[np.searchsorted(np.cumsum(split_fractions)[:-1], rng.random(ids.size), side="right")],
        }
    )
    code_table = pd.DataFrame(
        {
            "code": gated.codes,
            "description": [displays.get(c) for c in gated.codes],
            "parent_codes": [[] for _ in gated.codes],
        }
    )

    def quarantine(path):  # the bucket parts streamed into one file (a source has subject_ref in all or none)
        files = gated.quarantine_files
        empty = pd.DataFrame({c: pd.Series(dtype="string") for c in _QUARANTINE_COLUMNS[:-1]})
        schema = pq.read_schema(files[0]) if files else pa.Schema.from_pandas(empty, preserve_index=False)
        with pq.ParquetWriter(path, schema) as w:
            for f in files:
                w.write_table(pq.read_table(f).replace_schema_metadata(schema.metadata))

    extra = {
        QUARANTINE_FILE: quarantine,
        SUMMARY_FILE: lambda p: p.write_text(json.dumps(report.to_dict(), indent=2, default=int)),
    }
    write_meds(
        out,
        events=(pq.read_table(f) for f in gated.kept_files),
        subject_splits=splits,
        codes=code_table,
        dataset_name=Path(out).name,
        etl_name=etl,
        etl_version=__version__,
        overwrite=overwrite,
        extra=extra,
    )


def parse_source_namespaces(pairs) -> dict[str, str]:
    """``["TABLE=VOCAB", ...]`` (the ``--source-namespace`` option) as a mapping."""
    bad = [p for p in pairs if p.count("=") != 1]
    if bad:
        raise ConfigError(f"--source-namespace must be TABLE=VOCAB; got {bad[0]!r}")
    return dict(p.split("=") for p in pairs)
