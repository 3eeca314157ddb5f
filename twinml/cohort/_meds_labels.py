"""Task rows from MEDS label files (ACES output, the MEDS ``LabelSchema``) instead of computed labels.

A label file (or a directory of parquet files) holds ``subject_id`` (int64), ``prediction_time``
(timestamp) and ``boolean_value`` (bool), one row per prediction; one file per outcome. The
producer of the files (ACES, a peer's pipeline) decided eligibility, exclusions and censoring:
twinml takes the rows as they are and adds nothing. The files of several outcomes are joined on
(``subject_id``, ``prediction_time``); where an outcome's file has no row the label is unknown
(null), never a negative. Splits still come from the dataset (``task.split``).

Leakage guards: features see only events at or before each ``prediction_time`` (as always);
a prediction time before the subject's birth is refused, as is a subject the dataset lacks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._arrays import NAT, EventArrays, per_subject_reduce
from .._validation import ConfigError, input_error

__all__ = ["read_label_files"]

_KEY = ["subject_id", "prediction_time"]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(path.rglob("*.parquet"))
        if not found:
            raise input_error(table=str(path), column=None, rule="holds no parquet label files")
        return found
    if not path.exists():
        raise input_error(table=str(path), column=None, rule="label file not found")
    return [path]


def _read_one(path: Path) -> pd.DataFrame:
    """One outcome's label rows, checked against the MEDS label schema."""
    tables = []
    for f in _files(path):
        tbl = pq.read_table(f)
        name = str(f)
        missing = [c for c in ("subject_id", "prediction_time", "boolean_value") if c not in tbl.column_names]
        if missing:
            raise input_error(
                table=name,
                column=missing[0],
                rule="is required by the MEDS label schema but missing",
                hint=f"Columns present: {tbl.column_names}",
            )
        checks = {
            "subject_id": (pa.types.is_integer, "int64"),
            "prediction_time": (pa.types.is_timestamp, "timestamp[us]"),
            "boolean_value": (pa.types.is_boolean, "bool"),
        }
        for col, (ok, want) in checks.items():
            c = tbl.column(col)
            if not ok(c.type):
                valid = c.drop_null()
                raise input_error(
                    table=name,
                    column=col,
                    rule=f"must be {want}; got type {c.type}",
                    example=valid[0].as_py() if len(valid) else None,
                )
            if c.null_count:
                row = pc.index(pc.is_null(c), True).as_py()
                raise input_error(table=name, column=col, rule="must not be null", example=f"row {row}")
        tables.append(
            pd.DataFrame(
                {
                    "subject_id": tbl.column("subject_id").to_numpy().astype(np.int64),
                    "prediction_time": tbl.column("prediction_time")
                    .cast(pa.timestamp("us"))
                    .to_numpy()
                    .astype("datetime64[us]"),
                    "boolean_value": tbl.column("boolean_value").to_numpy(zero_copy_only=False),
                    "_file": name,
                }
            )
        )
    return pd.concat(tables, ignore_index=True)


def read_label_files(files: dict[str, str | Path], *, events: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """Join MEDS label files into twinml's label frame (without ``split``).

    Parameters
    ----------
    files : dict
        Outcome name -> a parquet file or a directory of them, in the MEDS label schema.
    events : DataFrame
        The dataset's MEDS events: every labelled subject must have events, and no prediction
        time may precede the subject's ``MEDS_BIRTH``.
    horizon_days : int
        Names the label columns ``{outcome}_{horizon_days}d`` (the window the files' producer used).

    Returns
    -------
    DataFrame
        ``subject_id``, ``prediction_time``, then one nullable boolean column per outcome, sorted by
        subject and time.

    Raises
    ------
    TwinmlInputError
        Naming the file, the column, the rule broken and an example: a column missing or of the
        wrong type, nulls, a subject not in the dataset, a repeated (subject_id, prediction_time),
        or a prediction time before the subject's birth.
    """
    ev = EventArrays(events)
    birth = per_subject_reduce(ev.subject, ev.time, ev.codes_matching(codes=["MEDS_BIRTH"]), ev.subjects.size, "min")
    merged: pd.DataFrame | None = None
    for outcome, path in files.items():
        rows = _read_one(Path(path))
        _check_rows(rows, ev.subjects, birth)
        rows = rows.rename(columns={"boolean_value": f"{outcome}_{horizon_days}d"}).drop(columns="_file")
        merged = rows if merged is None else merged.merge(rows, on=_KEY, how="outer")
    if merged is None:
        raise ConfigError("task.labels: give at least one outcome's label file.")
    merged = merged.sort_values(_KEY, kind="stable").reset_index(drop=True)
    for outcome in files:
        col = f"{outcome}_{horizon_days}d"
        merged[col] = merged[col].astype("boolean")
    return merged


def _check_rows(rows: pd.DataFrame, subjects: np.ndarray, birth: np.ndarray) -> None:
    rank = pd.Index(subjects).get_indexer(rows["subject_id"].to_numpy())
    if (rank < 0).any():
        i = int(np.flatnonzero(rank < 0)[0])
        raise input_error(
            table=rows["_file"].iloc[i],
            column="subject_id",
            rule="must name a subject of the dataset (one with events)",
            example=int(rows["subject_id"].iloc[i]),
        )
    dup = rows.duplicated(_KEY, keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise input_error(
            table=rows["_file"].iloc[i],
            column="prediction_time",
            rule="must be unique per subject_id (one label row per prediction)",
            example=f"subject_id={rows['subject_id'].iloc[i]}, prediction_time={rows['prediction_time'].iloc[i]}",
        )
    b = birth[rank]
    t = rows["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)
    early = (b != NAT) & (t < b)
    if early.any():
        i = int(np.flatnonzero(early)[0])
        raise input_error(
            table=rows["_file"].iloc[i],
            column="prediction_time",
            rule="must not be before the subject's birth (MEDS_BIRTH)",
            example=f"subject_id={rows['subject_id'].iloc[i]}, "
            f"prediction_time={rows['prediction_time'].iloc[i]}, "
            f"birth={pd.Timestamp(int(b[i]), unit='us')}",
        )
