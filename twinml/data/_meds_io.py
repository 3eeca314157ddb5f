"""Read and write MEDS datasets on disk, with validation.

Layout (the MEDS standard): ``data/<split>/<shard>.parquet``, ``metadata/codes.parquet``,
``metadata/dataset.json``, ``metadata/subject_splits.parquet``. Writes go to a temporary
directory beside the target that is renamed into place at the end, so a crash never leaves
a half-written dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import meds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._io import atomic_directory, refuse_existing
from .._validation import MEDSValidationError, input_error

__all__ = ["write_meds", "read_meds", "read_subject_splits", "read_code_metadata", "validate_events_table"]


def write_meds(
    out_dir,
    *,
    events: pa.Table | Iterable[pa.Table],
    subject_splits: pd.DataFrame,
    codes: pd.DataFrame,
    dataset_name: str,
    etl_name: str,
    etl_version: str,
    shard_size: int = 50_000,
    overwrite: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write a MEDS dataset directory atomically.

    Parameters
    ----------
    events : pyarrow.Table or iterable of pyarrow.Table
        Events sorted by ``subject_id`` then ``time`` (static rows first). An iterable gives the
        events in pieces (written one at a time, so they need not fit in memory together); each
        piece holds all the events of its subjects.
    subject_splits : DataFrame
        ``subject_id`` and ``split`` for every subject in ``events``.
    codes : DataFrame
        ``code``, ``description``, ``parent_codes`` for every code in ``events``.
    extra : dict, optional
        ``{relative path: callable(path)}`` for files written beside the MEDS layout (e.g. ground truth),
        written inside the same atomic rename.
    """
    out = Path(out_dir)
    refuse_existing(out, overwrite=overwrite)  # before the events are validated
    pieces = [("", events)] if isinstance(events, pa.Table) else ((f"{i}-", e) for i, e in enumerate(events))
    with atomic_directory(out, overwrite=overwrite) as tmp:  # a crash or Ctrl-C leaves nothing behind
        for prefix, piece in pieces:
            _write_shards(tmp, validate_events_table(piece, name="events"), subject_splits, shard_size, prefix)
        (tmp / "metadata").mkdir(exist_ok=True)
        code_tbl = pa.Table.from_pandas(codes[["code", "description", "parent_codes"]], preserve_index=False)
        pq.write_table(meds.CodeMetadataSchema.align(code_tbl), tmp / meds.code_metadata_filepath)
        split_tbl = pa.Table.from_pandas(subject_splits[["subject_id", "split"]], preserve_index=False)
        pq.write_table(meds.SubjectSplitSchema.align(split_tbl), tmp / meds.subject_splits_filepath)
        meta = {
            "dataset_name": dataset_name,
            "dataset_version": "1",
            "etl_name": etl_name,
            "etl_version": etl_version,
            "meds_version": meds.__version__,
        }
        meds.DatasetMetadataSchema.validate(meta)
        (tmp / meds.dataset_metadata_filepath).write_text(json.dumps(meta, indent=2))
        for rel, writer in (extra or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            writer(tmp / rel)
    return out


def _write_shards(
    root: Path, events: pa.Table, subject_splits: pd.DataFrame, shard_size: int, prefix: str = ""
) -> None:
    sid = events.column("subject_id").to_numpy()
    split_of = pd.Series(subject_splits["split"].to_numpy(), index=subject_splits["subject_id"].to_numpy())
    names = sorted(split_of.unique())
    rank = pd.Index(names).get_indexer(split_of.reindex(sid).to_numpy())
    if (rank < 0).any():
        bad = sid[rank < 0][0]
        raise input_error(
            table="subject_splits",
            column="subject_id",
            rule="must list every subject in the events",
            example=int(bad),
            cls=MEDSValidationError,
        )
    order = np.argsort(rank, kind="stable")
    events, sid, rank = events.take(order), sid[order], rank[order]
    for r, split in enumerate(names):
        lo, hi = np.searchsorted(rank, [r, r + 1])
        if lo == hi:
            continue
        part_sid = sid[lo:hi]
        new_subject = np.r_[True, part_sid[1:] != part_sid[:-1]]
        shard = (np.cumsum(new_subject) - 1) // shard_size
        (root / meds.data_subdirectory / split).mkdir(parents=True, exist_ok=True)
        bounds = np.searchsorted(shard, np.arange(shard[-1] + 2))
        for i in range(shard[-1] + 1):
            piece = events.slice(lo + bounds[i], bounds[i + 1] - bounds[i])
            pq.write_table(meds.DataSchema.align(piece), root / meds.data_subdirectory / split / f"{prefix}{i}.parquet")


def read_subject_splits(root) -> pd.DataFrame:
    path = Path(root) / meds.subject_splits_filepath
    if not path.exists():
        raise MEDSValidationError(f"{path}: file not found; a MEDS dataset needs metadata/subject_splits.parquet.")
    return pq.read_table(path).to_pandas()


def read_code_metadata(root) -> pd.DataFrame:
    path = Path(root) / meds.code_metadata_filepath
    return pq.read_table(path).to_pandas() if path.exists() else pd.DataFrame(columns=["code", "description"])


def read_meds(root, *, splits=None, subjects=None) -> pd.DataFrame:
    """Read (and validate) the events of a MEDS dataset into one frame.

    ``subjects`` (ids) reads only those subjects' rows (a filter pushed into the Parquet reader, so
    one patient of a large panel is read in a moment); only the rows read are validated.

    Returns a DataFrame with ``subject_id`` (int64), ``time`` (datetime64[us], NaT for static facts),
    ``code`` (category) and ``numeric_value`` (float32), sorted by subject then time, and
    ``text_value`` (category; null where blank) when any row read has a text result (a coded answer
    such as a smoking status): the featurizers can read frequent ones as codes of their own.

    Raises
    ------
    MEDSValidationError
        Naming the file, the column, the rule and an example value.
    """
    root = Path(root)
    data = root / meds.data_subdirectory
    if not data.is_dir():
        raise MEDSValidationError(f"{root}: not a MEDS dataset (no {meds.data_subdirectory}/ directory).")
    files = sorted(data.rglob("*.parquet"))
    if splits is not None:
        files = [f for f in files if f.relative_to(data).parts[0] in set(splits)]
    if not files:
        raise MEDSValidationError(f"{data}: no parquet files" + (f" for splits {list(splits)}" if splits else "") + ".")
    wanted = None
    if subjects is not None:
        ids = [] if isinstance(subjects, (str, bytes, int)) else list(subjects)
        if not ids or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise MEDSValidationError(
                f"read_meds: 'subjects' must be a non-empty list of integer subject ids; got {subjects!r}."
            )
        wanted = [("subject_id", "in", [int(i) for i in ids])]  # built once: a generator would be spent on shard 1
    tables: list[pa.Table] = []
    seen: dict[str, np.ndarray] = {}
    for f in files:
        name = str(f.relative_to(root))
        tbl = validate_events_table(pq.read_table(f, read_dictionary=["code"], filters=wanted), name=name)
        ids = pc.unique(tbl.column("subject_id")).to_numpy()
        _check_disjoint(ids, name, seen)
        tables.append(
            tbl.select(["subject_id", "time", "code", "numeric_value"]).append_column("text_value", _text(tbl))
        )
    table = pa.concat_tables(tables).unify_dictionaries().combine_chunks()
    if table.column("text_value").null_count == table.num_rows:
        table = table.drop_columns(["text_value"])
    df = table.to_pandas()
    for col in ("code", "text_value"):
        if col in df and not isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype("category")
    return df


def _text(tbl: pa.Table) -> pa.ChunkedArray:
    """The table's ``text_value`` as dictionary-encoded strings (all null where it has none); blank is null."""
    if "text_value" not in tbl.column_names:
        return pa.chunked_array([pa.nulls(tbl.num_rows, pa.string()).dictionary_encode()])
    col = tbl.column("text_value")
    col = col.cast(pa.string())  # string, large_string, dictionary or all-null: validate_events_table checked
    col = pc.if_else(pc.equal(pc.utf8_trim_whitespace(col), ""), pa.scalar(None, pa.string()), col)
    return pc.dictionary_encode(col)


def _check_disjoint(ids, name, seen):
    for other, other_ids in seen.items():
        both = np.intersect1d(ids, other_ids, assume_unique=True)
        if both.size:
            raise input_error(
                table=name,
                column="subject_id",
                rule=f"each subject must be in one file only; also in {other}",
                example=int(both[0]),
                cls=MEDSValidationError,
            )
    seen[name] = ids


def validate_events_table(tbl: pa.Table, *, name: str) -> pa.Table:
    """Check one table of MEDS events and return it cast to the MEDS types."""

    def fail(column, rule, example=None, hint=None):
        return input_error(table=name, column=column, rule=rule, example=example, hint=hint, cls=MEDSValidationError)

    missing = [c for c in ("subject_id", "time", "code") if c not in tbl.column_names]
    if missing:
        raise fail(
            missing[0], "is required by the MEDS data schema but missing", hint=f"Columns present: {tbl.column_names}"
        )
    cols = {"subject_id": tbl.column("subject_id"), "time": tbl.column("time"), "code": tbl.column("code")}
    t = cols["subject_id"].type
    if not pa.types.is_integer(t):
        raise fail("subject_id", f"must be int64; got type {t}", _first_valid(cols["subject_id"]))
    cols["subject_id"] = cols["subject_id"].cast(pa.int64())
    t = cols["time"].type
    if not pa.types.is_timestamp(t):
        raise fail("time", f"must be timestamp[us]; got type {t}", _first_valid(cols["time"]))
    cols["time"] = cols["time"].cast(pa.timestamp("us"))
    t = cols["code"].type
    value_type = t.value_type if pa.types.is_dictionary(t) else t
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
        raise fail("code", f"must be string; got type {t}", _first_valid(cols["code"]))
    if "numeric_value" in tbl.column_names:
        cols["numeric_value"] = _numeric(tbl.column("numeric_value"), fail)
    else:
        cols["numeric_value"] = pa.nulls(tbl.num_rows, pa.float32())
    for c in ("subject_id", "code"):
        if cols[c].null_count:
            row = pc.index(pc.is_null(cols[c]), True).as_py()
            raise fail(c, "must not be null", f"row {row}, subject_id={tbl.column('subject_id')[row].as_py()}")
    if "text_value" in tbl.column_names:
        t = tbl.column("text_value").type
        value_type = t.value_type if pa.types.is_dictionary(t) else t
        if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type) or pa.types.is_null(t)):
            raise fail("text_value", f"must be string; got type {t}", _first_valid(tbl.column("text_value")))
    for c in tbl.column_names:
        if c not in cols:
            cols[c] = tbl.column(c)
    out = pa.table(cols)
    _check_sorted(out, fail)
    return out


