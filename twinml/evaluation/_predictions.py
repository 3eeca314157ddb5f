"""Predictions in the MEDS ``PredictionSchema``, the files meds-evaluation (and MEDS-DEV) score.

One file per label column and split: ``subject_id`` (int64), ``prediction_time`` (timestamp[us]),
``boolean_value`` (the label), ``predicted_boolean_value`` (risk >= ``threshold``) and
``predicted_boolean_probability`` (the risk, float32 as the schema has it). Rows whose label is
unknown (censored, excluded) are left out, as in :func:`~twinml.cohort.to_meds_labels`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import atomic_directory

__all__ = ["meds_predictions", "write_meds_predictions", "PREDICTION_SCHEMA"]

PREDICTION_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("prediction_time", pa.timestamp("us")),
        ("boolean_value", pa.bool_()),
        ("predicted_boolean_value", pa.bool_()),
        ("predicted_boolean_probability", pa.float32()),
    ]
)


def meds_predictions(labels: pd.DataFrame, risks: pd.DataFrame, column: str, *, threshold: float = 0.5) -> pd.DataFrame:
    """One label column's known rows with their risks, in the MEDS prediction schema.

    ``labels`` and ``risks`` are aligned row by row (as ``predict_risk`` returns them for ``labels``).

    >>> labels = pd.DataFrame({"subject_id": [1, 2, 3], "prediction_time": pd.to_datetime(["2020-01-01"] * 3),
    ...                        "mi_365d": pd.array([True, None, False], dtype="boolean")})
    >>> risks = labels[["subject_id", "prediction_time"]].assign(mi_365d=[0.7, 0.2, 0.1])
    >>> meds_predictions(labels, risks, "mi_365d")[["subject_id", "boolean_value", "predicted_boolean_value"]]
       subject_id  boolean_value  predicted_boolean_value
    0           1           True                     True
    1           3          False                    False
    """
    if not (labels["subject_id"].to_numpy() == risks["subject_id"].to_numpy()).all():
        raise ValueError("meds_predictions: labels and risks must be aligned row by row (subject_id differs).")
    known = labels[column].notna().to_numpy()
    p = risks[column].to_numpy(np.float64)[known]
    return pd.DataFrame(
        {
            "subject_id": labels["subject_id"].to_numpy(np.int64)[known],
            "prediction_time": labels["prediction_time"].to_numpy("datetime64[us]")[known],
            "boolean_value": labels[column].to_numpy(bool, na_value=False)[known],
            "predicted_boolean_value": p >= threshold,
            "predicted_boolean_probability": p.astype(np.float32),
        }
    )


def write_meds_predictions(out, predictions: dict[str, dict[str, pd.DataFrame]], *, overwrite: bool = False) -> Path:
    """Write ``{split: {label: frame}}`` as ``out/{split}/{label}.parquet``, all at once (atomically)."""
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for split, frames in predictions.items():
            (tmp / split).mkdir()
            for label, frame in frames.items():
                table = pa.Table.from_pandas(frame, schema=PREDICTION_SCHEMA, preserve_index=False)
                pq.write_table(table, tmp / split / f"{label}.parquet")
    return out