def _numeric(col, fail):
    t = col.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t):
        return col.cast(pa.float32())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = pd.Series(col.to_numpy(zero_copy_only=False), dtype=object)
        blank = text.isna() | (text.astype(str).str.strip() == "")
        bad = pd.to_numeric(text.where(~blank), errors="coerce").isna() & ~blank
        example = repr(text[bad].iloc[0]) if bad.any() else None
        raise fail("numeric_value", f"must be float32; got type {t}", example, hint="Put text results in 'text_value'.")
    raise fail("numeric_value", f"must be float32; got type {t}", _first_valid(col))


def _first_valid(col):
    valid = col.drop_null()
    return valid[0].as_py() if len(valid) else None


def _check_sorted(tbl, fail):
    sid = tbl.column("subject_id").to_numpy()
    if sid.size == 0:
        return
    change = np.flatnonzero(sid[1:] != sid[:-1]) + 1
    starts = np.r_[0, change]
    if np.unique(sid[starts]).size != starts.size:
        _, first = np.unique(sid[starts], return_index=True)
        dup = sid[starts][np.setdiff1d(np.arange(starts.size), first)[0]]
        raise fail(
            "subject_id",
            "must keep each subject's rows together (sorted by subject)",
            int(dup),
            hint="Sort by subject_id, then time.",
        )
    time = tbl.column("time")
    t = time.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    same = sid[1:] == sid[:-1]
    back = np.flatnonzero(same & (t[1:] < t[:-1]))
    if back.size:
        i = back[0]
        raise fail(
            "time",
            "must not decrease within a subject (static rows with null time first)",
            f"subject_id={int(sid[i])}: {time[i].as_py()} then {time[i + 1].as_py()}",
            hint="Sort by subject_id, then time.",
        )
